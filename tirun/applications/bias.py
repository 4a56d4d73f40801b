"""Bias reduction: an inclusive word learned from a small balanced set against the plain word.

Each sample's attribute is classified (toy world: the oracle; real models: CLIP zero-shot over
`classes`), and the attribute's distribution is compared with uniform by KL divergence, as
ITI-GEN measures fairness: lower is fairer.
"""

from __future__ import annotations

from tirun.applications.context import Context, check_templates
from tirun.metrics import oracle as oracle_metrics
from tirun.metrics.fairness import distribution, kl_uniform
from tirun.sampling import Sampling


def run(
    ctx: Context,
    *,
    prompts: list[str],
    attribute: str,
    plain: str | None,
    classes: list[str] | None,
    class_prompt: str,
    sampling: dict,
) -> dict:
    """The attribute's distribution over samples of the inclusive word and of the plain word.

    Args:
        ctx: the application's context (model, saved word, scorers).
        prompts: sentences with one "{}" for the word.
        attribute: what is balanced (toy world: an oracle head such as `colour`).
        plain: the plain word (null: the initializer, e.g. `toy`).
        classes: the attribute's classes for CLIP zero-shot on real models (null: the oracle's).
        class_prompt: CLIP's sentence per class, with one "{}" for the class name.
        sampling: `application.sampling`.
    """
    settings = Sampling(**sampling)
    check_templates(prompts, "prompts")
    plain = plain or ctx.initializer
    classify, names = _classifier(ctx, attribute, classes, class_prompt)
    with ctx.pipeline(settings.scheduler, ctx.sources[:1]) as (pipe, tokens):
        written = [p.format(tokens[0]) for p in prompts]
        plain_written = [p.format(plain) for p in prompts]
        rows = ctx.sample(pipe, written, settings)
        base = ctx.sample(pipe, plain_written, settings)
    ctx.save_comparison(rows, base, written, plain_written)
    word = distribution(classify([im for row in rows for im in row]), names)
    baseline = distribution(classify([im for row in base for im in row]), names)
    return {
        "attribute": attribute,
        "plain_word": plain,
        "samples": sum(len(row) for row in rows),
        "distribution": word,
        "kl_uniform": kl_uniform(word),
        "baseline_distribution": baseline,
        "baseline_kl_uniform": kl_uniform(baseline),
    }


def _classifier(ctx: Context, attribute: str, classes: list[str] | None, class_prompt: str):
    """(images → labels, class names): the oracle on the toy world, else CLIP zero-shot."""
    if ctx.oracle is not None:
        names = list(ctx.oracle.classes.get(attribute, []))
        if classes:
            names = list(classes)
        return (lambda images: oracle_metrics.labels(ctx.oracle, images, attribute)), names
    if ctx.clip is not None:
        if not classes or len(classes) < 2:
            raise ValueError(
                "application.classes needs 2+ class names for CLIP zero-shot classification"
            )
        check_templates([class_prompt], "class_prompt")
        texts = [class_prompt.format(c) for c in classes]
        return (lambda images: [classes[i] for i in ctx.clip.zero_shot(texts, images)]), list(
            classes
        )
    raise ValueError(
        "bias needs a classifier: a toy-world dataset (the oracle) or application.score.clip=/a/clip/folder"
    )
