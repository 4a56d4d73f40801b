"""tirun's own trainer and sampler, driven as `python -m tirun` drives them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from experiments.bench.cases import GUIDANCE, PROMPTS, TIRUN_MODEL, TOKEN, Case, Plan


def tirun_overrides(case: Case, images: Path, out_dir: Path, steps: int) -> list[str]:
    """The Hydra overrides that put tirun's trainer on this case."""
    overrides = [
        f"model={TIRUN_MODEL.get(case.model, case.model)}",
        f"dataset.path={images}",
        f"train.max_steps={steps}",
        f"train.batch_size={case.batch}",
        "train.checkpoint_every=0",
        "validation.every=0",
        "tracker=none",
        f"model.resolution={case.resolution}",
        f"train.mixed_precision={'no' if case.precision == 'fp32' else case.precision}",
        f"train.attention={case.attention}",
        f"train.cpu={case.device == 'cpu'}",
    ]
    return overrides


def run_tirun(case: Case, images: Path, out_dir: Path, steps: int) -> dict:
    """Run `train(cfg)` as `python -m tirun` would; returns its `metrics.json`."""
    from tirun.config import compose
    from tirun.train import train

    cfg = compose(tirun_overrides(case, images, out_dir, steps))
    train(cfg, run_dir=out_dir)
    metrics = out_dir / "metrics.json"
    if not metrics.is_file():
        raise RuntimeError(f"tirun's trainer wrote no {metrics}")
    return json.loads(metrics.read_text())


def tirun_sampler() -> Callable | None:
    """tirun's validation sampler, or None while it does not exist."""
    try:
        from tirun.sampling import sample
    except ImportError:
        return None
    return sample


def sample_grid(pipe, kind: str, plan: Plan, resolution: int) -> None:
    """The validation grid (every prompt × `images_per_prompt`) by tirun's sampler, or by one
    plain pipeline call with the same scheduler, steps, guidance and size."""
    prompts = [p.format(TOKEN) for p in PROMPTS]
    if kind == "tirun":
        sampler = tirun_sampler()
        if sampler is None:
            raise RuntimeError("tirun.sampling.sample is not available")
        sampler(pipe, prompts, plan.images_per_prompt, plan.sample_steps, GUIDANCE, 0, resolution)
        return
    pipe(
        prompts,
        num_images_per_prompt=plan.images_per_prompt,
        num_inference_steps=plan.sample_steps,
        guidance_scale=GUIDANCE,
        height=resolution,
        width=resolution,
        generator=torch.Generator().manual_seed(0),
    )
