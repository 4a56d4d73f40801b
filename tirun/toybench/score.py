"""ToyBench's scores of one word on its toy concept, and of a run's words along its training.

A word is drawn through diffusers' own loader (`loading.pipeline_with_words`) on fixed seeds
and the oracle reads every sample: **reconstruction** is the share of samples of the neutral
prompts that show the whole concept; **editability** the share of samples of the other prompts
that show the concept *and* what the prompt adds (a background or a style for objects, a shape
for styles); the per-attribute rates say which part of the concept a word got.
"""

from __future__ import annotations

import math

from tirun import loading, sampling
from tirun.applications.context import Sampling
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
    with loading.pipeline_with_words(
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
