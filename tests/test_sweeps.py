"""Sweeps: presets compose, a failed job leaves a trace and the sweep goes on, the report."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image

from tests.conftest import CONF, tirun_process
from tirun import report

TINY = ("model=tiny", "tracker=none", "train.batch_size=2", "train.checkpoint_every=0")


def hydra_config(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            "config", overrides=["dataset.path=/tmp", *overrides], return_hydra_config=True
        )


@pytest.mark.parametrize(
    ("preset", "params"),
    [
        ("lr", {"optimizer.lr": "1e-4,5e-3,2e-2"}),
        ("vectors", {"word.num_vectors": "1,2,3"}),
        ("tradeoff", {"optimizer.lr": "1e-4,5e-3,2e-2", "word.num_vectors": "1,2,3"}),
    ],
)
def test_sweep_presets_are_multiruns_over_the_papers_ablations(preset, params):
    cfg = hydra_config(f"+sweep={preset}")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == params
    assert f"multirun/{preset}/" in cfg.hydra.sweep.dir


def test_optuna_preset_maximizes_the_concept_score_over_lr_vectors_and_steps():
    cfg = hydra_config("+hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "oracle.concept_match"
    assert set(sweeper.params) == {"optimizer.lr", "word.num_vectors", "train.max_steps"}


def test_slurm_launcher_renders_its_job_settings_without_a_cluster():
    result = tirun_process(
        "hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=4", "--cfg", "hydra"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["gpus_per_node"] == 4
    preset = hydra_config("hydra/launcher=slurm").hydra.launcher
    assert (
        preset._target_.endswith("SlurmLauncher")
        and preset.gpus_per_node == 1
        and preset.timeout_min == 240
    )


def test_joblib_launcher_composes_for_parallel_local_jobs():
    launcher = hydra_config("hydra/launcher=joblib", "hydra.launcher.n_jobs=2").hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 2


def test_a_failed_sweep_job_is_recorded_and_the_sweep_goes_on(tmp_path, image_folder):
    sweep = tmp_path / "sweep"
    result = tirun_process(
        "--multirun",
        *TINY,
        f"dataset.path={image_folder}",
        "train.max_steps=1",
        "word.initializer=zzqqxxyy,toy",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    failed = json.loads((sweep / "0" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "word.initializer='zzqqxxyy'" in failed["error"]
    assert "\n" not in failed["error"]
    terminal = result.stdout + result.stderr
    said = [line for line in terminal.splitlines() if "job 0 failed" in line]
    assert len(said) == 1 and "word.initializer='zzqqxxyy'" in said[0], terminal[-2000:]
    assert "Traceback" not in terminal
    log_file = (sweep / "0" / "__main__.log").read_text()
    assert "job 0 failed: its traceback" in log_file and "Traceback" in log_file
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "finished"

    assert report.main([str(sweep)]) == 0
    table = (sweep / "report.md").read_text()
    assert "| 0 | zzqqxxyy | failed |" in table and "| 1 | toy | finished |" in table
    assert "falls back to final_loss" in table


def fake_job(
    sweep: Path, num: int, overrides: list[str], metrics: dict | None, optimized: str | None = None
) -> None:
    folder = sweep / str(num)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": optimized}))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))


def scores(variation: float, synthesis: float) -> dict:
    return {
        "status": "finished",
        "final_loss": 0.1,
        "applications": {
            "variation": {"concept_match": variation},
            "synthesis": {"concept_match": synthesis},
        },
        "oracle": {"concept_match": synthesis},
    }


def test_report_tables_every_job_plots_the_tradeoff_and_marks_failures(tmp_path):
    sweep = tmp_path / "sweep"
    fake_job(
        sweep, 0, ["+exp=object", "optimizer.lr=1e-4"], scores(0.2, 0.9), "oracle.concept_match"
    )
    fake_job(
        sweep, 1, ["+exp=object", "optimizer.lr=5e-3"], scores(0.7, 0.6), "oracle.concept_match"
    )
    fake_job(
        sweep,
        2,
        ["+exp=object", "optimizer.lr=2e-2"],
        {"status": "failed", "error": "ValueError: boom"},
    )
    fake_job(sweep, 3, ["+exp=object", "optimizer.lr=3e-2"], None)

    text = report.report(sweep)
    rows = (sweep / "report.csv").read_text().strip().splitlines()
    assert rows[0].startswith("job,optimizer.lr,status") and len(rows) == 5
    assert "| 2 | 2e-2 | failed |" in text and "ValueError: boom" in text
    assert "| 3 | 3e-2 | failed |" in text and "no metrics.json" in text
    assert "best job by oracle.concept_match (maximize): job 0 (lr=1e-4)" in text
    assert "tradeoff.png: 2 jobs on applications.variation.concept_match (x)" in text
    assert Image.open(sweep / "tradeoff.png").size[0] > 100


def test_report_html_is_one_offline_page_with_a_sortable_table_grids_and_the_plot(tmp_path):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["optimizer.lr=1e-4"], scores(0.2, 0.9), "oracle.concept_match")
    fake_job(sweep, 1, ["optimizer.lr=5e-3"], scores(0.7, 0.6), "oracle.concept_match")
    grid = sweep / "1" / "samples" / "variation" / "comparison.png"
    grid.parent.mkdir(parents=True)
    Image.new("RGB", (40, 20), "red").save(grid)
    report.report(sweep)

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.headings, self.rows, self.images, self.sources = [], [], [], []
            self.scripts, self._cell = 0, None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self._cell = ""
            elif tag == "img":
                self.images.append(attrs["alt"])
                self.sources.append(attrs["src"])
            elif tag == "script":
                self.scripts += 1
            elif tag in ("link",) or (tag == "script" and "src" in attrs):
                self.sources.append(attrs.get("href") or attrs.get("src"))

        def handle_data(self, data):
            if self._cell is not None:
                self._cell += data

        def handle_endtag(self, tag):
            if tag == "th":
                self.headings.append(self._cell)
            elif tag == "td":
                self.rows[-1].append(self._cell)
            if tag in ("td", "th"):
                self._cell = None

    page = Page()
    page.feed((sweep / "report.html").read_text())
    assert page.headings[:3] == ["job", "optimizer.lr", "status"] and page.headings[-1] == "samples"
    body = [row for row in page.rows if row]
    assert [row[:3] for row in body] == [["0", "1e-4", "finished"], ["1", "5e-3", "finished"]]
    assert body[0][-1] == "no samples"
    assert page.images == ["samples of job 1", "Reconstruction vs editability"]
    assert all(src.startswith("data:image/png;base64,") for src in page.sources)  # offline
    assert page.scripts == 1


def test_report_names_the_optuna_best_trial(tmp_path):
    sweep = tmp_path / "optuna"
    fake_job(sweep, 0, ["optimizer.lr=0.001", "word.num_vectors=1"], scores(0.2, 0.4))
    fake_job(sweep, 1, ["optimizer.lr=0.004", "word.num_vectors=2"], scores(0.5, 0.8))
    (sweep / "optimization_results.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "optuna",
                "best_params": {"optimizer.lr": 0.004, "word.num_vectors": 2},
                "best_value": 0.8,
            }
        )
    )
    assert "best trial (Optuna): job 1" in report.report(
        sweep, x="applications.variation.concept_match"
    )


def test_report_on_a_folder_without_jobs_fails_in_one_line(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("tirun.report: error: no job folders")


@pytest.mark.slow
def test_an_optuna_search_runs_and_the_report_names_the_best_trial(tmp_path, image_folder):
    sweep = tmp_path / "optuna"
    result = tirun_process(
        "+hparams_search=optuna",
        *TINY,
        f"dataset.path={image_folder}",
        "train.max_steps=1",
        "optimized_metric=final_loss",
        "hydra.sweeper.direction=minimize",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Best parameters" in result.stdout + result.stderr
    assert "best trial (Optuna): job " in report.report(sweep)


@pytest.mark.slow
def test_joblib_launcher_runs_a_sweep_in_parallel_processes(tmp_path, image_folder):
    sweep = tmp_path / "joblib"
    result = tirun_process(
        "--multirun",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *TINY,
        f"dataset.path={image_folder}",
        "train.max_steps=1",
        "word.num_vectors=1,2",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(
        json.loads((sweep / n / "metrics.json").read_text())["status"] == "finished" for n in "01"
    )
