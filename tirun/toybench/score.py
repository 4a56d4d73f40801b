"""ToyBench's scores of one word on its toy concept, and of a run's words along its training.

A word is drawn through diffusers' own loader (`loading.pipeline_with_words`) on fixed seeds
and the oracle reads every sample: **reconstruction** is the share of samples of the neutral
prompts that show the whole concept; **editability** the share of samples of the other prompts
that show the concept *and* what the prompt adds (a background or a style for objects, a shape
for styles); **adherence** the share of those samples that show what the prompt adds, concept
or not (the paper's editability, which scores the prompt with the word left out); **context
leak** the share of samples of the prompts that ask for another value of the concept's shared
context (its images' one backdrop, say) that still show the training images' value; the
per-attribute rates say which part of the concept a word got.
"""

from __future__ import annotations

import math

from tirun import loading, sampling
from tirun.metrics import oracle as oracle_metrics
from tirun.models import Components
from tirun.sampling import Sampling
from tirun.toyworld.concepts import Concept, EvalPrompt
from tirun.toyworld.oracle import Oracle


def scorer() -> tuple[Components, Oracle, Sampling]:
    """The toy model (frozen), the oracle and the sampler a `+toybench=default` job scores
    with: what a script needs to score words as ToyBench does."""
    from hydra.utils import instantiate

    from tirun.config import compose

    cfg = compose(["+toybench=default"])
    components = instantiate(cfg.model)
    components.freeze()
    return components, oracle_metrics.load(), Sampling(**cfg.application.sampling)


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


def hits(readings: list[dict[str, list[str]]], expected: list[dict[str, str]]) -> list[int]:
    """1/0 per sample: all of its row's ``expected`` attributes read right.

    Args:
        readings: the oracle's reading of each row (`Oracle.predict`).
        expected: what each row's samples should show.
    """
    out = []
    for predicted, attributes in zip(readings, expected, strict=True):
        count = len(next(iter(predicted.values())))
        out += [int(all(predicted[k][i] == v for k, v in attributes.items())) for i in range(count)]
    return out


def leaks(
    readings: list[dict[str, list[str]]], adds: list[dict[str, str]], context: dict[str, str]
) -> list[int]:
    """1/0 per sample of the rows whose prompt asks for another value of a ``context``
    attribute: 1 when the sample still shows the context's value of any such attribute. Rows
    that ask for no other context add nothing, so a concept without a shared context has none.

    Args:
        readings: the oracle's reading of each row (`Oracle.predict`).
        adds: what each row's prompt adds (`EvalPrompt`'s dict).
        context: the attributes every training image shares that the concept does not define.
    """
    out = []
    for predicted, asked in zip(readings, adds, strict=True):
        moved = [k for k, v in asked.items() if k in context and context[k] != v]
        if not moved:
            continue
        count = len(next(iter(predicted.values())))
        out += [int(any(predicted[k][i] == context[k] for k in moved)) for i in range(count)]
    return out


def score_word(
    components: Components,
    oracle: Oracle,
    concept: Concept,
    settings: Sampling,
    source=None,
    samples_per_set: int = 64,
    tokenizers=None,
    initializer: str | None = None,
) -> dict:
    """Reconstruction, editability, adherence, context leak (None for a concept without a
    shared context) and per-attribute rates of one word on ``concept``.

    Args:
        components: the toy model (a trained word's wrappers may be on it).
        oracle: the attribute classifier.
        concept: the concept the word stands for.
        settings: sampling (steps, guidance, seed, batch size).
        source: the word's file (any format tirun reads); None scores the initializer word.
        samples_per_set: samples per prompt set, split evenly over its prompts.
        tokenizers: the tokenizers before training added the word, when it was.
        initializer: the word drawn when ``source`` is None (default: the concept's own; a run
            that started its word elsewhere, `word.initializer=...`, scores its own start).
    """
    sources = [source] if source is not None else []
    with loading.pipeline_with_words(
        components, sources, settings.scheduler, tokenizers=tokenizers
    ) as (pipe, tokens):
        word = tokens[0] if tokens else initializer or concept.initializer
        res = components.resolution
        rec_rows, rec_adds = _sample_set(
            pipe, word, concept.reconstruction, samples_per_set, settings, res
        )
        edit_rows, edit_adds = _sample_set(
            pipe, word, concept.editability, samples_per_set, settings, res
        )
    rec_expected = [{**concept.attributes, **a} for a in rec_adds]
    edit_expected = [{**concept.attributes, **a} for a in edit_adds]
    rec_read = [oracle.predict(row) for row in rec_rows]
    edit_read = [oracle.predict(row) for row in edit_rows]
    outcomes = {
        "reconstruction": hits(rec_read, rec_expected),
        "editability": hits(edit_read, edit_expected),
        "adherence": hits(edit_read, edit_adds),
        "leak": leaks(edit_read, edit_adds, concept.context),
    }
    return {
        **{k: sum(v) / len(v) if v else None for k, v in outcomes.items()},
        "attributes": oracle_metrics.reading_rates(
            rec_read + edit_read, rec_expected + edit_expected
        ),
        "outcomes": outcomes,
        "rows": {"reconstruction": rec_rows, "editability": edit_rows},
    }
