"""tirun: Textual Inversion experiments, configured with Hydra."""

from __future__ import annotations

from omegaconf import OmegaConf


def _toy(field: str, name: str) -> str:
    """``${toy:initializer,NAME}`` / ``${toy:kind,NAME}``: a toy concept's initializer word or
    kind ("object"/"style"), so one ToyBench preset fits every concept."""
    from tirun.toyworld.concepts import CONCEPTS

    if name not in CONCEPTS:
        raise ValueError(
            f"dataset.concept={name!r} is not a toy concept; use one of {sorted(CONCEPTS)}"
        )
    if field not in ("initializer", "kind"):
        raise ValueError(f"${{toy:{field},...}} is unknown; use toy:initializer or toy:kind")
    return str(getattr(CONCEPTS[name], field))


OmegaConf.register_new_resolver("toy", _toy, replace=True)
