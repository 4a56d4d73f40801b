"""Experiment trackers through Accelerate: `none` (local files only) or `wandb`.

W&B runs offline whenever no API key is found, so a run never waits on the network; the
offline runs land in `<run folder>/wandb/offline-run-*` and `wandb sync` uploads them later.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import sys
from pathlib import Path

from omegaconf import DictConfig

from tirun.files import flatten

log = logging.getLogger(__name__)
_told_offline = False


def has_wandb_key() -> bool:
    """An API key in the environment or from `wandb login` (kept in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def offline_without_key() -> None:
    """W&B runs offline when no API key is found and `WANDB_MODE` does not say otherwise."""
    if not os.environ.get("WANDB_MODE") and not has_wandb_key():
        os.environ["WANDB_MODE"] = "offline"


def log_with(tracker: DictConfig) -> str | None:
    """Accelerate's `log_with` for the tracker config; wandb runs offline without an API key."""
    global _told_offline
    if tracker.name != "wandb":
        return None if tracker.name == "none" else tracker.name
    offline_without_key()
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun") and not _told_offline:
        _told_offline = True  # once per process, not once per job of a sweep
        log.info(
            "W&B logs offline (no API key, or WANDB_MODE=offline); upload later with "
            "`wandb sync <run folder>/wandb/offline-run-*`"
        )
    return "wandb"


def project(tracker: DictConfig) -> str:
    return tracker.get("project") or "tirun"


def sweep_group() -> tuple[str | None, str | None]:
    """(group, run name) for a job of a Hydra multirun: jobs of one sweep share a group."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None, None
    group = str(hc.sweep.dir)[-128:]  # W&B caps group names at 128 characters
    return group, hc.job.override_dirname or f"job{hc.job.num}"


def init_kwargs(tracker: DictConfig, cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """`wandb.init` arguments: group = the sweep, job_type = the application, files in the run folder.

    Args:
        tracker: the `tracker` config group.
        cfg: the whole config (for the application's name).
        run_dir: the run folder; W&B's files go under it unless `tracker.dir` says otherwise.
    """
    if tracker.name != "wandb":
        return {}
    group, name = sweep_group()
    application = cfg.get("application")
    kwargs = {
        "group": tracker.get("group") or group,
        "job_type": (application.get("name") if application else None) or "train",
        "tags": list(tracker.get("tags") or []),
        "name": tracker.get("run_name") or name,
    }
    folder = tracker.get("dir") or run_dir
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        kwargs["dir"] = str(folder)
    return {"wandb": {k: v for k, v in kwargs.items() if v is not None}}


def start(accelerator, cfg: DictConfig, run_dir: Path) -> None:
    """Open the run's trackers with its whole config."""
    from omegaconf import OmegaConf

    accelerator.init_trackers(
        project(cfg.tracker),
        config=OmegaConf.to_container(cfg, resolve=True),
        init_kwargs=init_kwargs(cfg.tracker, cfg, run_dir),
    )


def log_images(accelerator, key: str, picture, step: int) -> None:
    """Send a picture to the trackers that take images."""
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            import wandb

            tracker.log({key: wandb.Image(picture)}, step=step)


def finish(accelerator, metrics: dict, files: list[str], grids: list[Path] | None = None) -> None:
    """Final metrics as a table (and the run summary), sample grids as images, the saved word
    as an artifact; close."""
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            _finish_wandb(tracker.tracker, metrics, files, grids or [])
    accelerator.end_training()


def _finish_wandb(run, metrics: dict, files: list[str], grids: list[Path]) -> None:
    import wandb

    flat = flatten(metrics)
    run.log(
        {
            "final_metrics": wandb.Table(
                columns=["metric", "value"], data=[[k, str(v)] for k, v in flat.items()]
            ),
            **{f"samples/{p.parent.name}/{p.stem}": wandb.Image(str(p)) for p in grids},
        }
    )
    run.summary.update({k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool))})
    if files:
        artifact = wandb.Artifact(
            re.sub(r"[^\w.-]", "_", f"embedding-{run.id}"),
            type="embedding",
            metadata={"status": metrics.get("status"), "steps": metrics.get("steps")},
        )
        for path in files:
            artifact.add_file(path)
        run.log_artifact(artifact)


def publish_report(
    name: str, report_dir: Path, files_dir: Path, project_name: str = "tirun"
) -> Path:
    """A report's figures (every PNG in ``report_dir``) and its `per_concept.csv` as one W&B run
    (job type `report`; offline without an API key, its files under ``files_dir``), so W&B
    shows the same figures and table as the Markdown report; returns W&B's run folder."""
    import csv

    import wandb

    offline_without_key()
    files_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project_name, name=name, job_type="report", dir=str(files_dir))
    logged: dict = {
        f"report/{p.stem}": wandb.Image(str(p)) for p in sorted(report_dir.glob("*.png"))
    }
    table = report_dir / "per_concept.csv"
    if table.is_file():
        head, *rows = list(csv.reader(table.open()))
        logged["report/per_concept"] = wandb.Table(columns=head, data=rows)
    run.log(logged)
    folder = Path(run.dir).parent
    run.finish()
    return folder


def end_failed_run() -> None:
    """Close a W&B run an exception left open, marked failed.

    Otherwise the next job of a sweep in the same process would get it back from `wandb.init`
    (its default outside notebooks is to return the active run) and log into it.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.finish(exit_code=1)
