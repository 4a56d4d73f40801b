"""Background preservation for masked edits: the region outside the mask should be the source's."""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

PSNR_CAP = 100.0  # dB reported for identical backgrounds (JSON has no infinity)


def _background(
    edited: torch.Tensor, source: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels outside ``mask`` of both images, as two flat tensors."""
    if edited.shape != source.shape:
        raise ValueError(
            f"edited {tuple(edited.shape)} and source {tuple(source.shape)} differ in shape"
        )
    if mask.shape != edited.shape[-2:]:
        raise ValueError(
            f"mask {tuple(mask.shape)} does not match the images' {tuple(edited.shape[-2:])}"
        )
    keep = ~mask.bool()
    if not keep.any():
        raise ValueError("the mask covers the whole image: there is no background to compare")
    keep = keep.expand_as(edited)
    return edited[keep].float(), source[keep].float()


def background_mse(edited: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared error over the pixels outside ``mask`` (values in [0, 1]).

    Args:
        edited: [3, H, W] or [N, 3, H, W] in [0, 1].
        source: same shape as ``edited``.
        mask: H×W bool, True where the edit may change the image (ignored here).
    """
    a, b = _background(edited, source, mask)
    return float(torch.mean((a - b) ** 2))


def background_psnr(
    edited: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, cap: float = PSNR_CAP
) -> float:
    """PSNR (dB, data range 1) over the pixels outside ``mask``, capped for identical pixels.

    Args:
        edited: [3, H, W] or [N, 3, H, W] in [0, 1].
        source: same shape as ``edited``.
        mask: H×W bool, True where the edit may change the image (ignored here).
        cap: the value reported when the backgrounds are identical.
    """
    a, b = _background(edited, source, mask)
    value = float(peak_signal_noise_ratio(a, b, data_range=1.0))
    return cap if not math.isfinite(value) else min(value, cap)
