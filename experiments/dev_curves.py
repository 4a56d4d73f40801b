"""Does a recipe's reconstruction still rise late? Each dev word's reconstruction at steps 100,
200 and 400 from a ToyBench run scored along its training (``application.every=50``): the check
that sets a toy world's difficulty on dev before its figure runs (at least half of the dev
concepts still rising between steps 200 and 400, so a learning rate or a pull has room to act).

    python -m experiments.dev_curves toybench_runs/v5-dev-one-curve [--steps 100 200 400]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tirun.toybench.report import ScoredWord, load_run


def at_step(word: ScoredWord, step: int) -> float | None:
    """The word's reconstruction at ``step`` (None when it was not scored there)."""
    for point in word.curve:
        if point["step"] == step:
            return point["reconstruction"]
    return None


def curve_lines(words: list[ScoredWord], steps: list[int], rise: float = 0.0) -> list[str]:
    """A table of each word's reconstruction at ``steps`` and whether it rose by more than
    ``rise`` between the last two, with the count that did."""
    head = " | ".join(f"step {s}" for s in steps)
    lines = [f"| concept | seed | {head} | rises {steps[-2]}→{steps[-1]} |",
             "|---|---:|" + "---:|" * len(steps) + "---|"]  # fmt: skip
    rising = 0
    for word in words:
        values = [at_step(word, s) for s in steps]
        late = values[-2] is not None and values[-1] is not None and values[-1] - values[-2] > rise
        rising += late
        cells = " | ".join("–" if v is None else f"{v:.3f}" for v in values)
        lines.append(f"| {word.concept} | {word.seed} | {cells} | {'yes' if late else 'no'} |")
    lines += [
        "",
        f"Still rising between steps {steps[-2]} and {steps[-1]}: {rising} of {len(words)}.",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.dev_curves")
    parser.add_argument("run", type=Path, help="a ToyBench run folder")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400])
    args = parser.parse_args(argv)
    print("\n".join(curve_lines(load_run(args.run), args.steps)))


if __name__ == "__main__":
    main()
