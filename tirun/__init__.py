"""tirun: Textual Inversion experiments, configured with Hydra."""

from __future__ import annotations

import logging

from omegaconf import OmegaConf


class _NoTorchvisionFallbackNotice(logging.Filter):
    """Drop transformers' notice that an image processor falls back to PIL without torchvision.

    diffusers' Stable Diffusion pipeline modules import CLIP's and SigLIP's image processors
    (for the safety checker and IP-Adapter image encoders, which tirun never loads), and
    transformers 5 says so once per class on every run. Only that notice is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionFallbackNotice())


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
