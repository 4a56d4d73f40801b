"""`python -m tirun +exp=style`: compose the config with Hydra and train."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from tirun import tracking
from tirun.files import write_json

log = logging.getLogger("tirun")


def metric_value(metrics: dict, name: str | None) -> float | None:
    """The value a sweeper optimises, by dotted name (`oracle.concept_match`)."""
    if not name:
        return None
    value = metrics
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(
                f"optimized_metric={name!r} is not in the run's metrics ({sorted(metrics)})"
            )
        value = value[part]
    return float(value)


def missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys still set to `???`, found without resolving interpolations that point at them."""
    keys = []
    for key in node:
        if key == "hydra":
            continue
        if OmegaConf.is_missing(node, key):
            keys.append(f"{prefix}{key}")
        elif OmegaConf.is_dict(node._get_node(key)):
            keys += missing_keys(node._get_node(key), f"{prefix}{key}.")
    return keys


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train a word (unless `embeddings=[...]` names saved ones), then run the application."""
    missing = missing_keys(cfg)
    if missing:
        raise ValueError(
            f"config key {missing[0]} needs a value: add {missing[0]}=... to the command"
        )
    from tirun.train import train  # torch and diffusers load here, so `--cfg job` stays quick

    applying = cfg.get("application") is not None
    metrics, objects = (
        train(cfg, run_dir, keep_tracking=applying) if not cfg.embeddings else ({}, {})
    )
    if not applying:
        return metrics
    from tirun.applications import run as run_application

    # The run's trackers stay open through the application, so its scores and grids land in
    # the same W&B run as the training curves.
    try:
        metrics = run_application(cfg, run_dir, metrics, objects)
    finally:
        if objects:
            grids = sorted((run_dir / "samples" / cfg.application.name).glob("*.png"))
            tracking.finish(objects["accelerator"], metrics, metrics.get("files", []), grids)
    return metrics


def agreed_run_dir(own: Path, cpu: bool) -> Path:
    """The run folder every process of a `torchrun`/`accelerate launch` job writes to.

    Each rank composes its own config, so `${now:...}` in `hydra.run.dir` can land a second
    apart; rank 0's folder wins (broadcast over the job's process group, which Accelerate
    sets up here once and reuses in `train`). The other ranks drop the folder Hydra made for
    them if it holds nothing but Hydra's own files, and log warnings only.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return own
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=cpu)
    agreed = Path(broadcast_object_list([str(own)], from_process=0)[0])
    if not state.is_main_process:
        logging.getLogger().setLevel(logging.WARNING)
        hydra_files = {".hydra", f"{HydraConfig.get().job.name}.log"}
        if agreed.resolve() != own.resolve() and {p.name for p in own.iterdir()} <= hydra_files:
            shutil.rmtree(own, ignore_errors=True)
    return agreed


def record_failure(run_dir: Path, error: BaseException) -> None:
    """Mark a sweep job failed in its `metrics.json` (kept, if training wrote one) for the report."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics.update(status="failed", error=f"{type(error).__name__}: {first_line(error)}")
    write_json(path, metrics)


def first_line(error: BaseException) -> str:
    if isinstance(error, MissingMandatoryValue) and error.full_key:
        key = error.full_key
        return f"config key {key} needs a value: add {key}=... to the command"
    return (str(error).splitlines() or [type(error).__name__])[0]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = agreed_run_dir(Path(hc.runtime.output_dir), cpu=cfg.train.cpu)
    try:
        metrics = run(cfg, run_dir)
        return metric_value(metrics, cfg.optimized_metric)
    except Exception as error:
        if os.environ.get("TIRUN_DEBUG"):
            raise
        if hc.mode == RunMode.MULTIRUN:
            # Hydra's basic sweeper re-raises a job's exception after the batch and a
            # SystemExit would end the sweep at once: record the failure, let the others run.
            # None makes an Optuna sweeper mark the trial failed and go on.
            log.error("job %s failed: %s", hc.job.num, first_line(error), exc_info=True)
            tracking.end_failed_run()
            if int(os.environ.get("RANK", "0")) == 0:
                record_failure(run_dir, error)
            return None
        if not isinstance(error, ValueError | MissingMandatoryValue):
            raise
        message = first_line(error)
        log.error("error: %s", message)
        print(f"tirun: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
