"""ToyBench's report: one or more runs (a recipe each), side by side.

From each run's job folders (`metrics.json` with `applications.toybench`) it writes, into the
report folder: `per_concept.csv` and `per_concept.md` (every concept × seed), `summary.md`
(means with 95% bootstrap intervals, the worst word, the steps and seconds each run needs to
reach 90% and 95% of the reference run's final reconstruction, and each concept against its text
ceiling: what the model draws from the concept's attributes' names), `curves.png`
(reconstruction against steps and against seconds), `tradeoff.png` (reconstruction against
editability, a point per word), `plane.png` (each run's mean with its intervals, and the concepts
drawn from their names, on two planes: reconstruction against ToyBench's editability, and
against the paper's, prompt adherence), and `words/` (every final word, diffusers format).

Adherence and context leak are read from the words' outcomes; runs scored before they existed
show "–" (rescore their words with `python -m tirun.toybench --words REPORT/words/RUN`).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

from tirun.files import atomic_write
from tirun.toybench import answer
from tirun.toybench.ceiling import read_ceilings
from tirun.toybench.stats import bootstrap_mean, bootstrap_paired_difference

TARGETS = (0.90, 0.95)
METRICS = ("reconstruction", "editability", "adherence", "leak")
# The editability axes `plane.png` draws against reconstruction, a panel each, with their labels:
# ToyBench's (the edit *and* the concept) and the paper's (the edit, concept or not).
EDITABILITY_AXES = (("editability", "editability (ToyBench: edit and concept)"),
          ("adherence", "prompt adherence (the paper's editability)"))  # fmt: skip


# Kinds of concept a result is also read by (the concept's difficulty, recorded with each word):
# what a recipe gains or loses may sit in one kind only. A word whose run recorded no difficulty
# (runs of an earlier toy world, docs/history.md) counts as an object or a style only.
def _difficulty(key: str, test):
    return lambda w: w.difficulty is not None and test(w.difficulty[key])


KINDS = (
    ("objects", lambda w: w.kind == "object"),
    ("styles", lambda w: w.kind == "style"),
    ("all named", _difficulty("unnamed", lambda n: n == 0)),
    ("unnamed detail", _difficulty("unnamed", lambda n: n > 0)),
    ("no shared context", _difficulty("context", lambda n: n == 0)),
    ("a shared context", _difficulty("context", lambda n: n > 0)),
    ("two attributes", _difficulty("defines", lambda n: n == 2)),
    ("three or more", _difficulty("defines", lambda n: n >= 3)),
)


@dataclass
class ScoredWord:
    """A word ToyBench scored, one concept × seed of a run: its curve and final outcomes."""

    run: str
    concept: str
    kind: str
    seed: int
    curve: list[dict]
    outcomes: dict[str, list[int]]
    file: Path
    folder: Path
    difficulty: dict[str, int] | None = None  # the concept's, as scored (None: not recorded)

    @property
    def final(self) -> dict:
        return self.curve[-1]


def load_run(folder: Path, name: str | None = None) -> list[ScoredWord]:
    """The words of a ToyBench run folder (a Hydra multirun of `+toybench=...` jobs)."""
    words = []
    for metrics_file in sorted(folder.rglob("metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        bench = metrics.get("applications", {}).get("toybench")
        if not bench:
            continue
        config = metrics_file.parent / "config.yaml"
        seed, file = int(bench.get("seed", 0)), Path(bench["file"])
        own = metrics_file.parent / file.name
        if own.is_file():  # the job's folder may have moved (into RUN/seed0) since it ran, and
            file = own  # the path it recorded may now hold a later job's word
        if config.is_file():
            from omegaconf import OmegaConf

            seed = int(OmegaConf.select(OmegaConf.load(config), "train.seed", default=0))
        words.append(
            ScoredWord(
                name or folder.name,
                bench["concept"],
                bench["kind"],
                seed,
                bench["curve"],
                bench["outcomes"],
                file,
                metrics_file.parent,
                bench.get("difficulty"),
            )
        )
    if not words:
        raise ValueError(
            f"no ToyBench jobs (metrics.json with applications.toybench) under {folder}"
        )
    return sorted(words, key=lambda w: (w.concept, w.seed))


def measured(words: list[ScoredWord], metric: str) -> list[ScoredWord]:
    """The words with outcomes of ``metric``: every word for adherence once scored with it, only
    the concepts with a shared context for leak."""
    return [w for w in words if w.outcomes.get(metric)]


def interval(words: list[ScoredWord], metric: str) -> tuple[float, float, float] | None:
    """The mean of ``metric`` over ``words`` with its 95% bootstrap interval; None when no word
    has outcomes of it."""
    by_concept: dict[str, list[list[int]]] = {}
    for word in measured(words, metric):
        by_concept.setdefault(word.concept, []).append(word.outcomes[metric])
    return bootstrap_mean(by_concept) if by_concept else None


def _cell(value: tuple[float, float, float] | None, sign: str = "") -> str:
    """``mean (low–high)``, or with ``sign="+"`` ``+mean (+low to +high)``; "–" for None."""
    if value is None:
        return "–"
    if sign:
        return f"{value[0]:+.3f} ({value[1]:+.3f} to {value[2]:+.3f})"
    return f"{value[0]:.3f} ({value[1]:.3f}–{value[2]:.3f})"


def reach(words: list[ScoredWord], targets: dict[str, float], axis: str) -> float | None:
    """The first ``axis`` (step or seconds) at which the run's mean over its words of every
    metric in ``targets`` (e.g. ``{"reconstruction": 0.6}``) reaches its target; None when it
    never does. Words are scored at the same steps."""
    steps = sorted({p["step"] for w in words for p in w.curve})
    for step in steps:
        points = [p for w in words for p in w.curve if p["step"] == step]
        if len(points) < len(words):
            continue
        if all(statistics.fmean(p[m] for p in points) >= t for m, t in targets.items()):
            return statistics.fmean(p[axis] for p in points) if axis == "seconds" else step
    return None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "never" if value is None else f"{value:.{digits}f}"


def ceiling_fraction(words: list[ScoredWord], ceilings: dict[str, float]) -> float | None:
    """The mean over words of final reconstruction / the concept's text ceiling (words of a
    concept the model cannot draw from its names at all are left out); None without ceilings."""
    ratios = [w.final["reconstruction"] / ceilings[w.concept] for w in words
              if ceilings.get(w.concept)]  # fmt: skip
    return statistics.fmean(ratios) if ratios else None


def ceiling_lines(
    runs: dict[str, list[ScoredWord]],
    ceilings: dict[str, float],
    reachability: dict[str, float] | None = None,
) -> list[str]:
    """Each concept's text ceiling and reachability beside each run's mean final
    reconstruction on it."""
    concepts = sorted({w.concept for ws in runs.values() for w in ws})
    reachability = reachability or {}
    lines = [
        "",
        "**Each concept against its text ceiling and its answer** (text ceiling: what the model "
        "draws from the concept's attributes' names; reachability: from the answer, the names "
        "with the retired words put back; `python -m tirun.toybench.ceiling`; each run's mean "
        "final reconstruction over seeds):",
        "",
        "| concept | text ceiling | reachability | " + " | ".join(runs) + " |",
        "|---|---:|---:|" + "---:|" * len(runs),
    ]
    for concept in concepts:
        cells = []
        for words in runs.values():
            mine = [w.final["reconstruction"] for w in words if w.concept == concept]
            cells.append(f"{statistics.fmean(mine):.3f}" if mine else "–")
        ceiling, reachable = ceilings.get(concept), reachability.get(concept)
        answer_cell = "–" if reachable is None else f"{reachable:.3f}"
        lines.append(f"| {concept} | {_fmt(ceiling)} | {answer_cell} | " + " | ".join(cells) + " |")
    return lines


def word_distance(word: ScoredWord) -> dict[str, float | None]:
    """The word's distance to its concept's known answer (`tirun.toybench.answer`)."""
    from tirun.models import PACKAGED_MODELS

    if not Path(word.file).is_file():
        return {"answer_cosine": None, "retired_cosine": None}
    return answer.distance(word.concept, answer.word_vectors(word.file), PACKAGED_MODELS["toy"])


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def answer_lines(runs: dict[str, list[ScoredWord]]) -> list[str]:
    """Each run's mean distance to the answer, beside the initializer's (the start of every
    one-vector word); [] where the model keeps no answer."""
    from tirun.models import PACKAGED_MODELS
    from tirun.toyworld.concepts import CONCEPTS

    model = PACKAGED_MODELS["toy"]
    rows = answer.answer_rows(model)
    if not rows:
        return []
    lines = [
        "",
        "**Distance to the answer** (the cosine of the word's vectors to the embedding rows of "
        "the words pretraining said for the concept, `tirun/toybench/answer.py`: the best vector "
        "for each word, averaged; retired: the unnamed values' words only):",
        "",
        "| run | answer cosine | retired words' cosine | initializer's answer cosine |",
        "|---|---:|---:|---:|",
    ]
    for name, words in runs.items():
        distances = [word_distance(w) for w in words]
        start = []
        for w in words:
            initializer = CONCEPTS[w.concept].initializer
            if initializer in rows:
                start.append(answer.distance(w.concept, rows[initializer][None], model))
        lines.append(
            f"| {name} | {_fmt(_mean([d['answer_cosine'] for d in distances]))} | "
            f"{_fmt(_mean([d['retired_cosine'] for d in distances]))} | "
            f"{_fmt(_mean([d['answer_cosine'] for d in start]))} |"
        )
    return lines


def summary_lines(
    runs: dict[str, list[ScoredWord]],
    reference: str,
    ceilings: dict[str, float] | None = None,
    reachability: dict[str, float] | None = None,
) -> list[str]:
    ceilings = ceilings or {}
    ref_final = statistics.fmean(w.final["reconstruction"] for w in runs[reference])
    lines = [
        "| run | words | reconstruction (95% CI) | editability (95% CI) | adherence (95% CI) | "
        "context leak (95% CI) | fraction of the ceiling | worst word (recon.) | steps | seconds | "
        + " | ".join(f"steps to {int(t * 100)}% | s to {int(t * 100)}%" for t in TARGETS)
        + " |",
        "|---|---:|---|---|---|---|---:|---|---:|---:|" + "---:|---:|" * len(TARGETS),
    ]
    for name, words in runs.items():
        cells = " | ".join(_cell(interval(words, m)) for m in METRICS)
        worst = min(words, key=lambda w: w.final["reconstruction"])
        reached = []
        for target in TARGETS:
            level = target * ref_final
            reached += [
                _fmt(reach(words, {"reconstruction": level}, "step"), 0),
                _fmt(reach(words, {"reconstruction": level}, "seconds"), 1),
            ]
        lines.append(
            f"| {name} | {len(words)} | {cells} | {_fmt(ceiling_fraction(words, ceilings))} | {worst.concept} s{worst.seed}: "
            f"{worst.final['reconstruction']:.3f} | "
            f"{statistics.fmean(w.final['step'] for w in words):.0f} | "
            f"{statistics.fmean(w.final['seconds'] for w in words):.1f} | "
            + " | ".join(reached)
            + " |"
        )
    lines += [
        "",
        f"Targets are fractions of the reference run `{reference}`'s final mean reconstruction "
        f"({ref_final:.3f}). Intervals: bootstrap over concepts, seeds and samples (2000 draws). "
        "Fraction of the ceiling: the mean over words of reconstruction / the concept's text "
        "ceiling. Adherence: the edits' samples that show what the prompt adds, concept or not "
        "(the paper's editability); context leak: the samples of edits asking for another "
        "context than the training images share that still show theirs (concepts with a shared "
        'context only; "–" where none has one).',
    ]
    lines += paired_lines(runs, reference)
    lines += kind_lines(runs)
    if ceilings:
        lines += ceiling_lines(runs, ceilings, reachability or {})
    lines += answer_lines(runs)
    return lines


def kind_lines(runs: dict[str, list[ScoredWord]]) -> list[str]:
    """Each run's means by kind of concept (`KINDS`): objects and styles, with and without
    unnamed detail or a shared context, two attributes or more; a word whose run recorded no
    difficulty counts in the first two only."""
    rows = []
    for kind, chosen_by in KINDS:
        for name, words in runs.items():
            chosen = [w for w in words if chosen_by(w)]
            if chosen:
                cells = " | ".join(_cell(interval(chosen, m)) for m in METRICS)
                concepts = len({w.concept for w in chosen})
                rows.append(f"| {kind} | {name} | {concepts} | {len(chosen)} | {cells} |")
    if not rows:
        return []
    return ["", "**By kind of concept**", "",
            "| kind | run | concepts | words | reconstruction | editability | adherence | "
            "context leak |", "|---|---|---:|---:|---|---|---|---|", *rows]  # fmt: skip


def paired(
    reference: list[ScoredWord], words: list[ScoredWord]
) -> list[tuple[ScoredWord, ScoredWord]]:
    """(reference word, other word) for each concept and seed both runs trained."""
    ref = {(w.concept, w.seed): w for w in reference}
    return [(ref[(w.concept, w.seed)], w) for w in words if (w.concept, w.seed) in ref]


def paired_finals(
    pairs: list[tuple[ScoredWord, ScoredWord]], metric: str
) -> dict[str, list[tuple[float, float]]]:
    """Per concept, per seed, (the reference's final ``metric``, the other's), over the pairs
    where both words have it: what `bootstrap_paired_difference` reads."""
    finals: dict[str, list[tuple[float, float]]] = {}
    for a, b in pairs:
        if a.final.get(metric) is not None and b.final.get(metric) is not None:
            finals.setdefault(a.concept, []).append((a.final[metric], b.final[metric]))
    return finals


def paired_lines(runs: dict[str, list[ScoredWord]], reference: str) -> list[str]:
    """Each run against the reference on the words both trained (same concept and seed): the
    mean paired difference of each metric with its bootstrap interval ("–" where a run lacks
    the metric), and the wall time as a fraction ("–" for rescored words, which have none)."""
    rows = []
    for name, words in runs.items():
        pairs = paired(runs[reference], words)
        if name == reference or not pairs:
            continue
        cells = []
        for metric in METRICS:
            finals = paired_finals(pairs, metric)
            cells.append(_cell(bootstrap_paired_difference(finals) if finals else None, "+"))
        before = statistics.fmean(a.final["seconds"] or 0.0 for a, _ in pairs)
        after = statistics.fmean(b.final["seconds"] or 0.0 for _, b in pairs)
        time = f"{after / before:.2f}" if before > 0 and after > 0 else "–"
        rows.append(f"| {name} | {len(pairs)} | {' | '.join(cells)} | {time} |")
    if not rows:
        return []
    return [
        "",
        f"**Paired with `{reference}`** (same concepts and seeds; the difference's 95% bootstrap "
        "interval over concepts, then seeds):",
        "",
        "| run | pairs | Δ reconstruction | Δ editability | Δ adherence | Δ context leak | "
        "wall time / reference |",
        "|---|---:|---|---|---|---|---:|",
        *rows,
    ]


def per_concept_rows(
    runs: dict[str, list[ScoredWord]],
    ceilings: dict[str, float],
    reachability: dict[str, float] | None = None,
) -> tuple[list[str], list[list]]:
    reachability = reachability or {}
    attributes = sorted({a for ws in runs.values() for w in ws for a in w.final["attributes"]})
    head = ["run", "concept", "kind", "seed", "steps", "seconds", *METRICS, "text_ceiling",
            "reachability", "answer_cosine", "retired_cosine"]  # fmt: skip
    head += [f"attr.{a}" for a in attributes]
    rows = []

    def cell(value: float | None) -> float | str:
        return round(value, 4) if value is not None else ""

    for name, words in runs.items():
        for w in words:
            f, distance = w.final, word_distance(w)
            rows.append(
                [name, w.concept, w.kind, w.seed, f["step"], round(f["seconds"] or 0.0, 1),
                 *(cell(f.get(m)) for m in METRICS), cell(ceilings.get(w.concept)),
                 cell(reachability.get(w.concept)), cell(distance["answer_cosine"]),
                 cell(distance["retired_cosine"])]
                + [round(f["attributes"][a], 4) if a in f["attributes"] else "" for a in attributes]
            )  # fmt: skip
    return head, rows


def plot_curves(path: Path, runs: dict[str, list[ScoredWord]]) -> None:
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4), dpi=120)
    for name, words in runs.items():
        steps = sorted({p["step"] for w in words for p in w.curve})
        xs, secs, means = [], [], []
        for step in steps:
            points = [p for w in words for p in w.curve if p["step"] == step]
            if len(points) == len(words):
                xs.append(step)
                secs.append(statistics.fmean(p["seconds"] for p in points))
                means.append(statistics.fmean(p["reconstruction"] for p in points))
        axes[0].plot(xs, means, marker="o", label=name)
        axes[1].plot(secs, means, marker="o", label=name)
    for ax, label in zip(axes, ("training steps", "training seconds"), strict=True):
        ax.set_xlabel(label)
        ax.set_ylabel("reconstruction (mean over words)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("ToyBench: reconstruction along training", fontsize=10)
    _save(fig, path)


def plot_tradeoff(path: Path, runs: dict[str, list[ScoredWord]]) -> None:
    fig, ax = _pyplot().subplots(figsize=(6, 4.5), dpi=120)
    for name, words in runs.items():
        ax.scatter(
            [w.final["reconstruction"] for w in words],
            [w.final["editability"] for w in words],
            label=name,
            alpha=0.7,
        )
    ax.set_xlabel("reconstruction")
    ax.set_ylabel("editability")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("ToyBench: one point per concept × seed (final word)", fontsize=9)
    _save(fig, path)


def plot_plane(
    path: Path,
    runs: dict[str, list[ScoredWord]],
    ceilings: dict[str, float],
    named: dict[str, dict[str, float]],
) -> None:
    """The paper's comparison of variants, on ToyBench's plane and on the paper's: each run's
    mean reconstruction against its mean editability (left) and adherence (right) with their
    95% intervals, and "human captions" (the concepts drawn from their names: the text ceiling
    and its named edits) over the same concepts.

    Args:
        path: the PNG to write.
        runs: each run's words.
        ceilings: each concept's text ceiling (reconstruction from its names).
        named: per plane's metric (``editability``, ``adherence``), each concept's named edits.
    """
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4.8), dpi=120)
    concepts = sorted({w.concept for ws in runs.values() for w in ws})
    for ax, (metric, label) in zip(axes, EDITABILITY_AXES, strict=True):
        for name, words in runs.items():
            rec, y = interval(words, "reconstruction"), interval(words, metric)
            if y is None:
                continue
            ax.errorbar(rec[0], y[0], xerr=[[rec[0] - rec[1]], [rec[2] - rec[0]]],
                        yerr=[[y[0] - y[1]], [y[2] - y[0]]], marker="o", capsize=3,
                        label=name)  # fmt: skip
        edits = named.get(metric, {})
        if concepts and all(c in ceilings and c in edits for c in concepts):
            ax.scatter([statistics.fmean(ceilings[c] for c in concepts)],
                       [statistics.fmean(edits[c] for c in concepts)], marker="*", s=160,
                       color="black", label="human captions (text ceiling)", zorder=3)  # fmt: skip
        ax.set_xlabel("reconstruction")
        ax.set_ylabel(label)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("ToyBench: each run's mean with its 95% interval, on two planes", fontsize=10)
    _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    _pyplot().close(fig)


def report(
    out: Path,
    folders: list[Path],
    names: list[str] | None = None,
    ceilings: dict[str, float] | None = None,
    named: dict[str, dict[str, float]] | None = None,
) -> str:
    """Write the report of ``folders`` (the first is the reference) into ``out``; returns the
    summary's Markdown.

    Args:
        out: the report folder.
        folders: ToyBench run folders; the first is the reference the others are paired with.
        names: the runs' names (default: the folders').
        ceilings: each concept's text ceiling (default: the packaged toy model's).
        named: each concept's named edits' editability and adherence, by metric (default: the
            packaged toy model's).
    """
    names = names or [f.name for f in folders]
    runs = {n: load_run(f, n) for n, f in zip(names, folders, strict=True)}
    return write_report(out, runs, ceilings, named)


def write_report(
    out: Path,
    runs: dict[str, list[ScoredWord]],
    ceilings: dict[str, float] | None = None,
    named: dict[str, dict[str, float]] | None = None,
    copy_words: bool = True,
) -> str:
    """Write the report of ``runs`` (the first is the reference) into ``out``; returns the
    summary's Markdown. ``report`` reads the runs from their folders; a script that has the
    words already (e.g. rebuilt from an earlier report's table) calls this, with
    ``copy_words=False`` when the word files already sit in that report's words/."""
    from tirun.models import PACKAGED_MODELS

    names = list(runs)
    if ceilings is None:
        ceilings = read_ceilings(PACKAGED_MODELS["toy"])
        named = {m: read_ceilings(PACKAGED_MODELS["toy"], m) for m, _ in EDITABILITY_AXES}
    reachability = read_ceilings(PACKAGED_MODELS["toy"], "reachability")
    out.mkdir(parents=True, exist_ok=True)
    head, rows = per_concept_rows(runs, ceilings, reachability)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([head, *rows])
    atomic_write(out / "per_concept.csv", lambda tmp: tmp.write_text(buffer.getvalue()))
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    atomic_write(out / "per_concept.md", lambda tmp: tmp.write_text("\n".join(table) + "\n"))
    plot_curves(out / "curves.png", runs)
    plot_tradeoff(out / "tradeoff.png", runs)
    plot_plane(out / "plane.png", runs, ceilings, named or {})
    # words/ holds this report's runs only: a run an earlier report compared is not left there
    shutil.rmtree(out / "words", ignore_errors=True)
    for name, words in runs.items() if copy_words else ():
        for w in words:
            target = out / "words" / name / f"{w.concept}_seed{w.seed}.safetensors"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(w.file, target)
    text = "\n".join(
        ["# ToyBench", "", *summary_lines(runs, names[0], ceilings, reachability), "",
         "Files: per_concept.md/.csv (every word), curves.png, tradeoff.png, plane.png (each run's "
         "mean with its interval)" + (", words/ (diffusers format)." if copy_words else ".")]
    ) + "\n"  # fmt: skip
    atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text))
    return text
