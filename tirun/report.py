"""`python -m tirun.report SWEEP_DIR`: one table and one trade-off plot for a whole sweep.

Every job folder of a Hydra multirun holds `.hydra/overrides.yaml` and, once it ran, a
`metrics.json` (`status: failed` and the error when it did not finish). The report gathers
them into `report.csv` and `report.md`, draws the paper's reconstruction-vs-editability figure
as `tradeoff.png`, and writes `report.html`: one page (pictures inlined, opens offline) with a
sortable table of every job's settings and scores, each job's sample grid beside it (a link to
the PNG at full size), and the plot. A failed or killed job is listed as failed, the others
still count.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from tirun.files import atomic_write, flatten

# The reconstruction-vs-editability axes `tradeoff.png` draws, the first pair some job has:
# ToyBench's scores of the final word (`application=toybench` jobs, the demo sweep's), then the
# toy applications' oracle matches (variation's against synthesis'). Each pair (x, y) comes with
# the initializer word's place (its scores in the same jobs), and in [0, 1]: shares of samples
# the oracle reads right.
TRADEOFF_AXES = (
    ("applications.toybench.final.reconstruction", "applications.toybench.final.editability",
     "applications.toybench.initializer.reconstruction",
     "applications.toybench.initializer.editability"),
    ("applications.variation.concept_match", "applications.synthesis.concept_match",
     "applications.variation.baseline_concept_match",
     "applications.synthesis.baseline_concept_match"),
)  # fmt: skip
# Without application scores: a closer fit (lower loss) against staying near the initializer.
FALLBACK_X = "final_loss"
FALLBACK_Y = "word.word/cosine_to_init"


@dataclass
class Job:
    name: str
    folder: Path
    overrides: dict[str, str]
    metrics: dict = field(default_factory=dict)
    optimized_metric: str | None = None

    @property
    def status(self) -> str:
        return str(self.metrics.get("status", "failed"))

    def value(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return None
        return float(value)


def find_jobs(sweep: Path) -> list[Job]:
    """Job folders under `sweep` (those with Hydra's `.hydra/overrides.yaml`), by job number."""
    folders = {p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml")}
    jobs = []
    for folder in sorted(
        folders,
        key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, str(p)),
    ):
        overrides = {}
        for item in OmegaConf.load(folder / ".hydra" / "overrides.yaml"):
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
        metrics_file = folder / "metrics.json"
        if metrics_file.exists():
            metrics = {"status": "finished", **flatten(json.loads(metrics_file.read_text()))}
        else:
            metrics = {
                "status": "failed",
                "error": "no metrics.json: crashed, killed or still running",
            }
        config_file = folder / ".hydra" / "config.yaml"
        optimized = (
            OmegaConf.load(config_file).get("optimized_metric") if config_file.exists() else None
        )
        jobs.append(Job(str(folder.relative_to(sweep)), folder, overrides, metrics, optimized))
    return jobs


def varying(jobs: list[Job]) -> list[str]:
    """The override keys whose value differs between jobs (all of them if none differ)."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    swept = [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]
    return swept or keys


def best_job(
    jobs: list[Job], sweep: Path, metric: str | None, direction: str | None
) -> tuple[Job | None, str]:
    """The best finished job by `metric`, and a line that says how it was chosen.

    An Optuna sweep's own verdict (`optimization_results.yaml`) wins when present.
    """
    results = sweep / "optimization_results.yaml"
    if results.exists():
        best = OmegaConf.to_container(OmegaConf.load(results))
        params = {str(k): v for k, v in best.get("best_params", {}).items()}
        for job in jobs:
            if all(same(job.overrides.get(k), v) for k, v in params.items()):
                return (
                    job,
                    f"best trial (Optuna): job {job.name} {params} = {best.get('best_value')}",
                )
        return None, f"best trial (Optuna): {params} = {best.get('best_value')}"
    metric = metric or next((j.optimized_metric for j in jobs if j.optimized_metric), None)
    scored = [j for j in jobs if j.status == "finished" and j.value(metric or "") is not None]
    if not metric or not scored:
        return None, ""
    direction = (
        direction or sweep_direction(sweep) or ("minimize" if "loss" in metric else "maximize")
    )
    pick = min if direction.startswith("min") else max
    job = pick(scored, key=lambda j: j.value(metric))
    return (
        job,
        f"best job by {metric} ({direction}): job {job.name} ({override_text(job, varying(jobs))}) = {job.value(metric):.4g}",
    )


def same(text: str | None, value) -> bool:
    if text is None:
        return False
    try:
        return math.isclose(float(text), float(value), rel_tol=1e-9)
    except (TypeError, ValueError):
        return text == str(value)


def sweep_direction(sweep: Path) -> str | None:
    multirun = sweep / "multirun.yaml"
    if not multirun.exists():
        return None
    direction = OmegaConf.select(OmegaConf.load(multirun), "hydra.sweeper.direction", default=None)
    return str(direction).lower() if isinstance(direction, str) else None


def override_text(job: Job, keys: list[str]) -> str:
    return " ".join(f"{k.split('.')[-1]}={short(job.overrides.get(k, ''))}" for k in keys)


def choose_axes(
    jobs: list[Job], x: str | None = None, y: str | None = None
) -> tuple[str, str, str]:
    """The plot's metrics: the asked ones, or the first of `TRADEOFF_AXES` some job has both
    of; else the loss-based proxy, with a note that says so."""

    def present(a: str, b: str) -> bool:
        return any(j.value(a) is not None and j.value(b) is not None for j in jobs)

    asked = [(x, y)] if x and y else [plane[:2] for plane in TRADEOFF_AXES]
    found = next(((a, b) for a, b in asked if present(a, b)), None)
    if found:
        return *found, ""
    wanted = " or ".join(f"{a} and {b}" for a, b in asked)
    note = (
        f"no job has both {wanted}: the plot falls back to {FALLBACK_X} (reconstruction "
        f"proxy, lower = closer fit) vs {FALLBACK_Y} (editability proxy)"
    )
    return FALLBACK_X, FALLBACK_Y, note


def columns(jobs: list[Job], x: str, y: str) -> list[str]:
    """The Markdown table's metric columns: axes, optimized metric, toy score, loss, time, error."""
    optimized = [j.optimized_metric for j in jobs if j.optimized_metric]
    wanted = [x, y, *optimized, "oracle.concept_match", "final_loss", "steps", "wall_time_s"]
    present = [m for m in dict.fromkeys(wanted) if any(m in j.metrics for j in jobs)]
    return ["status", *present, "error"]


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def short(text: str) -> str:
    """An override value as typed, or 4 digits of an Optuna-sampled float."""
    try:
        return f"{float(text):.4g}" if len(text) > 10 else text
    except ValueError:
        return text


def markdown(jobs: list[Job], keys: list[str], metrics: list[str], lines: list[str]) -> str:
    head = ["job", *keys, *metrics]
    rows = [
        [
            job.name,
            *(short(job.overrides.get(k, "")) for k in keys),
            *(job.metrics.get(m) for m in metrics),
        ]
        for job in jobs
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out + [""] + [line for line in lines if line]) + "\n"


def write_csv(path: Path, jobs: list[Job], keys: list[str]) -> None:
    metric_keys = list(dict.fromkeys(["status", *(k for j in jobs for k in j.metrics)]))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["job", *keys, *metric_keys])
    for job in jobs:
        writer.writerow(
            [
                job.name,
                *(job.overrides.get(k, "") for k in keys),
                *(job.metrics.get(m, "") for m in metric_keys),
            ]
        )
    atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def plot(path: Path, jobs: list[Job], x: str, y: str, keys: list[str], title: str) -> int:
    """Write `draw`'s figure to ``path``; returns the count of jobs drawn."""
    import matplotlib.pyplot as plt

    fig, drawn = draw(jobs, x, y, keys, title)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return drawn


def draw(jobs: list[Job], x: str, y: str, keys: list[str], title: str):
    """The finished jobs on (x, y), each labelled with its swept values (and, on a plane of
    `TRADEOFF_AXES`, the initializer word's place): (the figure, the count of jobs drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    points = [(j, j.value(x), j.value(y)) for j in jobs if j.status == "finished"]
    points = [(j, a, b) for j, a, b in points if a is not None and b is not None]
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    labels = []
    for job, a, b in sorted(points, key=lambda p: -p[2]):  # top first: `_apart` moves down
        ax.scatter(a, b, color="tab:blue")
        labels.append(ax.annotate(override_text(job, keys), (a, b), textcoords="offset points",
                                  xytext=(5, 4), fontsize=7))  # fmt: skip
    plane = next((p for p in TRADEOFF_AXES if p[:2] == (x, y)), None)
    if plane:
        start = [(j.value(plane[2]), j.value(plane[3])) for j, _, _ in points]
        start = [(a, b) for a, b in start if a is not None and b is not None]
        if start:
            ax.scatter([statistics.fmean(a for a, _ in start)],
                       [statistics.fmean(b for _, b in start)], marker="x", color="black",
                       label="the initializer word")  # fmt: skip
            ax.legend(fontsize=7, loc="best")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
    else:
        ax.margins(0.2)
    ax.set_xlabel(f"reconstruction: {x}", fontsize=8)
    if "loss" in x:  # lower loss = closer fit: right stays "better reconstruction"
        ax.invert_xaxis()
        ax.set_xlabel(f"reconstruction: {x} (lower, to the right)", fontsize=8)
    ax.set_ylabel(f"editability: {y}", fontsize=8)
    # few, plain ticks: a loss that varies in its fourth digit would print long labels that
    # run into each other
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _apart(fig, labels)
    return fig, len(points)


def _apart(fig, labels: list) -> None:
    """Move each label down, a line at a time, until it clears the ones placed before it:
    jobs that land close together keep readable labels."""
    renderer = fig.canvas.get_renderer()
    placed = []
    for label in labels:
        for _ in range(len(labels)):
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            x, y = label.xyann
            label.xyann = (x, y - 9)
        placed.append(label.get_window_extent(renderer))


def job_picture(job: Job) -> Path | None:
    """The job's picture for the page: its application's comparison (or word, or ToyBench's
    final) grid, else its last validation grid."""
    for pattern in ("samples/*/comparison.png", "samples/*/word.png", "samples/*/final.png"):
        found = sorted(p for p in job.folder.glob(pattern) if p.parent.name != "validation")
        if found:
            return found[0]
    previews = sorted(job.folder.glob("samples/validation/step_*.png"))
    return previews[-1] if previews else None


def _inline(png: Path, width: int | None = None) -> str:
    """``png`` as a data URL; wider than ``width``, a thumbnail that wide (a JPEG: a grid of
    samples scaled down compresses badly as a PNG)."""
    picture = None
    if width:
        from PIL import Image

        picture = Image.open(png)
    if picture is None or picture.width <= width:
        return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    height = round(picture.height * width / picture.width)
    buffer = io.BytesIO()
    picture.convert("RGB").resize((width, height), Image.LANCZOS).save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


THUMBNAIL = 900  # pixels: the widest a grid is shown in the table (`img.grid`)
_SORT_SCRIPT = """
document.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const up = th.dataset.order !== "up";
  th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.order);
  th.dataset.order = up ? "up" : "down";
  const key = row => row.cells[column].dataset.value ?? row.cells[column].textContent;
  const rows = [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
    const order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
    return up ? order : -order;
  });
  rows.forEach(row => body.appendChild(row));
}));
"""
_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #eee; cursor: pointer; user-select: none; }
th[data-order="up"]::after { content: " \\25B2"; } th[data-order="down"]::after { content: " \\25BC"; }
td.failed { color: #b00; }
img { max-width: 100%; height: auto; }
img.grid { width: 100%; min-width: 480px; max-width: 900px; }
a.full { font-size: 12px; }
"""


def write_html(
    path: Path, title: str, jobs: list[Job], keys: list[str], metrics: list[str], lines: list[str],
    figures: list[tuple[str, Path]],
) -> None:  # fmt: skip
    """report.html: the sortable table with each job's grid, the notes and the figures (a
    heading and a PNG each; missing ones are left out)."""
    # long dotted names may wrap at their dots, leaving the width to the grids
    head = "".join(
        f"<th>{html.escape(h).replace('.', '.<wbr>')}</th>"
        for h in ["job", *keys, *metrics, "samples"]
    )
    rows = []
    for job in jobs:
        cells = [f"<td>{html.escape(job.name)}</td>"]
        cells += [f"<td>{html.escape(short(job.overrides.get(k, '')))}</td>" for k in keys]
        for m in metrics:
            value = job.metrics.get(m)
            number = job.value(m)
            attr = f' data-value="{number}"' if number is not None else ""
            css = ' class="failed"' if m == "status" and value != "finished" else ""
            cells.append(f"<td{attr}{css}>{html.escape(cell(value))}</td>")
        picture = job_picture(job)
        if picture:  # a thumbnail in the page; the PNG itself, at full size, a click away
            link = html.escape(Path(os.path.relpath(picture, path.parent)).as_posix())
            cells.append(
                f'<td><a href="{link}"><img class="grid" alt="samples of job '
                f'{html.escape(job.name)}" src="{_inline(picture, THUMBNAIL)}"></a><br>'
                f'<a class="full" href="{link}">{link} (full size)</a></td>'
            )
        else:
            cells.append("<td>no samples</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in lines if line)
    plot_tag = "".join(
        f'<h2>{html.escape(heading)}</h2><img alt="{html.escape(heading)}" src="{_inline(png)}">'
        for heading, png in figures
        if png.is_file()
    )
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<ul>{notes}</ul><p>Click a column heading to sort.</p>"
        f'<table id="jobs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f"{plot_tag}<script>{_SORT_SCRIPT}</script></body></html>\n"
    )
    atomic_write(path, lambda tmp: tmp.write_text(page))


def toybench_figures(sweep: Path, out: Path) -> list[tuple[str, Path]]:
    """A ToyBench run's own figures (the ToyBench report draws the same): its curves against
    steps and seconds, and its words' reconstruction against editability."""
    from tirun.toybench.report import load_run, plot_curves, plot_tradeoff

    runs = {sweep.name: load_run(sweep)}
    plot_curves(out / "toybench_curves.png", runs)
    plot_tradeoff(out / "toybench_tradeoff.png", runs)
    return [
        ("ToyBench: reconstruction along training", out / "toybench_curves.png"),
        ("ToyBench: reconstruction vs editability per word", out / "toybench_tradeoff.png"),
    ]


def report(
    sweep: Path,
    x: str | None = None,
    y: str | None = None,
    best: str | None = None,
    direction: str | None = None,
    out: Path | None = None,
) -> str:
    """Write report.csv, report.md and tradeoff.png for `sweep`; returns the Markdown.

    Args:
        sweep: a multirun folder (`hydra.sweep.dir`).
        x: reconstruction metric (dotted name in the jobs' metrics); default: `TRADEOFF_AXES`.
        y: editability metric.
        best: metric that names the best job (default: the jobs' `optimized_metric`).
        direction: `maximize` or `minimize` for `best` (default: the sweeper's, else by name).
        out: where the files go (default: `sweep`).
    """
    jobs = find_jobs(sweep)
    if not jobs:
        raise ValueError(f"no job folders (with .hydra/overrides.yaml) under {sweep}")
    out = out or sweep
    keys = varying(jobs)
    x, y, note = choose_axes(jobs, x, y)
    _, best_line = best_job(jobs, sweep, best, direction)
    failed = [j.name for j in jobs if j.status != "finished"]
    write_csv(out / "report.csv", jobs, keys)
    drawn = plot(out / "tradeoff.png", jobs, x, y, keys, f"{sweep.name}: {len(jobs)} jobs")
    lines = [
        f"{len(jobs)} jobs, {len(jobs) - len(failed)} finished"
        + (f", failed: {', '.join(failed)}" if failed else ""),
        best_line,
        note,
        f"tradeoff.png: {drawn} jobs on {x} (x) vs {y} (y)",
    ]
    metric_columns = columns(jobs, x, y)
    text = markdown(jobs, keys, metric_columns, lines)
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(f"# Sweep {sweep}\n\n{text}"))
    figures = [("Reconstruction vs editability", out / "tradeoff.png")]
    # A ToyBench run (one recipe over concepts and seeds) also gets its own figures, which
    # average over the jobs: over jobs of different settings that mean would say nothing.
    bench_run = set(keys) <= {"dataset.concept", "train.seed"}
    if bench_run and any("applications.toybench.concept" in job.metrics for job in jobs):
        figures += toybench_figures(sweep, out)
    write_html(
        out / "report.html", f"Sweep {sweep}", jobs, keys, metric_columns, lines, figures
    )  # fmt: skip
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tirun.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep", type=Path, help="the multirun folder (hydra.sweep.dir)")
    default = " or ".join(plane[0] for plane in TRADEOFF_AXES)
    parser.add_argument("--x", default=None, help=f"reconstruction metric (default {default})")
    parser.add_argument("--y", default=None, help="editability metric (with --x)")
    parser.add_argument(
        "--best", default=None, help="metric naming the best job (default: optimized_metric)"
    )
    parser.add_argument("--direction", choices=["maximize", "minimize"], default=None)
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the sweep folder)"
    )
    args = parser.parse_args(argv)
    try:
        print(report(args.sweep, args.x, args.y, args.best, args.direction, args.out), end="")
    except ValueError as error:
        print(f"tirun.report: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {(args.out or args.sweep) / 'report.md'}, report.csv, report.html, tradeoff.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
