"""Trackers: W&B offline in the run folder with no network, `none` writing local files only."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from tests.conftest import CONF, compose_config
from tirun import files, tracking


@pytest.fixture
def no_wandb_account(tmp_path: Path, monkeypatch):
    """No API key, no ~/.netrc, W&B's caches in tmp, and an unreachable server."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # any contact would fail
    monkeypatch.setattr(tracking, "_told_offline", False)


def test_wandb_is_the_default_tracker():
    assert compose_config("dataset.path=/tmp").tracker.name == "wandb"


def test_wandb_without_an_api_key_goes_offline_and_says_so_once(no_wandb_account, caplog):
    import os

    cfg = compose_config("tracker=wandb", "dataset.path=/tmp")
    with caplog.at_level(logging.INFO, logger="tirun.tracking"):
        assert tracking.log_with(cfg.tracker) == "wandb"
        assert tracking.log_with(cfg.tracker) == "wandb"
    assert os.environ["WANDB_MODE"] == "offline"
    assert len([r for r in caplog.records if "offline" in r.getMessage()]) == 1


def test_an_explicit_wandb_mode_is_kept(no_wandb_account, monkeypatch):
    import os

    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracking.log_with(compose_config("tracker=wandb", "dataset.path=/tmp").tracker)
    assert os.environ["WANDB_MODE"] == "disabled"


def test_a_wandb_run_logs_offline_into_the_run_folder(no_wandb_account, tiny_run):
    metrics, _, run_dir = tiny_run(
        "tracker=wandb",
        "validation.every=4",
        "validation.images_per_prompt=1",
        "validation.steps=2",
    )
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and metrics["status"] == "finished"
    media = runs[0] / "files" / "media"
    assert list((media / "images").glob("validation_*.png")), (
        "validation grids are logged as images"
    )
    assert list((media / "table").glob("final_metrics_*.table.json")), (
        "final metrics are logged as a table"
    )
    log = _transaction_log(runs[0], until=b"learned_embeds.safetensors")
    assert b"embedding-" in log and b"learned_embeds.safetensors" in log, "the word is an artifact"


def _transaction_log(run_folder: Path, until: bytes, timeout_s: float = 30.0) -> bytes:
    """The offline run's `.wandb` log. W&B's service process writes it on its own schedule
    after `finish()` returns (seen here: only the file header at first), so wait a bounded time
    for ``until`` to land."""
    deadline = time.monotonic() + timeout_s
    while True:
        log = next(run_folder.glob("run-*.wandb")).read_bytes()
        if until in log or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def test_tracker_none_writes_only_local_files(tiny_run):
    metrics, _, run_dir = tiny_run()
    assert not (run_dir / "wandb").exists()
    assert (run_dir / "metrics.json").is_file() and metrics["files"]


def test_jobs_of_a_multirun_share_a_group_named_after_the_sweep(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "tracker=wandb",
                "dataset.path=/tmp",
                "hydra.mode=MULTIRUN",
                f"hydra.sweep.dir={tmp_path}/sweep",
                "optimizer.lr=0.01",
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    try:
        kwargs = tracking.init_kwargs(cfg.tracker, cfg, tmp_path / "sweep" / "0")["wandb"]
    finally:
        HydraConfig.instance().cfg = None
    assert kwargs["group"] == f"{tmp_path}/sweep"
    assert kwargs["job_type"] == "train" and "optimizer.lr=0.01" in kwargs["name"]
    assert kwargs["dir"] == str(tmp_path / "sweep" / "0")


def test_a_single_run_has_no_group_and_names_its_application_as_job_type(tmp_path):
    cfg = compose_config("tracker=wandb", "dataset.path=/tmp")
    kwargs = tracking.init_kwargs(cfg.tracker, cfg, tmp_path)["wandb"]
    assert "group" not in kwargs and kwargs["job_type"] == "train"
    with open_dict(cfg):
        cfg.application = {"name": "variation"}
    assert tracking.init_kwargs(cfg.tracker, cfg, tmp_path)["wandb"]["job_type"] == "variation"


def test_final_metrics_flatten_to_dotted_names():
    flat = files.flatten({"status": "finished", "timing": {"step_s": 0.5}, "files": ["a", "b"]})
    assert flat == {"status": "finished", "timing.step_s": 0.5, "files": "a, b"}


def test_a_run_left_open_by_a_failed_sweep_job_is_closed_so_the_next_job_gets_its_own(
    no_wandb_account, tmp_path
):
    import os

    import wandb

    os.environ["WANDB_MODE"] = "offline"
    first = wandb.init(project="tirun", dir=str(tmp_path))
    tracking.end_failed_run()
    assert wandb.run is None
    second = wandb.init(project="tirun", dir=str(tmp_path))
    try:
        assert second.id != first.id
    finally:
        second.finish()


def test_application_scores_and_grids_reach_the_same_wandb_run(
    no_wandb_account, tmp_path, image_folder
):
    from tirun.__main__ import run

    cfg = compose_config(
        "model=tiny",
        "tracker=wandb",
        f"dataset.path={image_folder}",
        "train.max_steps=2",
        "train.batch_size=1",
        "train.checkpoint_every=0",
        "application=synthesis",
        "application.score.oracle=null",
        "application.sampling.samples=1",
        "application.sampling.steps=1",
        'application.prompts=["a photo of a {}"]',
    )
    run(cfg, tmp_path / "run")

    (wandb_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (table,) = (wandb_run / "files" / "media" / "table").glob("final_metrics_*.table.json")
    names = {row[0] for row in json.loads(table.read_text())["data"]}
    assert "steps" in names and "applications.synthesis.wall_time_s" in names
    assert list((wandb_run / "files" / "media" / "images").glob("samples/synthesis/*.png"))


def test_a_reports_figures_and_table_reach_wandb_as_one_run(no_wandb_account, tmp_path):
    from PIL import Image

    report_dir = tmp_path / "report"
    report_dir.mkdir()
    for name in ("curves", "tradeoff"):
        Image.new("RGB", (8, 8), "white").save(report_dir / f"{name}.png")
    (report_dir / "per_concept.csv").write_text(
        "run,concept,reconstruction\npaper,red_square,0.5\n"
    )
    folder = tracking.publish_report("paper", report_dir, tmp_path / "wandb-files")
    assert folder.name.startswith("offline-run-")
    media = folder / "files" / "media"
    assert sorted(p.name.split("_")[0] for p in (media / "images" / "report").glob("*.png")) == [
        "curves",
        "tradeoff",
    ]
    assert list((media / "table" / "report").glob("per_concept_*.table.json"))
