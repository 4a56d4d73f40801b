"""Training images → augmented views → VAE latents computed once.

The VAE never runs inside the training loop: every view of every image (center crop or a few
random crops, each unflipped and flipped) is encoded once, and each step draws a latent from
the cached posterior (mean, std), as `latent_dist.sample()` would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from tirun.choices import CHOICES

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
CROPS = CHOICES["dataset.crop"]


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with EXIF orientation applied; alpha composited on white; 16-bit scaled to 8."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(
            np.clip(array * (255.0 if array.max() <= 1 else 1), 0, 255).astype(np.uint8)
        )
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def image_files(path: str) -> list[Path]:
    """The image files of a folder, sorted by name: the order of the training images."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"dataset.path={path!r} is not a folder; point it at a folder of 3-5 images"
        )
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"dataset.path={path!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add 3-5 images"
        )
    return files


def load_image_folder(path: str) -> list[Image.Image]:
    """Every image in a folder (sorted by name), as RGB.

    Args:
        path: a folder of images (png, jpg, webp, bmp, tiff, gif).
    """
    images = []
    for file in image_files(path):
        try:
            with Image.open(file) as image:
                image.load()
                images.append(to_rgb(image))
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"cannot read image {file}: {error}; remove or replace it") from None
    return images


def training_images(path: str | None) -> list[Image.Image]:
    """The images a word is learned from: a folder's (the toy world's datasets render theirs,
    `tirun.toyworld.concepts.training_images`).

    Args:
        path: a folder of 3-5 images.
    """
    if path:
        return load_image_folder(path)
    raise ValueError(
        "dataset.path is not set: point it at a folder of 3-5 images (dataset.path=...), "
        "or train on a toy concept (dataset=toy_object)"
    )


def training_masks(path: str) -> list[Image.Image | None]:
    """Each of a folder's images' mask (white = what the word should learn): the image's alpha
    channel or ``masks/<image name>`` beside it; an image with neither is refused, by name, as
    it would train unmasked. Read only when the loss is masked (``dataset.masked=true``)."""
    files = image_files(path)
    masks: list[Image.Image | None] = []
    for file in files:
        beside = file.parent / "masks" / file.name
        try:
            if beside.is_file():
                with Image.open(beside) as mask:
                    masks.append(ImageOps.exif_transpose(mask).convert("L"))
                continue
            with Image.open(file) as image:
                image = ImageOps.exif_transpose(image)
                has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
                masks.append(image.convert("RGBA").getchannel("A") if has_alpha else None)
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"cannot read the mask of {file}: {error}; fix or remove it") from None
    unmasked = [file.name for file, mask in zip(files, masks, strict=True) if mask is None]
    if unmasked:
        raise ValueError(
            f"dataset.masked=true but {len(unmasked)} of {len(masks)} images have no mask "
            f"({', '.join(unmasked[:3])}{', ...' if len(unmasked) > 3 else ''}): give each an "
            f"alpha channel or a mask of the same name in {Path(path) / 'masks'}, or set "
            "dataset.masked=false"
        )
    return masks


def _crop_box(size: tuple[int, int], crop: str, rng: np.random.Generator) -> tuple[int, ...]:
    width, height = size
    side = min(width, height)
    if crop == "center":
        left, top = (width - side) // 2, (height - side) // 2
    else:
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    return left, top, left + side, top + side


def _pixels(image: Image.Image, resolution: int) -> torch.Tensor:
    image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _mask(
    mask: Image.Image | None, box: tuple[int, ...], size: tuple[int, int], resolution: int
) -> torch.Tensor:
    """A [1, res, res] weight in [0, 1] cropped like its image (all ones without a mask)."""
    if mask is None:
        return torch.ones(1, resolution, resolution)
    if mask.size != size:
        raise ValueError(
            f"a mask is {mask.size[0]}x{mask.size[1]} but its image {size[0]}x{size[1]}: give masks of the images' size"
        )
    mask = mask.crop(box).resize((resolution, resolution), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None]


class TrainingViews:
    """The augmented views of the training images, each as a pixel tensor.

    Args:
        images: the training images (RGB).
        resolution: square side in pixels.
        crop: `center`, or `random` for `num_crops` random square crops of each image.
        flip_p: probability of a horizontal flip when a view is drawn (0 caches no flips).
        num_crops: random crops cached per image when `crop=random`.
        seed: seeds the random crops.
        masks: per image, a mask cropped like it (the loss weights), or None: no masks.
    """

    def __init__(
        self,
        images: list[Image.Image],
        resolution: int,
        crop: str = "center",
        flip_p: float = 0.5,
        num_crops: int = 4,
        seed: int = 0,
        masks: list[Image.Image | None] | None = None,
    ):
        if crop not in CROPS:
            raise ValueError(f"dataset.crop={crop!r} is unknown; use one of {CROPS}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"dataset.flip_p={flip_p} must be between 0 and 1")
        rng = np.random.default_rng(seed)
        crops_per_image = 1 if crop == "center" else num_crops
        pixels, weights, image_index = [], [], []
        for index, image in enumerate(images):
            for _ in range(crops_per_image):
                box = _crop_box(image.size, crop, rng)
                pixels.append(_pixels(image.crop(box), resolution))
                if masks is not None:
                    weights.append(_mask(masks[index], box, image.size, resolution))
                image_index.append(index)
        self.pixels = torch.stack(pixels)
        self.masks = torch.stack(weights) if masks is not None else None  # [view, 1, H, W]
        self.image_index = torch.tensor(image_index)
        self.flip_p = flip_p
        self.num_images = len(images)

    def __len__(self) -> int:
        return len(self.pixels)


class LatentCache:
    """Posterior (mean, std) of every view and of its mirror image, encoded once."""

    def __init__(self, vae, views: TrainingViews, batch_size: int = 8):
        self.views = views
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        variants = [views.pixels] + ([views.pixels.flip(-1)] if views.flip_p > 0 else [])
        means, stds = [], []
        param = next(vae.parameters())
        with torch.no_grad():
            for pixels in variants:
                mean, std = [], []
                for chunk in pixels.split(batch_size):
                    dist = vae.encode(chunk.to(param.device, param.dtype)).latent_dist
                    mean.append(dist.mean.float())
                    std.append(dist.std.float())
                means.append(torch.cat(mean))
                stds.append(torch.cat(std))
        self.mean = torch.stack(means)  # [flip, view, C, h, w]
        self.std = torch.stack(stds)
        self.weights = None  # [flip, view, 1, h, w]: the masks at latent size (area-averaged)
        if views.masks is not None:
            small = F.interpolate(views.masks, size=self.mean.shape[-2:], mode="area")
            self.weights = torch.stack([small, small.flip(-1)][: self.mean.shape[0]])

    def sample(
        self, view: torch.Tensor, flip: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Scaled latents of the given views (flipped where `flip`), drawn from the posterior."""
        flip = flip.long() if self.mean.shape[0] > 1 else torch.zeros_like(view)
        mean, std = self.mean[flip, view], self.std[flip, view]
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + std * noise - self.shift_factor) * self.scaling_factor

    def loss_weights(self, view: torch.Tensor, flip: torch.Tensor) -> torch.Tensor | None:
        """The views' masks at latent size (flipped with them), or None without masks."""
        if self.weights is None:
            return None
        flip = flip.long() if self.weights.shape[0] > 1 else torch.zeros_like(view)
        return self.weights[flip, view]


class ViewSampler:
    """Batches of view indices: each epoch is every view `repeats` times, shuffled; a flip is
    drawn per sample. With several processes every rank draws the same global batch and the
    trainer hands each its slice, so results do not depend on the number of processes.
    """

    def __init__(self, views: TrainingViews, batch_size: int, repeats: int, seed: int):
        if repeats < 1:
            raise ValueError(f"dataset.repeats={repeats} must be at least 1")
        self.views = views
        self.batch_size = batch_size
        self.repeats = repeats
        self.generator = torch.Generator().manual_seed(seed)
        self._queue: list[int] = []

    def _next_indices(self) -> list[int]:
        size = self.batch_size
        while len(self._queue) < size:
            epoch = torch.arange(len(self.views)).repeat(self.repeats)
            self._queue += epoch[torch.randperm(len(epoch), generator=self.generator)].tolist()
        batch, self._queue = self._queue[:size], self._queue[size:]
        return batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = torch.tensor(self._next_indices())
        flips = torch.rand(len(batch), generator=self.generator) < self.views.flip_p
        return batch, flips

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "queue": list(self._queue)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._queue = list(state["queue"])
