"""Saved words in a diffusers pipeline, and fixed-seed sample grids from it: validation
previews, applications, evaluation and ToyBench all draw through `pipeline_with_words`."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from PIL import Image, ImageDraw, ImageFont

from tirun import embeddings, xti
from tirun.models import Components


@contextmanager
def pipeline_with_words(
    components: Components,
    sources: Sequence,
    scheduler: str = "ddim",
    tokens: Sequence[str | None] | None = None,
    tokenizers: Sequence | None = None,
) -> Iterator[tuple]:
    """A pipeline over the model as it was before any word was added, with the *saved* words
    ``sources`` loaded by diffusers' own ``load_textual_inversion``; yields (pipe, tokens).

    This is the one road from a file to pictures, so a preview shows exactly what the file
    gives users. Inside the block the text encoders carry their untouched tables (a word being
    trained is set aside); afterwards everything comes back, rows included (transformers
    resizes a table in place when a pipeline loads a word into it).

    Args:
        components: the model (a trained word's wrappers may be on its text encoders).
        sources: word files (see `embeddings.load_into_pipeline`) or `LearnedWord`s.
        scheduler: the sampling scheduler, `ddim` or `ddpm`.
        tokens: token names overriding the files', one per source.
        tokenizers: the tokenizers as they were before training added the word (default: the
            model's own, when no word was added to them).
    """
    encoders = components.text_encoders
    processors = components.unet.attn_processors  # an XTI word installs its own
    installed = [e.get_input_embeddings() for e in encoders]
    tables = [getattr(module, "table", module) for module in installed]
    sizes = [e.config.vocab_size for e in encoders]
    weights = [(t.weight.data, t.num_embeddings) for t in tables]
    for encoder, table in zip(encoders, tables, strict=True):
        encoder.set_input_embeddings(table)
    try:
        plain = [copy.deepcopy(t) for t in (tokenizers or components.tokenizers)]
        pipe = Components(**{**vars(components), "tokenizers": plain}).pipeline(scheduler)
        pipe.set_progress_bar_config(disable=True)
        yield pipe, _load_words(pipe, list(sources), tokens)
    finally:
        components.unet.set_attn_processor(processors)
        for encoder, module, size in zip(encoders, installed, sizes, strict=True):
            encoder.set_input_embeddings(module)
            encoder.config.vocab_size = size
        for table, (weight, rows) in zip(tables, weights, strict=True):
            table.weight.data = weight
            table.num_embeddings = rows


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


def _load_words(pipe, sources: list, tokens: Sequence[str | None] | None) -> list[str]:
    """Plain words through `embeddings.load_into_pipeline`, XTI words through `xti`'s loader,
    each under its file's name or the one in ``tokens``."""
    names = list(tokens) if tokens is not None else [None] * len(sources)
    plain = [(i, s) for i, s in enumerate(sources) if not xti.is_xti_file(s)]
    loaded: dict[int, str] = {}
    if plain:
        added = embeddings.load_into_pipeline(
            pipe, [s for _, s in plain], [names[i] for i, _ in plain] if tokens else None
        )
        loaded.update({i: name for (i, _), name in zip(plain, added, strict=True)})
    for i, source in enumerate(sources):
        if i not in loaded:
            loaded[i] = xti.load_into_pipeline(pipe, source, names[i])
    return [loaded[i] for i in range(len(sources))]


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
