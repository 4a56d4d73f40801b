"""tirun: Textual Inversion experiments, configured with Hydra."""

from __future__ import annotations

from omegaconf import OmegaConf


def _toy(field: str, name: str) -> str | list[str]:
    """``${toy:initializer,NAME}`` / ``${toy:kind,NAME}`` / ``${toy:prompts,NAME}``: a toy
    concept's initializer word, kind ("object"/"style") or neutral prompts (its reconstruction
    sentences), so one ToyBench preset fits every concept."""
    from tirun.toyworld.concepts import CONCEPTS

    if name not in CONCEPTS:
        raise ValueError(
            f"dataset.concept={name!r} is not a toy concept; use one of {sorted(CONCEPTS)}"
        )
    if field == "prompts":
        return [sentence for sentence, _ in CONCEPTS[name].reconstruction]
    if field not in ("initializer", "kind"):
        raise ValueError(
            f"${{toy:{field},...}} is unknown; use toy:initializer, toy:kind or toy:prompts"
        )
    return str(getattr(CONCEPTS[name], field))


OmegaConf.register_new_resolver("toy", _toy, replace=True)
