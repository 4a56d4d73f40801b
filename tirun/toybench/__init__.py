"""ToyBench: the toy world's held-out concepts as a benchmark (`python -m tirun.toybench`).

Modules: ``score`` (a word's reconstruction, editability and attribute rates; the `toybench`
application that scores a run's snapshots into a curve), ``stats`` (bootstrap intervals),
``report`` (tables, curves, the trade-off plot), ``__main__`` (the command line).
"""
