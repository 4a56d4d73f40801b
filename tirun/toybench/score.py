"""ToyBench's scores of one word on its toy concept, and of a run's words along its training.

A word is drawn through diffusers' own loader (`sampling.pipeline_with_words`) on fixed seeds
and the oracle reads every sample: **reconstruction** is the share of samples of the neutral
prompts that show the whole concept; **editability** the share of samples of the other prompts
that show the concept *and* what the prompt adds (a background or a style for objects, a shape
for styles); the per-attribute rates say which part of the concept a word got.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tirun import sampling
from tirun.applications.context import Context, Sampling
from tirun.metrics import oracle as oracle_metrics
from tirun.models import Components
from tirun.toyworld.concepts import Concept, EvalPrompt
from tirun.toyworld.oracle import Oracle


def _sample_set(
    pipe, word: str, prompts: tuple[EvalPrompt, ...], samples: int, settings: Sampling, res: int
) -> tuple[list[list], list[dict[str, str]]]:
    per_prompt = math.ceil(samples / len(prompts))
    rows = sampling.sample(
        pipe,
        [p.format(word) for p, _ in prompts],
        per_prompt,
        settings.steps,
        settings.guidance,
        settings.seed,
        res,
        settings.batch_size,
    )
    return rows, [adds for _, adds in prompts]


def _hits(oracle: Oracle, rows: list[list], expected: list[dict[str, str]]) -> list[int]:
    """1/0 per sample: all of its expected attributes read right."""
    hits = []
    for row, attributes in zip(rows, expected, strict=True):
        predicted = oracle.predict(row)
        hits += [
            int(all(predicted[k][i] == v for k, v in attributes.items())) for i in range(len(row))
        ]
    return hits


def score_word(
    components: Components,
    oracle: Oracle,
    concept: Concept,
    settings: Sampling,
    source=None,
    samples_per_set: int = 64,
    tokenizers=None,
) -> dict:
    """Reconstruction, editability and per-attribute rates of one word on ``concept``.

    Args:
        components: the toy model (a trained word's wrappers may be on it).
        oracle: the attribute classifier.
        concept: the concept the word stands for.
        settings: sampling (steps, guidance, seed, batch size).
        source: the word's file (any format tirun reads); None scores the initializer word.
        samples_per_set: samples per prompt set, split evenly over its prompts.
        tokenizers: the tokenizers before training added the word, when it was.
    """
    sources = [source] if source is not None else []
    with sampling.pipeline_with_words(
        components, sources, settings.scheduler, tokenizers=tokenizers
    ) as (pipe, tokens):
        word = tokens[0] if tokens else concept.initializer
        res = components.resolution
        rec_rows, rec_adds = _sample_set(
            pipe, word, concept.reconstruction, samples_per_set, settings, res
        )
        edit_rows, edit_adds = _sample_set(
            pipe, word, concept.editability, samples_per_set, settings, res
        )
    rec_expected = [{**concept.attributes, **a} for a in rec_adds]
    edit_expected = [{**concept.attributes, **a} for a in edit_adds]
    reconstruction = _hits(oracle, rec_rows, rec_expected)
    editability = _hits(oracle, edit_rows, edit_expected)
    return {
        "reconstruction": sum(reconstruction) / len(reconstruction),
        "editability": sum(editability) / len(editability),
        "attributes": oracle_metrics.attribute_rates(
            oracle, rec_rows + edit_rows, rec_expected + edit_expected
        ),
        "outcomes": {"reconstruction": reconstruction, "editability": editability},
        "rows": {"reconstruction": rec_rows, "editability": edit_rows},
    }


def run(ctx: Context, *, samples_per_set: int, every: int, sampling: dict) -> dict:
    """Score the initializer (step 0), the run's snapshots every ``every`` steps and its final
    word; the curve and the final scores go to `applications.toybench` in `metrics.json`.

    Args:
        ctx: the application's context (a toy concept's run).
        samples_per_set: samples per prompt set.
        every: which snapshots to score (steps that are multiples of it).
        sampling: `application.sampling`.
    """
    if ctx.concept is None:
        raise ValueError("toybench scores toy concepts: set dataset.concept (see --list)")
    if ctx.oracle is None:
        raise ValueError("toybench needs the oracle: leave application.score.oracle=auto")
    settings = Sampling(**sampling)
    metrics_file = ctx.run_dir / "metrics.json"
    trained = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    points = [{"step": 0, "seconds": 0.0, "file": None}]
    points += [s for s in trained.get("snapshots", []) if every and s["step"] % every == 0]
    final = {"step": trained.get("steps"), "seconds": trained.get("wall_time_s"), "file": None}
    final["file"] = str(ctx.sources[0])
    if points[-1]["step"] != final["step"]:
        points.append(final)
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
        )
        rows = scores.pop("rows")
        if point is points[-1]:
            labelled = [
                p.format("S*") for p, _ in ctx.concept.reconstruction + ctx.concept.editability
            ]
            ctx.save_grid(rows["reconstruction"] + rows["editability"], "final", labelled)
        outcomes = scores.pop("outcomes")
        curve.append({"step": point["step"], "seconds": point["seconds"], **scores})
    return {
        "concept": ctx.concept.name,
        "kind": ctx.concept.kind,
        "split": ctx.concept.split,
        "samples_per_set": samples_per_set,
        "curve": curve,
        "final": curve[-1],
        "initializer": curve[0],
        "outcomes": outcomes,
        "file": str(Path(points[-1]["file"])),
    }
