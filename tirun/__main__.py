"""`python -m tirun +exp=style`: compose the config with Hydra and train."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from tirun.train import train

log = logging.getLogger("tirun")


def metric_value(metrics: dict, name: str | None) -> float | None:
    """The value a sweeper optimises, by dotted name (`oracle.concept_match`)."""
    if not name:
        return None
    value = metrics
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"optimized_metric={name!r} is not in the run's metrics ({sorted(metrics)})")
        value = value[part]
    return float(value)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train a word (unless `embeddings=[...]` names saved ones), then run the application."""
    metrics, objects = train(cfg, run_dir) if not cfg.embeddings else ({}, {})
    if cfg.get("application") is not None:
        from tirun.applications import run as run_application

        metrics = run_application(cfg, run_dir, metrics, objects)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg, Path(HydraConfig.get().runtime.output_dir))
        return metric_value(metrics, cfg.optimized_metric)
    except (ValueError, MissingMandatoryValue) as error:
        if os.environ.get("TIRUN_DEBUG"):
            raise
        message = str(error).splitlines()[0]
        if isinstance(error, MissingMandatoryValue):
            message = f"config key {error.full_key} needs a value: add {error.full_key}=... to the command"
        log.error("error: %s", message)
        print(f"tirun: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
