"""The models as tirun loads them, and the training images."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from experiments.bench.cases import TOY_MODEL


def toy_available() -> bool:
    return (TOY_MODEL / "model_index.json").is_file() and (TOY_MODEL / "unet").is_dir()


def load_components(model: str, resolution: int):
    """The model as tirun loads it: the packaged toy model, or random weights on an arch folder."""
    from tirun.models import build_random, load_pretrained

    if model == "toy":
        return load_pretrained("toy", resolution)
    return build_random(model, seed=0, resolution=resolution)


def native_resolution(model: str) -> int:
    """The image size a small model was made for: its VAE's `sample_size`."""
    from tirun.models import ASSETS

    folder = TOY_MODEL if model == "toy" else ASSETS / "arch" / model
    if not folder.is_dir():
        folder = Path(model)
    return int(json.loads((folder / "vae" / "config.json").read_text())["sample_size"])


def pad_tokenizer(tokenizer, size: int):
    """The tokenizer with unused entries up to `size`, so its length matches the token table.

    The example grows the table to `len(tokenizer)`: with the project's small tokenizer that
    would shrink SD 1.5's 49 408-row table to a few hundred rows and hide the cost under test.
    """
    from transformers import CLIPTokenizer

    if len(tokenizer) >= size:
        return tokenizer
    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        spec = json.loads((Path(tmp) / "tokenizer.json").read_text())
        vocab = spec["model"]["vocab"]
        for index in range(len(tokenizer), size):
            vocab[f"<|unused{index}|>"] = index
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec))
        return CLIPTokenizer.from_pretrained(tmp)


def use_attention(unet, attention: str) -> None:
    """`sdpa` is diffusers' default processor; `xformers` is switched on as the example does."""
    if attention == "xformers":
        unet.enable_xformers_memory_efficient_attention()
    elif attention != "sdpa":
        raise ValueError(f"attention={attention!r} is unknown; use sdpa or xformers")


def write_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """A few smooth random RGB images: timing does not depend on what they show."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        image.save(folder / f"image{index}.png")
    return folder
