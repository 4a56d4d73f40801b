"""tirun: Textual Inversion experiments, configured with Hydra."""

from __future__ import annotations

import logging

from omegaconf import OmegaConf


class _LibraryNotice(logging.Filter):
    """Drop one notice a library prints on every run that says nothing about the run."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


# diffusers' Stable Diffusion pipeline modules import CLIP's and SigLIP's image processors (for
# the safety checker and IP-Adapter image encoders, which tirun never loads), and transformers 5
# says once per class that they fall back to PIL without torchvision.
logging.getLogger("transformers.utils.import_utils").addFilter(
    _LibraryNotice("requires torchvision (not installed); falling back to")
)
# diffusers' `load_textual_inversion` grows the token table and then writes the word's vectors
# into the new rows, so how transformers initialises those rows first does not matter.
logging.getLogger("transformers.modeling_utils").addFilter(
    _LibraryNotice("The new embeddings will be initialized from a multivariate normal")
)


def _toy(field: str, name: str) -> str | list[str]:
    """``${toy:initializer,NAME}`` / ``${toy:prompts,NAME}``: a toy concept's initializer word or
    neutral prompts (its reconstruction sentences), so one ToyBench preset fits every concept."""
    from tirun.toyworld.concepts import CONCEPTS

    if name not in CONCEPTS:
        raise ValueError(
            f"dataset.concept={name!r} is not a toy concept; use one of {sorted(CONCEPTS)}"
        )
    if field == "prompts":
        return [sentence for sentence, _ in CONCEPTS[name].reconstruction]
    if field != "initializer":
        raise ValueError(f"${{toy:{field},...}} is unknown; use toy:initializer or toy:prompts")
    return CONCEPTS[name].initializer


OmegaConf.register_new_resolver("toy", _toy, replace=True)
