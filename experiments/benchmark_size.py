"""How many concepts and seeds would ToyBench need to tell two recipes apart to ±TARGET?

    python -m experiments.benchmark_size REFERENCE RUN [--target 0.08] [--out FILE]

Reads the two runs' final words (paired by concept and seed, as the report pairs them), splits
the paired difference's spread into the concepts' share and the seeds' share
(`tirun.toybench.stats.paired_spread`), and projects the 95% interval's half-width for other
numbers of concepts and seeds by the normal approximation. The bootstrap half-width the report
prints at the measured size stands beside the projection at that size, so the approximation can
be read against it. More seeds shrink only the seeds' share: when the concepts' share dominates,
only more concepts narrow the interval.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tirun.files import atomic_write
from tirun.toybench.report import load_run, paired, paired_finals
from tirun.toybench.stats import (
    bootstrap_paired_difference,
    concepts_needed,
    paired_spread,
    projected_half_width,
)

RESULTS = Path(__file__).parent / "results" / "toybench" / "benchmark-size.md"
METRICS = ("reconstruction", "editability")
CONCEPTS = (17, 24, 32, 48)
SEEDS = (3, 5, 10)


def section(name: str, pairs: dict[str, list[tuple[float, float]]], target: float) -> list[str]:
    between, within = paired_spread(pairs)
    measured_concepts = len(pairs)
    measured_seeds = round(sum(len(p) for p in pairs.values()) / measured_concepts)
    mean, low, high = bootstrap_paired_difference(pairs)
    projected = projected_half_width(between, within, measured_concepts, measured_seeds)
    lines = [
        f"### {name}",
        "",
        f"Measured: {measured_concepts} concepts × {measured_seeds} seeds, paired difference "
        f"{mean:+.3f} ({low:+.3f} to {high:+.3f}), bootstrap half-width {(high - low) / 2:.3f}; "
        f"the normal approximation at that size {projected:.3f}. Spread of the difference: "
        f"concepts {between:.4f}, seeds {within:.4f} (variances).",
        "",
        "| concepts | " + " | ".join(f"{s} seeds" for s in SEEDS) + " | ∞ seeds |",
        "|---:|" + "---:|" * (len(SEEDS) + 1),
    ]
    for n in CONCEPTS:
        cells = [f"{projected_half_width(between, within, n, s):.3f}" for s in SEEDS]
        cells.append(f"{projected_half_width(between, 0.0, n, 1):.3f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    needed = {s: concepts_needed(between, within, s, target) for s in SEEDS}
    lines += [
        "",
        f"Concepts for a half-width ≤ {target}: "
        + ", ".join(f"{needed[s]} at {s} seeds" for s in SEEDS)
        + ".",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--target", type=float, default=0.08)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        pairs = paired(load_run(args.reference), load_run(args.run))
        if not pairs:
            raise ValueError("the two runs share no (concept, seed) word")
        sections = [section(m, paired_finals(pairs, m), args.target) for m in METRICS]
    except ValueError as error:
        raise SystemExit(f"benchmark_size: error: {error}") from None
    lines = [
        f"# ToyBench's size: `{args.run.name}` against `{args.reference.name}`",
        "",
        f"`python -m experiments.benchmark_size {args.reference} {args.run} "
        f"--target {args.target}`. Projected 95% half-widths of the paired difference "
        "(normal approximation; one-way random effects: concepts, then seeds within a concept).",
        "",
    ]
    for lines_of_metric in sections:
        lines += lines_of_metric
    text = "\n".join(lines)
    atomic_write(args.out, lambda tmp: tmp.write_text(text))
    print(text)


if __name__ == "__main__":
    main()
