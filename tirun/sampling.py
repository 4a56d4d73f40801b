"""Fixed-seed samples from a pipeline with words loaded (`loading.pipeline_with_words`), how
they are drawn (`Sampling`), and the grids that show them: validation previews, applications,
evaluation and ToyBench."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw, ImageFont

from tirun import xti


@dataclass(frozen=True)
class Sampling:
    """How samples are drawn (`tirun/conf/application/sampling/*.yaml`).

    Args:
        samples: images per prompt.
        steps: denoising steps.
        guidance: classifier-free guidance scale.
        scheduler: `ddim` or `ddpm`.
        seed: image j of every prompt uses seed `seed + j`, so rows are comparable.
        batch_size: images per pipeline call.
    """

    samples: int
    steps: int
    guidance: float
    scheduler: str
    seed: int
    batch_size: int


def sample(
    pipe,
    prompts: list[str],
    images_per_prompt: int,
    steps: int,
    guidance: float,
    seed: int,
    resolution: int,
    batch_size: int = 16,
) -> list[list[Image.Image]]:
    """`images_per_prompt` images for each prompt, one row per prompt.

    Image j of every prompt uses the noise of seed `seed + j`, so rows are comparable and a
    rerun gives the same pictures.

    Args:
        pipe: a diffusers text-to-image pipeline with the words already loaded.
        prompts: full prompts (the word already written in).
        images_per_prompt: samples per prompt.
        steps: denoising steps.
        guidance: classifier-free guidance scale.
        seed: base seed.
        resolution: output side in pixels.
        batch_size: images per pipeline call.
    """
    # One pipeline call for the whole grid (in chunks of `batch_size`): on a CPU a UNet call
    # costs about the same at batch 2 as at 4, so a call per prompt nearly doubles the time.
    latent_side = resolution // pipe.vae_scale_factor
    noise = [
        torch.randn(
            pipe.unet.config.in_channels,
            latent_side,
            latent_side,
            generator=torch.Generator().manual_seed(seed + j),
        )
        for j in range(images_per_prompt)
    ]
    jobs = [(prompt, noise[j]) for prompt in prompts for j in range(images_per_prompt)]
    images: list[Image.Image] = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        latents = torch.stack([n for _, n in chunk]).to(pipe.unet.device, pipe.unet.dtype)
        texts = [p for p, _ in chunk]
        # XTI words need each layer's prompt: the pipeline is given the embeddings instead
        prompt = (
            xti.pipeline_kwargs(pipe, texts, guidance)
            if getattr(pipe, "tirun_xti", None)
            else {"prompt": texts}
        )
        out = pipe(
            **prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=resolution,
            width=resolution,
            latents=latents,
        )
        images += out.images
    return [
        images[i * images_per_prompt : (i + 1) * images_per_prompt] for i in range(len(prompts))
    ]


TILE = 96  # smallest side a tile is shown at: toy samples (32 px) are scaled up 3x
LABEL_WIDTH = 220


def grid(
    rows: list[list[Image.Image]],
    labels: Sequence[str] | None = None,
    min_tile: int = TILE,
) -> Image.Image:
    """Rows of equal-size images in one picture, each row headed by its label (its prompt).

    Tiles smaller than ``min_tile`` are scaled up by a whole factor, nearest-neighbour, so
    every generated pixel stays one visible block.
    """
    width, height = rows[0][0].size
    scale = max(1, -(-min_tile // max(width, height)))
    tile_w, tile_h = width * scale, height * scale
    left = LABEL_WIDTH if labels else 0
    columns = max(len(r) for r in rows)
    canvas = Image.new("RGB", (left + columns * tile_w, len(rows) * tile_h), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for y, row in enumerate(rows):
        if labels:
            _label(draw, labels[y], (6, y * tile_h + 6), left - 12, font)
        for x, image in enumerate(row):
            big = image.resize((tile_w, tile_h), Image.Resampling.NEAREST)
            canvas.paste(big, (left + x * tile_w, y * tile_h))
    return canvas


def side_by_side(panels: Sequence[tuple[str, Image.Image]]) -> Image.Image:
    """Pictures next to each other under their titles ("learned word", "initializer")."""
    gap, head = 16, 24
    width = sum(p.width for _, p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, head + max(p.height for _, p in panels)), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for title, picture in panels:
        draw.text((x + 6, 5), title, fill="black", font=ImageFont.load_default())
        canvas.paste(picture, (x, head))
        x += picture.width + gap
    return canvas


def _label(draw: ImageDraw.ImageDraw, text: str, at: tuple[int, int], width: int, font) -> None:
    """``text`` wrapped on word boundaries to fit ``width`` pixels."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    draw.multiline_text(at, "\n".join(lines), fill="black", font=font, spacing=3)
