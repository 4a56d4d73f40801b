"""Experiment trackers through Accelerate: `none` (local files only) or `wandb`."""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def log_with(tracker: DictConfig) -> str | None:
    """Accelerate's `log_with` for the tracker config; wandb runs offline without an API key."""
    if tracker.name == "none":
        return None
    if tracker.name == "wandb" and not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "online":
        os.environ.setdefault("WANDB_MODE", "offline")
        log.info("no WANDB_API_KEY set: W&B logs offline under ./wandb (sync later with `wandb sync`)")
    return tracker.name


def project(tracker: DictConfig) -> str:
    return tracker.get("project") or "tirun"


def init_kwargs(tracker: DictConfig, cfg: DictConfig) -> dict:
    if tracker.name != "wandb":
        return {}
    return {"wandb": {"group": tracker.group, "tags": list(tracker.tags), "dir": str(tracker.dir)}}


def log_images(accelerator, key: str, picture, step: int) -> None:
    """Send a picture to the trackers that take images."""
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            import wandb

            tracker.log({key: wandb.Image(picture)}, step=step)


def finish(accelerator, metrics: dict, files: list[str]) -> None:
    """Close the trackers at the end of training."""
    accelerator.end_training()
