"""Text-guided synthesis: the learned word in new sentences (backgrounds, contexts, art forms).

Scores editability: a right sample shows the concept *and* what the sentence adds (toy world:
e.g. the purple star on sand), against the same sentences with the initializer word.
"""

from __future__ import annotations

from tirun.applications.context import Context, check_templates, with_adds, word_and_baseline
from tirun.sampling import Sampling


def run(ctx: Context, *, prompts: list[str | dict], sampling: dict) -> dict:
    """Samples of each sentence with the learned word and with the initializer.

    Args:
        ctx: the application's context (model, saved word, scorers).
        prompts: sentences with one "{}" for the word, each a string or `{prompt: ..., adds:
            {attribute: value}}` with what a right sample shows besides the concept (toy-world
            ground truth, ignored on real models).
        sampling: `application.sampling`.
    """
    templates, adds = with_adds(prompts, "prompts", "prompt")
    check_templates(templates, "prompts")
    return word_and_baseline(ctx, templates, adds, Sampling(**sampling))
