"""ToyBench: the toy world's held-out concepts as a benchmark (`python -m tirun.toybench`).

Modules: ``score`` (a word's reconstruction, editability and attribute rates), ``stats``
(bootstrap intervals; how a paired difference's spread splits between concepts and seeds),
``report`` (tables, curves, the trade-off plot), ``common`` (the peer
recipe, `train.loop=common`), ``__main__`` (the command line). The `toybench` application
that scores a run's snapshots into a curve is `tirun/applications/toybench.py`.
"""
