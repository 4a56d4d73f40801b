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
        out = pipe(
            [p for p, _ in chunk],
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


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Paste rows of equal-size images into one picture."""
    width, height = rows[0][0].size
    columns = max(len(r) for r in rows)
    canvas = Image.new("RGB", (columns * width, len(rows) * height), "white")
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            canvas.paste(image, (x * width, y * height))
    return canvas
