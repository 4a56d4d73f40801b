"""Composition: two learned words in one sentence ("S1 in the style of S2").

The words are loaded together into one pipeline; clashing token names are refused (rename them
with `application.tokens`). A right sample shows both concepts at once. The words are
`embeddings=[a, b]`, or learned first by the presets `application.learn` names (`prepare`).
"""

from __future__ import annotations

from tirun.applications.context import Context, check_templates, with_baseline
from tirun.metrics.clip import without_words
from tirun.sampling import Sampling
from tirun.toyworld.concepts import CONCEPTS

WORDS = 2  # `applications.check` refuses a run that would get another count, before training


def run(
    ctx: Context,
    *,
    prompts: list[str],
    tokens: list[str | None] | None,
    initializers: list[str],
    concepts: list[str] | None,
    sampling: dict,
) -> dict:
    """Samples of each sentence with the learned words and with their initializer words.

    Args:
        ctx: the application's context; its words are `embeddings=[a, b]` (in the holes'
            order), given or learned.
        prompts: sentences with "{0}" and "{1}" for the two words.
        tokens: token names to load the words under (null keeps the files' names).
        initializers: the baseline words, one per learned word.
        concepts: toy concepts the words stand for (their attributes are scored together), or
            null on real models.
        sampling: `application.sampling`.
    """
    settings = Sampling(**sampling)
    if len(ctx.sources) != WORDS:
        raise ValueError(
            f"composition needs two learned words, got {len(ctx.sources)}: give "
            "embeddings=[word_a,word_b]"
        )
    check_templates(prompts, "prompts", holes=2)
    if len(initializers) != 2 or (concepts is not None and len(concepts) != 2):
        raise ValueError(
            "application.initializers (and application.concepts) need one entry per word"
        )
    unknown = [c for c in concepts or [] if c not in CONCEPTS]
    if unknown:
        raise ValueError(
            f"application.concepts: {unknown[0]!r} is not a toy concept; use {sorted(CONCEPTS)}"
        )
    expected = None
    if concepts:
        first, second = (CONCEPTS[c].attributes for c in concepts)
        clash = sorted(k for k in first.keys() & second.keys() if first[k] != second[k])
        if clash:
            raise ValueError(
                f"application.concepts {concepts} disagree on {', '.join(clash)}: "
                "no sample can show both; compose concepts that agree"
            )
        expected = [{**first, **second}] * len(prompts)
    texts = [without_words(p) for p in prompts]
    with ctx.pipeline(settings.scheduler, ctx.sources, tokens) as (pipe, names):
        written = [p.format(*names) for p in prompts]
        baseline_written = [p.format(*initializers) for p in prompts]
        rows = ctx.sample(pipe, written, settings)
        base = ctx.sample(pipe, baseline_written, settings)
    ctx.save_comparison(rows, base, written, baseline_written)
    word = ctx.scores(rows, prompts, expected, texts)
    baseline = ctx.scores(base, prompts, expected, texts)
    return {"samples": sum(len(row) for row in rows), **with_baseline(word, baseline)}
