"""Shared fixtures: configs composed as `python -m tirun` composes them, tiny models, images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from tirun import config
from tirun.models import Components, build_random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(2)

CONF = str(config.CONF)


def compose_config(*overrides: str):
    """The config `python -m tirun OVERRIDES` would run with (CPU, tiny, no tracker)."""
    return config.compose(overrides)


def make_images(folder: Path, count: int = 4, size: tuple[int, int] = (40, 36)) -> Path:
    """A few small pictures of a red disc on different blues."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.new("RGB", size, (20 * i, 90, 200))
        ImageDraw.Draw(image).ellipse((4 + i, 4, 26 + i, 28), fill=(230, 20, 20))
        image.save(folder / f"{i}.png")
    return folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_images(tmp_path / "images")


@pytest.fixture
def tiny_sd1() -> Components:
    return build_random("tiny-sd1", seed=0)


@pytest.fixture
def tiny_sdxl() -> Components:
    return build_random("tiny-sdxl", seed=0)


@pytest.fixture
def tiny_run(tmp_path: Path, image_folder: Path):
    """Train a tiny word and return (metrics, objects, run_dir); extra overrides allowed."""
    from tirun.train import train

    def run(*overrides: str, run_dir: Path | None = None):
        cfg = compose_config(
            "model=tiny",
            "tracker=none",
            f"dataset.path={image_folder}",
            "train.max_steps=4",
            "train.batch_size=2",
            "train.checkpoint_every=0",
            *overrides,
        )
        folder = run_dir or tmp_path / "run"
        metrics, objects = train(cfg, run_dir=folder)
        return metrics, objects, folder

    return run


ROOT = Path(__file__).resolve().parents[1]


def tirun_process(
    *args: str, module: str = "tirun", cwd: Path = ROOT, env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """``python -m tirun ARGS`` (or another module) as a user runs it: a new process, offline,
    one thread, no W&B network."""
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=full_env,
        **kwargs,
    )


@pytest.fixture
def tirun_cli():
    """Run the command line in a new process: see `tirun_process`."""
    return tirun_process


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `gpu` run where CUDA is, and are skipped elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
