"""How fast tirun trains a word, beside the common approach and the floor.

`python -m experiments.bench` (`make bench`) runs it; `__main__` describes the method. The parts:

- `cases`: the settings every part shares, and one case of the grid (`Case`, `Plan`);
- `models`: the models as tirun loads them, and the training images;
- `steps`: the pieces of a training step the variants share (timing, backward, optimizer);
- `variants`: the common approach (the diffusers example's loop) and the floor;
- `trainer`: tirun's own trainer and sampler, driven as `python -m tirun` drives them;
- `workers`: one variant per process, and the coordinator's handle on it;
- `report`: the results, the targets, and the Markdown report;
- `__main__`: the coordinator, the grid of cases, and the command line.
"""
