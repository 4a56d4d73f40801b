"""Toy-world scores: what the oracle reads off generated images, against the ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from tirun.toyworld.oracle import DEFAULT_PATH, Oracle, concept_match


def load(path: str | Path | None = None) -> Oracle:
    """The oracle from ``path`` (default: the packaged one), or a one-line ValueError.

    Args:
        path: a folder with ``config.json`` and ``oracle.safetensors``.
    """
    try:
        return Oracle.load(path or DEFAULT_PATH)
    except FileNotFoundError as error:
        raise ValueError(
            f"{error}; or set application.score.oracle=null to skip toy-world scores"
        ) from None


def match_rate(oracle: Oracle, images: Sequence[Image.Image], attributes: dict[str, str]) -> float:
    """Fraction of ``images`` whose predicted attributes all equal ``attributes``.

    Args:
        oracle: the attribute classifier.
        images: generated images.
        attributes: what every image should show, e.g. ``{"shape": "star", "colour": "purple"}``.
    """
    if not images:
        raise ValueError("no images to score")
    return concept_match(oracle.predict(list(images)), attributes)


def labels(oracle: Oracle, images: Sequence[Image.Image], attribute: str) -> list[str]:
    """The oracle's reading of one attribute for each image.

    Args:
        oracle: the attribute classifier.
        images: generated images.
        attribute: one of the oracle's heads, e.g. ``"colour"``.
    """
    if attribute not in oracle.classes:
        raise ValueError(
            f"attribute={attribute!r} is not read by the oracle; use one of {sorted(oracle.classes)}"
        )
    return oracle.predict(list(images))[attribute]


def attribute_rates(
    oracle: Oracle, rows: Sequence[Sequence[Image.Image]], expected: Sequence[dict[str, str]]
) -> dict[str, float]:
    """Per attribute, the fraction of samples that show it right (over the rows that ask for
    it): which part of a concept a word got, when the all-attributes match is low.

    Args:
        oracle: the attribute classifier.
        rows: samples, one row per prompt.
        expected: the attributes each row's samples should show.
    """
    return reading_rates([oracle.predict(list(row)) for row in rows], expected)


def reading_rates(
    readings: Sequence[dict[str, list[str]]], expected: Sequence[dict[str, str]]
) -> dict[str, float]:
    """:func:`attribute_rates` from the oracle's readings of each row (`Oracle.predict`), for a
    caller that has read the rows already."""
    hits: dict[str, list[bool]] = {}
    for predictions, attributes in zip(readings, expected, strict=True):
        for key, value in attributes.items():
            hits.setdefault(key, []).extend(p == value for p in predictions[key])
    return {key: sum(h) / len(h) for key, h in hits.items() if h}
