"""Time to quality against what users run today: the training seconds each of tirun's recipes
needs to reach the final quality of a reference run (the diffusers example's loop at its
documented defaults, `v3-test-diffusers-defaults-1seed` in experiments/toybench_test.sh).

    python -m experiments.time_to_quality REFERENCE RUN [RUN ...] [--out FILE] [--second M]

Every run is read on the reference's words only (same concepts and seeds), at the steps its
curve was scored. A run reaches the reference when its mean reconstruction and its mean second
metric over those words are both at least the reference's final means; the speed-up is the
reference's whole training time over that time. The second metric is ToyBench's editability
(the edit and the concept) or the paper's adherence (`--second adherence`: the edit, concept or
not). The reference's own row
says when its curve first reached its final quality (it could have stopped there).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from tirun.files import atomic_write
from tirun.toybench.report import ScoredWord, interval, load_run, reach

RESULTS = Path(__file__).parent / "results" / "toybench" / "time-to-quality.md"
SECOND_METRICS = ("editability", "adherence")  # the first is the default, ToyBench's own


def _cell(value: float | None, digits: int) -> str:
    return "never" if value is None else f"{value:.{digits}f}"


def table(
    reference: list[ScoredWord], runs: dict[str, list[ScoredWord]], second: str = SECOND_METRICS[0]
) -> list[str]:
    """The Markdown table: the reference first, then each run on the reference's words."""
    pairs = {(w.concept, w.seed) for w in reference}
    metrics = ("reconstruction", second)
    targets = {m: statistics.fmean(w.final[m] for w in reference) for m in metrics}
    recon = {"reconstruction": targets["reconstruction"]}
    total = statistics.fmean(w.final["seconds"] for w in reference)
    lines = [
        f"| run | words | reconstruction (95% CI) | {second} (95% CI) | s / word | "
        "s to its reconstruction | step reaching both | s to reach both | "
        "speed-up over the reference |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, words in runs.items():
        matched = [w for w in words if (w.concept, w.seed) in pairs]
        if len(matched) < len(pairs):
            raise ValueError(f"{name} lacks {len(pairs) - len(matched)} of the reference's words")
        rec, other = interval(matched, "reconstruction"), interval(matched, second)
        seconds = reach(matched, targets, "seconds")
        lines.append(
            f"| {name} | {len(matched)} | {rec[0]:.3f} ({rec[1]:.3f}–{rec[2]:.3f}) | "
            f"{other[0]:.3f} ({other[1]:.3f}–{other[2]:.3f}) | "
            f"{statistics.fmean(w.final['seconds'] for w in matched):.1f} | "
            f"{_cell(reach(matched, recon, 'seconds'), 1)} | "
            f"{_cell(reach(matched, targets, 'step'), 0)} | {_cell(seconds, 1)} | "
            f"{'–' if not seconds else f'{total / seconds:.1f}×'} |"
        )
    lines += [
        "",
        f"The reference's final means: reconstruction {targets['reconstruction']:.3f}, "
        f"{second} {targets[second]:.3f}, after {total:.1f} s of training per word. "
        "A run reaches them at the first scored step where both of its means are at least "
        "these (its reconstruction alone: the column before); its seconds are the training seconds "
        "to that step (scoring excluded).",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reference", type=Path, help="the reference run's folder")
    parser.add_argument("runs", type=Path, nargs="+", help="tirun's runs' folders")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--second",
        choices=SECOND_METRICS,
        default=SECOND_METRICS[0],
        help="the metric reached beside reconstruction (adherence: the paper's editability)",
    )
    args = parser.parse_args()
    reference = load_run(args.reference)
    runs = {args.reference.name: reference}
    runs |= {folder.name: load_run(folder) for folder in args.runs}
    text = "\n".join(["# Time to quality", "", *table(reference, runs, args.second)]) + "\n"
    atomic_write(args.out, lambda tmp: tmp.write_text(text))
    print(text, end="")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
