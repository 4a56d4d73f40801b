"""Style transfer: a learned style word on new subjects ("a painting of a <subject> in the style
of S*"). A right sample shows the style (toy world: purple mosaic) and the subject."""

from __future__ import annotations

from tirun.applications.context import Context, check_templates, with_adds, word_and_baseline
from tirun.sampling import Sampling


def run(ctx: Context, *, template: str, subjects: list[str | dict], sampling: dict) -> dict:
    """Samples of each subject in the learned style and in the initializer's.

    Args:
        ctx: the application's context (model, saved word, scorers).
        template: a sentence with `{subject}` and `{word}`.
        subjects: subject phrases, each a string or `{subject: ..., adds: {attribute: value}}`
            with what it adds (toy-world ground truth).
        sampling: `application.sampling`.
    """
    if "{subject}" not in template or "{word}" not in template:
        raise ValueError(f"application.template={template!r} needs both {{subject}} and {{word}}")
    phrases, adds = with_adds(subjects, "subjects", "subject")
    templates = [template.replace("{subject}", s).replace("{word}", "{}") for s in phrases]
    check_templates(templates, "template")
    return word_and_baseline(ctx, templates, adds, Sampling(**sampling))
