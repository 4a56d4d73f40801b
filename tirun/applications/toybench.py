"""ToyBench's scores of a run's word along its training (`application=toybench`, what
`+toybench=default` jobs run): the initializer (step 0), the snapshots every `every` steps and
the final word, each scored by `tirun.toybench.score.score_word` into a curve."""

from __future__ import annotations

import json

from tirun.applications.context import Context
from tirun.sampling import Sampling
from tirun.toybench.score import score_word


def run(
    ctx: Context, *, samples_per_set: int, every: int, sampling: dict, initializer: bool = True
) -> dict:
    """Score the initializer (step 0), the run's snapshots every ``every`` steps and its final
    word; the curve and the final scores go to `applications.toybench` in `metrics.json`.

    Args:
        ctx: the application's context (a toy concept's run).
        samples_per_set: samples per prompt set.
        every: which snapshots to score (steps that are multiples of it).
        sampling: `application.sampling`.
        initializer: score the word the run started from at step 0; a figure that reads last
            words only (the paper's rows, whose step 0 is the same word in every row) skips it.
    """
    if ctx.concept is None:
        raise ValueError("toybench scores toy concepts: set dataset.concept (see --list)")
    if ctx.oracle is None:
        raise ValueError("toybench needs the oracle: leave application.score.oracle=auto")
    settings = Sampling(**sampling)
    metrics_file = ctx.run_dir / "metrics.json"
    trained = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    points = [{"step": 0, "seconds": 0.0, "file": None}] if initializer else []
    points += [s for s in trained.get("snapshots", []) if every and s["step"] % every == 0]
    final = {
        "step": trained.get("steps"),
        "seconds": trained.get("wall_time_s"),
        "file": str(ctx.sources[0]),
    }
    # The final point is the saved word, which `train.early_stop.keep=best` may take from an
    # earlier step than the last snapshot's.
    points = [p for p in points if p["step"] != final["step"]] + [final]
    kept = ((trained.get("early_stop") or {}).get("kept") or {}).get("step", final["step"])
    tokenizers = ctx.word.original_tokenizers if ctx.word is not None else None
    curve = []
    for point in points:
        scores = score_word(
            ctx.components,
            ctx.oracle,
            ctx.concept,
            settings,
            point["file"],
            samples_per_set,
            tokenizers,
            ctx.initializer,
        )
        rows = scores.pop("rows")
        if point is points[-1]:
            labelled = [
                p.format("S*") for p, _ in ctx.concept.reconstruction + ctx.concept.editability
            ]
            ctx.save_grid(rows["reconstruction"] + rows["editability"], "final", labelled)
        outcomes = scores.pop("outcomes")
        curve.append({"step": point["step"], "seconds": point["seconds"], **scores})
    # A kept earlier word leaves the run's last one off the curve: scored too, so "the best word
    # anywhere in the budget" is known (experiments/calibrate.py).
    last = next((s for s in trained.get("snapshots", []) if s["step"] == final["step"]), None)
    last_word = None
    if kept != final["step"] and last is not None:
        scores = score_word(ctx.components, ctx.oracle, ctx.concept, settings, last["file"],
                            samples_per_set, tokenizers)  # fmt: skip
        last_word = {"step": last["step"], "seconds": last["seconds"],
                     "reconstruction": scores["reconstruction"],
                     "editability": scores["editability"]}  # fmt: skip
    return {
        "concept": ctx.concept.name,
        "kind": ctx.concept.kind,
        "split": ctx.concept.split,
        "difficulty": ctx.concept.difficulty,
        "samples_per_set": samples_per_set,
        "curve": curve,
        "final": curve[-1],
        "initializer": curve[0] if curve[0]["step"] == 0 else None,
        "kept_step": kept,
        "last_word": last_word,
        "outcomes": outcomes,
        "file": points[-1]["file"],
    }
