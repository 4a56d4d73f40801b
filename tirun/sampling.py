"""Fixed-seed sample grids from a diffusers pipeline: validation previews and applications."""

from __future__ import annotations

import torch
from PIL import Image


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
    rows = []
    device = pipe.unet.device
    for prompt in prompts:
        row: list[Image.Image] = []
        for start in range(0, images_per_prompt, batch_size):
            count = min(batch_size, images_per_prompt - start)
            generators = [
                torch.Generator(device="cpu").manual_seed(seed + start + j) for j in range(count)
            ]
            latents = torch.stack(
                [
                    torch.randn(
                        pipe.unet.config.in_channels,
                        resolution // pipe.vae_scale_factor,
                        resolution // pipe.vae_scale_factor,
                        generator=g,
                    )
                    for g in generators
                ]
            ).to(device, pipe.unet.dtype)
            out = pipe(
                [prompt] * count,
                num_inference_steps=steps,
                guidance_scale=guidance,
                height=resolution,
                width=resolution,
                latents=latents,
            )
            row += out.images
        rows.append(row)
    return rows


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Paste rows of equal-size images into one picture."""
    width, height = rows[0][0].size
    columns = max(len(r) for r in rows)
    canvas = Image.new("RGB", (columns * width, len(rows) * height), "white")
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            canvas.paste(image, (x * width, y * height))
    return canvas
