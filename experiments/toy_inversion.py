"""Textual Inversion on the toy world, scored against ground truth: the figures of
experiments/results/toy_inversion.md.

    python -m experiments.toy_inversion [--out outputs/toy_inversion] [--threads 2]

1. `python -m tirun +exp=object` and `python -m tirun +exp=style`, as a user types them (their
   wall time is the "≤ 10 minutes on 2 cores" figure), one after the other; then the research
   figure, the never-named diamond learned from "square" (no bar).
2. The saved words, scored on 64 samples each (same seeds for the initializer word):
   - reconstruction: "a photo of a S*" shows the purple star (shape and colour) — bar ≥ 80%;
   - editability: "a photo of a S* on <background>", 4 backgrounds × 16, shows the star *and*
     the background — bar ≥ 70%;
   - style: "a painting of a <shape> in the style of S*", 4 shapes × 16, shows the style (purple
     mosaic) *and* the named shape — bar ≥ 70%. The sentence is the paper's style-transfer
     form and the toy captions' grammar: the toy text encoder knows no other way to put a
     subject in a style (see inversion_probes.md for "a <shape> in the style of S*").
Writes experiments/results/toy_inversion.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from experiments.applications import model_note, pct, saved_word, start

RESULTS = Path(__file__).parent / "results" / "toy_inversion.md"
SHAPES = ("circle", "triangle", "ring", "cross")  # drawn in purple in pretraining
BACKGROUNDS = ("grass", "sand", "white", "bricks")


def hydra_list(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def scoring_commands(out: Path) -> dict[str, tuple[str, list[str], float]]:
    """name → (application, overrides, bar) for the 64-sample scores of the saved words."""
    obj, style = saved_word(out / "object"), saved_word(out / "style")
    backgrounds = [
        f"{{prompt:'a photo of a {{}} on {b}',adds:{{background:{b}}}}}" for b in BACKGROUNDS
    ]
    subjects = [f"{{subject:{s},adds:{{shape:{s}}}}}" for s in SHAPES]
    return {
        "reconstruction": (
            "variation",
            ["+exp=variation", f"embeddings=[{obj}]", "application.prompts=['a photo of a {}']",
             "application.sampling.samples=64"],
            0.8,
        ),
        "editability": (
            "synthesis",
            ["+exp=synthesis", f"embeddings=[{obj}]", f"application.prompts={hydra_list(backgrounds)}",
             "application.sampling.samples=16"],
            0.7,
        ),
        "style_transfer": (  # not "style": that folder holds the style word being scored
            "style",
            ["+exp=style_transfer", f"embeddings=[{style}]",
             f"application.subjects={hydra_list(subjects)}", "application.sampling.samples=16"],
            0.7,
        ),
    }  # fmt: skip


def run(name: str, overrides: list[str], out: Path, threads: int) -> tuple[dict, float, str]:
    process, t0, command = start(name, overrides, out, threads)
    if process.wait() != 0:
        raise SystemExit(f"{name} failed; see {out / name / 'log.txt'}")
    seconds = time.perf_counter() - t0
    metrics = json.loads((out / name / "metrics.json").read_text())
    print(f"{name}: {seconds:.0f} s", flush=True)
    return metrics, seconds, command


# The two presets, and the research figure: the diamond, drawn in pretraining but never named
PRESETS = {
    "object": ["+exp=object"],
    "style": ["+exp=style"],
    "unnamed": ["+exp=object", "dataset=toy_unnamed", "word.initializer=square"],
}


def report(trained: dict, scored: dict, threads: int) -> str:
    lines = [
        "# Textual Inversion on the toy world",
        "",
        f"Written by `python -m experiments.toy_inversion --threads {threads}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). The oracle reads every "
        "attribute off every sample; a sample matches when all the concept's attributes and "
        "all the sentence adds are right. Baseline: the same sentences and seeds with the "
        "initializer word.",
        "",
        f"Model: {model_note()}",
        "",
        "## The preset commands",
        "",
        "| command | wall time (≤ 600 s) | final loss | `oracle.concept_match` | "
        "`oracle.initializer_concept_match` |",
        "|---|---:|---:|---:|---:|",
    ]
    for metrics, seconds, command in trained.values():
        oracle = metrics.get("oracle", {})
        lines.append(
            f"| `{command}` | {seconds:.0f} s {'✓' if seconds <= 600 else '✗'} "
            f"| {metrics.get('final_loss', float('nan')):.4f} "
            f"| {pct(oracle.get('concept_match'))} | {pct(oracle.get('initializer_concept_match'))} |"
        )
    lines += [
        "",
        "The third command is the research figure (no bar): the diamond, drawn in pretraining "
        "but never named in a caption, learned from another shape's word.",
        "",
        "## Scores of the saved words (64 samples each)",
        "",
        "| figure | learned word | initializer | bar | per prompt (learned) | each attribute (learned) |",
        "|---|---:|---:|---|---|---|",
    ]
    for name, (app, bar, (metrics, _, _)) in scored.items():
        m = metrics["applications"][app]
        word = m["concept_match"]
        per_prompt = "; ".join(
            f"{k.replace('{}', 'S*')}: {pct(v)}" for k, v in m["per_prompt"].items()
        )
        attributes = ", ".join(f"{k} {pct(v)}" for k, v in m["attribute_match"].items())
        lines.append(
            f"| {name} | {pct(word)} | {pct(m['baseline_concept_match'])} "
            f"| ≥ {bar:.0%} {'met' if word >= bar else 'NOT met'} | {per_prompt} | {attributes} |"
        )
    lines += ["", "## Commands", ""]
    for name, (_, _, (_, seconds, command)) in scored.items():
        lines.append(f"- {name} ({seconds:.0f} s): `{command}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/toy_inversion"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads per command")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", help="extra overrides for the training commands")
    args = parser.parse_args()
    out = args.out.resolve()
    trained = {
        name: run(name, [*preset, *args.overrides], out, args.threads)
        for name, preset in PRESETS.items()
    }
    scored = {
        name: (app, bar, run(name, overrides, out, args.threads))
        for name, (app, overrides, bar) in scoring_commands(out).items()
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(report(trained, scored, args.threads))
    print(args.results.read_text())


if __name__ == "__main__":
    main()
