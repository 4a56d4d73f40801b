"""PIL images to float tensors and back, and the masks that go with them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def to_float(images: Sequence[Image.Image] | Image.Image) -> torch.Tensor:
    """[N, 3, H, W] float in [0, 1] from PIL images of one size (a single image gives N=1).

    Args:
        images: RGB-convertible PIL images.
    """
    if isinstance(images, Image.Image):
        images = [images]
    arrays = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """PIL images from a [N, 3, H, W] float tensor in [0, 1]."""
    arrays = (x.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round()
    return [Image.fromarray(a.astype(np.uint8), "RGB") for a in arrays]


def mask_crop(
    image: Image.Image,
    mask: np.ndarray,
    margin: float = 1.6,
    size: int = 32,
    isolate: bool = False,
) -> Image.Image:
    """A square crop around the mask's bounding box, resized to ``size``: the edited object
    framed the way single-object classifiers saw objects.

    Args:
        image: the edited image.
        mask: H×W bool, True in the edited region.
        margin: the crop's side over the box's longer side.
        size: output side in pixels.
        isolate: paint everything outside the mask in the mean colour of the image there, so a
            neighbouring object inside the frame is not read as the region's content.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("the mask is empty: nothing to crop")
    if isolate and not mask.all():
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        fill = pixels[~mask].mean(axis=0)
        pixels = np.where(mask[..., None], pixels, fill)
        image = Image.fromarray(pixels.round().astype(np.uint8), "RGB")
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = min(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) * margin, *mask.shape)
    top = int(round(min(max(cy - side / 2, 0), mask.shape[0] - side)))
    left = int(round(min(max(cx - side / 2, 0), mask.shape[1] - side)))
    side = int(round(side))
    box = (left, top, left + side, top + side)
    return image.crop(box).resize((size, size), Image.Resampling.BICUBIC)
