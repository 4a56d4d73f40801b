"""Variation: the learned word alone in neutral sentences, many fixed-seed samples each.

Scores reconstruction: how often a sample shows the concept (toy world: the oracle reads every
attribute that defines it), against the same sentences with the initializer word.
"""

from __future__ import annotations

from tirun.applications.context import Context, check_templates, word_and_baseline
from tirun.sampling import Sampling


def run(ctx: Context, *, prompts: list[str], sampling: dict) -> dict:
    """Samples of "a photo of S*"-style prompts and of the same prompts with the initializer.

    Args:
        ctx: the application's context (model, saved word, scorers).
        prompts: neutral sentences with one "{}" for the word.
        sampling: `application.sampling` (samples per prompt, steps, guidance, scheduler, seed).
    """
    check_templates(prompts, "prompts")
    return word_and_baseline(ctx, prompts, [{}] * len(prompts), Sampling(**sampling))
