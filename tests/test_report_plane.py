"""A sweep's report draws reconstruction against editability (ToyBench's scores when the jobs
have them), with tick labels that do not run into each other, and each job's grid a click away
at full size."""

from __future__ import annotations

import json
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import yaml
from PIL import Image

from tirun import report


def job(sweep: Path, num: int, overrides: list[str], metrics: dict) -> Path:
    folder = sweep / str(num)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "metrics.json").write_text(json.dumps({"status": "finished", **metrics}))
    return folder


def links(page: Path) -> list[str]:
    """Every link's target on ``page``."""
    hrefs = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "a":
                hrefs.append(dict(attrs)["href"])

    Links().feed(page.read_text())
    return hrefs


def toybench(reconstruction: float, editability: float) -> dict:
    return {
        "final_loss": 0.1,
        "applications": {
            "toybench": {
                "final": {"reconstruction": reconstruction, "editability": editability},
                "initializer": {"reconstruction": 0.0, "editability": 0.25},
            },
            "variation": {"concept_match": 0.5},  # the first plane some job has wins
            "synthesis": {"concept_match": 0.5},
        },
    }


def test_toybench_scored_jobs_are_drawn_on_reconstruction_against_editability(tmp_path):
    sweep = tmp_path / "sweep"
    job(sweep, 0, ["optimizer.lr=1e-3"], toybench(0.25, 0.5))
    job(sweep, 1, ["optimizer.lr=1e-2"], toybench(0.75, 0.5))
    text = report.report(sweep)
    assert (
        "tradeoff.png: 2 jobs on applications.toybench.final.reconstruction (x) vs "
        "applications.toybench.final.editability (y)"
    ) in text
    assert "falls back" not in text
    fig, drawn = report.draw(
        report.find_jobs(sweep), *report.TRADEOFF_AXES[0][:2], ["optimizer.lr"], "two jobs"
    )
    ax = fig.axes[0]
    assert drawn == 2 and ax.get_xlim() == (-0.03, 1.03)
    start = [c for c in ax.collections if c.get_label() == "the initializer word"]
    assert start and start[0].get_offsets().tolist() == [[0.0, 0.25]]


def overlapping_ticks(axis) -> list[tuple[str, str]]:
    fig = axis.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def test_losses_that_differ_in_their_fourth_digit_get_tick_labels_that_do_not_overlap(tmp_path):
    sweep = tmp_path / "sweep"
    for i, loss in enumerate((0.13661, 0.13634, 0.13652, 0.13618)):
        job(sweep, i, [f"optimizer.lr={i}e-3"], {"final_loss": loss,
            "word": {"word/cosine_to_init": 0.35 - 0.02 * i}})  # fmt: skip
    x, y, note = report.choose_axes(report.find_jobs(sweep))
    assert (x, y) == (report.FALLBACK_X, report.FALLBACK_Y) and "falls back" in note
    fig, _ = report.draw(report.find_jobs(sweep), x, y, ["optimizer.lr"], "losses")
    ax = fig.axes[0]
    assert overlapping_ticks(ax.xaxis) == [] and overlapping_ticks(ax.yaxis) == []
    assert len([t for t in ax.get_xticklabels() if t.get_text()]) >= 3


def test_each_jobs_grid_links_to_its_png_at_full_size(tmp_path):
    sweep = tmp_path / "sweep"
    folder = job(sweep, 0, ["optimizer.lr=1e-3"], toybench(0.25, 0.5))
    grid = folder / "samples" / "toybench" / "final.png"
    grid.parent.mkdir(parents=True)
    Image.new("RGB", (2000, 300), "red").save(grid)
    out = tmp_path / "elsewhere"
    report.report(sweep, out=out)

    hrefs = links(out / "report.html")
    assert hrefs == [os.path.relpath(grid, out)] * 2  # the thumbnail and the caption
    assert (out / hrefs[0]).resolve() == grid.resolve()


def test_labels_of_jobs_that_land_close_together_do_not_overlap(tmp_path):
    sweep = tmp_path / "sweep"
    for i, (rec, edit) in enumerate([(0.1818, 0.2), (0.197, 0.2308), (0.197, 0.2308)]):
        job(sweep, i, [f"optimizer.lr={i}e-3", "word.num_vectors=1"], toybench(rec, edit))
    keys = ["optimizer.lr", "word.num_vectors"]
    fig, _ = report.draw(report.find_jobs(sweep), *report.TRADEOFF_AXES[0][:2], keys, "close")
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 3
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_the_committed_sweep_demo_report_links_grids_that_are_there():
    demo = Path(__file__).resolve().parents[1] / "experiments" / "results" / "sweep_demo"

    hrefs = links(demo / "report.html")
    assert len(set(hrefs)) == 4  # one grid per job
    assert all((demo / href).is_file() for href in hrefs)
    assert "applications.toybench.final.reconstruction (x)" in (demo / "report.md").read_text()


def run_sweep_demo(root: Path, *args: str) -> list[str]:
    """`experiments/sweep_demo.sh` run in a copy of the repository's layout under ``root``, with a
    stand-in Python that logs its arguments: where each command would write, nothing trained."""
    script = root / "experiments" / "sweep_demo.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        (Path(__file__).resolve().parents[1] / "experiments" / "sweep_demo.sh").read_text()
    )
    python = root / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {root / "calls.txt"}\n')
    python.chmod(0o755)
    result = subprocess.run(["bash", str(script), *args], env={**os.environ, "PY": str(python)},
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return (root / "calls.txt").read_text().splitlines()


def test_the_sweep_demo_writes_under_multirun_and_only_record_rewrites_the_committed_demo(
    tmp_path,
):
    committed = tmp_path / "experiments" / "results" / "sweep_demo"
    (committed / "0").mkdir(parents=True)
    (committed / "report.md").write_text("the committed demo")

    sweep, report = run_sweep_demo(tmp_path, "tracker=wandb")
    out = sweep.split("hydra.sweep.dir=")[1].split()[0]
    assert out.startswith("multirun/sweep_demo/") and report == f"-m tirun.report {out}"
    assert sweep.endswith("tracker=wandb") and (committed / "report.md").exists()

    sweep, report = run_sweep_demo(tmp_path, "--record")[2:]
    assert (
        sweep.endswith("hydra.sweep.dir=experiments/results/sweep_demo") and "--record" not in sweep
    )
    assert report == "-m tirun.report experiments/results/sweep_demo"
    assert not committed.exists()  # emptied for the new record
