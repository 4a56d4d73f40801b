"""The paper's figure on toy model v4, row by row against the paper, on both planes.

    python -m experiments.paper_figure_v4        # after `bash experiments/v4_figure.sh`

Reads the eight v4-test rows of `experiments/toybench_test.sh` from `toybench_runs/` (the rows
whose seed 0 is done, each on the seeds every one of them has done), writes their ToyBench
report (as `python -m tirun.toybench --report` does, one vector the reference) and
`verdicts.md` into `experiments/results/toybench/v4-paper-figure/`.

A verdict reads each row's paired difference from one vector (same concepts and seeds, 95%
bootstrap interval over concepts, then seeds) against the direction the paper draws it in
(§5.1 and its figure of reconstruction against editability, `../shared/REFERENCE.md`):
**yes** when both intervals lie on the paper's side of zero, **half** when one does, **no**
otherwise. Per-image tokens the paper puts no better than one vector: yes when neither interval
lies above zero. The paper's editability is adherence (the prompt without the placeholder);
ToyBench's own (the edit *and* the concept) gets its verdict beside it. Human captions (the
concepts drawn from their attributes' names, the text ceiling) should be the most adherent
point and below the best word on reconstruction.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from tirun.toybench.report import (
    EDITABILITY_AXES,
    KINDS,
    ScoredWord,
    interval,
    load_run,
    paired,
    paired_finals,
    write_report,
)
from tirun.toybench.stats import bootstrap_paired_difference
from tirun.toyworld.concepts import split

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "toybench_runs"
OUT = ROOT / "experiments" / "results" / "toybench" / "v4-paper-figure"
REFERENCE = "one"
# row: (what it is, the paper's direction of (reconstruction, editability) against one vector;
# 0 for "no better")
ROWS = {
    "one": ("one vector, the paper recipe", None),
    "two": ("two vectors", (+1, -1)),
    "three": ("three vectors", (+1, -1)),
    "progressive": ("progressive (a vector more at steps 160 and 320)", (+1, -1)),
    "image-tokens": ("per-image tokens", (0, 0)),
    "l2": ("L2 pull towards the initializer, 1e-3", (-1, +1)),
    "lr1e-4": ("lr 1e-4", (-1, +1)),
    "lr2e-2": ("lr 2e-2", (+1, -1)),
}
WORDS = {+1: "more", -1: "less"}


def run_name(row: str) -> str:
    return f"v4-test-{row}-3seeds"


def row_of(name: str) -> str:
    return name.removeprefix("v4-test-").removesuffix("-3seeds")


def run_folder(row: str) -> Path:
    return RUNS / run_name(row)


def verdict(expected: tuple[int, int], intervals: list[tuple[float, float, float]]) -> str:
    """yes / half / no: how many of the two differences lie on the paper's side of zero (for
    "no better", how many do not lie above zero)."""
    if expected == (0, 0):
        held = sum(low <= 0 for _, low, _ in intervals)
    else:
        held = sum(
            (low > 0) if sign > 0 else (high < 0)
            for sign, (_, low, high) in zip(expected, intervals, strict=True)
        )
    return {2: "yes", 1: "half", 0: "no"}[held]


def expectation(expected: tuple[int, int]) -> str:
    if expected == (0, 0):
        return "no better than one vector"
    return f"{WORDS[expected[0]]} reconstruction, {WORDS[expected[1]]} editability"


def cell(value: tuple[float, float, float]) -> str:
    return f"{value[0]:+.3f} ({value[1]:+.3f} to {value[2]:+.3f})"


def verdict_lines(
    runs: dict[str, list[ScoredWord]], human: dict[str, dict[str, float]]
) -> list[str]:
    """The verdicts table, each row's counts on both planes, and the human captions' check."""
    reference = runs[run_name(REFERENCE)]
    rows, agree = [], {"adherence": 0, "editability": 0}
    for name, words in runs.items():
        row = row_of(name)
        expected = ROWS[row][1]
        if expected is None:
            continue
        pairs = paired(reference, words)
        deltas = {m: bootstrap_paired_difference(paired_finals(pairs, m))
                  for m in ("reconstruction", "adherence", "editability")}  # fmt: skip
        verdicts = {m: verdict(expected, [deltas["reconstruction"], deltas[m]]) for m in agree}
        for m, v in verdicts.items():
            agree[m] += v == "yes"
        rows.append(
            f"| {ROWS[row][0]} | {len(pairs)} | {cell(deltas['reconstruction'])} | "
            f"{cell(deltas['adherence'])} | {cell(deltas['editability'])} | "
            f"{expectation(expected)} | **{verdicts['adherence']}** | {verdicts['editability']} |"
        )
    concepts = sorted({w.concept for w in reference})
    seeds = sorted({w.seed for w in reference})
    return [
        "# The paper's figure on toy model v4: the verdicts",
        "",
        f"Test split, {len(concepts)} concepts, seeds {', '.join(map(str, seeds))} "
        "(`python -m experiments.paper_figure_v4`). Δ: paired with one vector, 95% bootstrap "
        "interval; a verdict counts an interval on the paper's side of zero (the module's "
        "docstring).",
        "",
        "| variant | pairs | Δ reconstruction | Δ adherence (the paper's editability) | "
        "Δ editability (ToyBench's) | the paper, against one vector | agree (paper's axes) | "
        "agree (ToyBench's axes) |",
        "|---|---:|---|---|---|---|---|---|",
        *rows,
        "",
        f"The paper's direction on **{agree['adherence']} of {len(rows)}** comparisons on the "
        f"paper's axes (reconstruction, adherence), {agree['editability']} of {len(rows)} on "
        "ToyBench's (reconstruction, editability).",
        "",
        *caption_lines(runs, human),
    ]  # fmt: skip


def scored_words(folder: Path) -> list[ScoredWord]:
    """The run's scored words so far: none while its first jobs still train."""
    try:
        return load_run(folder)
    except ValueError:
        return []


def caption_lines(
    runs: dict[str, list[ScoredWord]], human: dict[str, dict[str, float]]
) -> list[str]:
    """Human captions (the text ceiling: each concept drawn from its attributes' names, and its
    named edits) against the rows' means, on all concepts and by kind of concept: the paper puts
    them at the most adherent point, below the best word on reconstruction."""
    lines = []
    for kind, keep in (("all concepts", lambda w: True), *KINDS):
        kept = {name: [w for w in words if keep(w)] for name, words in runs.items()}
        concepts = sorted({w.concept for w in kept[run_name(REFERENCE)]})
        if not concepts:
            continue
        recon = {n: interval(ws, "reconstruction")[0] for n, ws in kept.items()}
        adherent = {n: interval(ws, "adherence")[0] for n, ws in kept.items()}
        best, most = max(recon, key=recon.get), max(adherent, key=adherent.get)
        whole = statistics.fmean(human["whole"][c] for c in concepts)
        adherence = statistics.fmean(human["adherence"][c] for c in concepts)
        lines.append(
            f"| {kind} | {len(concepts)} | {whole:.3f} | {ROWS[row_of(best)][0]} "
            f"{recon[best]:.3f} | {'yes' if whole < recon[best] else 'no'} | {adherence:.3f} | "
            f"{ROWS[row_of(most)][0]} {adherent[most]:.3f} | "
            f"{'yes' if adherence > adherent[most] else 'no'} |"
        )
    return [
        "Human captions (no training; the text ceiling's whole concept and its named edits) "
        "against the best row on each axis:",
        "",
        "| concepts | n | captions' reconstruction | best word's | captions below it? | "
        "captions' adherence | most adherent word's | captions above it? |",
        "|---|---:|---:|---|---|---:|---|---|",
        *lines,
    ]


def main() -> int:
    from tirun.models import PACKAGED_MODELS
    from tirun.toybench.ceiling import read_ceilings

    concepts = len(split("test"))
    found = {row: scored_words(run_folder(row)) for row in ROWS}
    whole = {row: {s for s in {w.seed for w in words}
                   if sum(w.seed == s for w in words) == concepts} for row, words in found.items()}  # fmt: skip
    rows = [row for row in ROWS if 0 in whole.get(row, ())]  # seed 0 of every concept done
    if REFERENCE not in rows:
        raise SystemExit(
            "paper_figure_v4: error: one vector's seed 0 is not done; run v4_figure.sh"
        )
    seeds = set.intersection(*(whole[row] for row in rows))  # every row compared on these
    runs = {run_name(row): [w for w in found[row] if w.seed in seeds] for row in rows}
    missing = [row for row in ROWS if row not in rows]
    print(write_report(OUT, runs), end="")
    model = PACKAGED_MODELS["toy"]
    human = {m: read_ceilings(model, m) for m in ("whole", "adherence")}
    lines = verdict_lines(runs, human)
    if missing:
        lines += ["", f"Not run yet, or seed 0 not finished: {', '.join(missing)}."]
    (OUT / "verdicts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {OUT} (planes: {', '.join(m for m, _ in EDITABILITY_AXES)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
