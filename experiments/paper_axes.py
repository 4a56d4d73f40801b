"""The paper's figure on v3, redrawn on the paper's axes: reconstruction against prompt adherence.

    python -m experiments.paper_axes [--check RUN ...]

The paper scores editability as the prompt with the placeholder left out: whether a sample
shows what the prompt adds, concept or not. ToyBench's runs of the figure (8 rows, 17 test
concepts, 3 seeds, `experiments/results/toybench/paper-figure/`) were scored before ToyBench read
that, but their table already holds it: in every v3 edit prompt the added attribute (a backdrop
or a technique for an object, a shape for a style) is one the concept does not define, so the
report's per-attribute rate of that attribute counts exactly the edit prompts' samples that show
it. Rebuilt from those rates (counts of ToyBench's 64-sample sets, as the report's bootstrap
reads them), the words are reported on both planes, and "human captions" from the text ceiling's
named edits (`python -m tirun.toybench.ceiling`, which now reads their adherence).

`--check RUN` compares the rebuilt adherence with words rescored from their files (or copies) (`python -m
tirun.toybench --words experiments/results/toybench/paper-figure/words/ROW split=test ...`):
they must agree exactly. Writes experiments/results/toybench/paper-figure-axes/.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from tirun.toybench.report import EDITABILITY_AXES, ScoredWord, load_run, write_report
from tirun.toyworld.concepts import CONCEPTS, Concept

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "experiments" / "results" / "toybench" / "paper-figure"
OUT = ROOT / "experiments" / "results" / "toybench" / "paper-figure-axes"
SAMPLES_PER_SET = 64  # ToyBench's, split evenly over a set's prompts


def set_size(prompts: int) -> int:
    """Samples a set of ``prompts`` prompts draws (`score._sample_set`: ceil(64 / n) each)."""
    return math.ceil(SAMPLES_PER_SET / prompts) * prompts


def outcomes(rate: float, samples: int) -> list[int]:
    """A rate over ``samples`` as its 0/1 outcomes (the bootstrap reads counts, not order)."""
    hits = round(rate * samples)
    if abs(hits / samples - rate) > 1e-4:  # the table rounds to 4 decimals
        raise ValueError(f"{rate} is not a count of {samples} samples")
    return [1] * hits + [0] * (samples - hits)


def adherence(concept: Concept, row: dict[str, str]) -> list[int]:
    """The edit prompts' samples that show what each adds, from the per-attribute rates."""
    edits = concept.editability
    per_prompt = math.ceil(SAMPLES_PER_SET / len(edits))
    added: dict[str, int] = {}
    for _, adds in edits:
        if len(adds) != 1 or next(iter(adds)) in concept.attributes:
            raise ValueError(f"{concept.name}: an edit adds {adds}; its rate mixes other prompts")
        key = next(iter(adds))
        added[key] = added.get(key, 0) + per_prompt
    return [o for key, n in added.items() for o in outcomes(float(row[f"attr.{key}"]), n)]


def rebuilt_words(table: Path, words: Path) -> dict[str, list[ScoredWord]]:
    """Each run's words from a report's `per_concept.csv`, adherence among their outcomes."""
    runs: dict[str, list[ScoredWord]] = {}
    with table.open() as handle:
        for row in csv.DictReader(handle):
            concept = CONCEPTS[row["concept"]]
            found = {
                "reconstruction": outcomes(
                    float(row["reconstruction"]), set_size(len(concept.reconstruction))
                ),
                "editability": outcomes(
                    float(row["editability"]), set_size(len(concept.editability))
                ),
                "adherence": adherence(concept, row),
                "leak": [],  # these runs' images share nothing the concept does not define
            }
            final = {
                "step": int(row["steps"]),
                "seconds": float(row["seconds"]),
                **{m: sum(v) / len(v) if v else None for m, v in found.items()},
                "attributes": {k[5:]: float(v) for k, v in row.items()
                               if k.startswith("attr.") and v},
            }  # fmt: skip
            seed = int(row["seed"])
            file = words / row["run"] / f"{concept.name}_seed{seed}.safetensors"
            runs.setdefault(row["run"], []).append(
                ScoredWord(
                    row["run"], concept.name, concept.kind, seed, [final], found, file, file.parent
                )
            )
    return runs


def check(runs: dict[str, list[ScoredWord]], rescored: list[Path]) -> list[str]:
    """One line per rescored word: its adherence rescored from the file and rebuilt (the rebuilt
    word found by the file's bytes, so a copy of it anywhere checks)."""
    rebuilt = {w.file.read_bytes(): w for ws in runs.values() for w in ws}
    lines = []
    for folder in rescored:
        for word in load_run(folder):
            mine = rebuilt[word.file.read_bytes()]
            ok = word.outcomes["adherence"].count(1) == mine.outcomes["adherence"].count(1)
            lines.append(
                f"{mine.run} {word.concept} seed {word.seed}: rescored "
                f"{word.final['adherence']:.4f}, rebuilt {mine.final['adherence']:.4f}"
                f"{'' if ok else '  MISMATCH'}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.paper_axes")
    parser.add_argument("--check", type=Path, nargs="*", default=[], help="rescored run folders")
    args = parser.parse_args(argv)
    runs = rebuilt_words(FIGURE / "per_concept.csv", FIGURE / "words")
    lines = check(runs, args.check)
    print("\n".join(lines))
    if any("MISMATCH" in line for line in lines):
        return 1
    text = write_report(OUT, runs, copy_words=False)
    print(text, end="")
    print(f"wrote {OUT} (planes: {', '.join(m for m, _ in EDITABILITY_AXES)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
