"""Set the trainer's thresholds on ToyBench's dev split (never on test).

    python -m experiments.calibrate RUN [RUN ...]      # toybench_runs/<dev run> folders

Reads dev runs made with the fixed-batch loss recorded (`train.early_stop.every=10
train.early_stop.threshold=0`, so they never stop and their whole budget is scored) and writes
`experiments/results/calibration.md`:

- **DVAR** (`train.early_stop.threshold`, `window`): for each setting, where each run would
  have stopped, which snapshot `keep=best` keeps (the lowest fixed-batch loss up to the stop),
  and its reconstruction (interpolated between the scored snapshots) against the best
  reconstruction the run reaches anywhere in its budget. The target: ≥ 90% of that best, on
  every word and on the words that learned their concept at all (best ≥ 0.25: for a word
  whose best is a few lucky samples, 90% of it is noise).
- **The saved word** (the last, or the one `train.early_stop.keep=validated` or `best` kept):
  its reconstruction against the best the run reaches at any scored step of its budget.
- **A shorter budget**: the word at each scored step, as if the run had stopped there, against
  the best of the whole budget (what stopping a fixed number of steps earlier would lose).
- **Health** (`train.norm_warn_ratio`): the word's norm over its reference norm (the larger of
  the vocabulary's typical norm and the word's start) at every scored snapshot, beside its
  editability, so the warning fires where editability falls.

`--chosen` reports only the settings the trainer now defaults to (what a test-split run is
reported at, once they are chosen on dev).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

from tirun import embeddings
from tirun.early_stop import EarlyStop
from tirun.toybench.report import ScoredWord, load_run

RESULTS = Path(__file__).parent / "results" / "calibration.md"
WINDOWS = (3, 5, 10)
THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
RATIO_BINS = (0, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 1e9)
LEARNED = 0.25  # a word whose best reconstruction is below this never learned its concept


def dvar_stop(history: list[tuple[int, float]], window: int, threshold: float) -> int | None:
    """The step at which DVAR stops on this fixed-batch history (None: it never does), replayed
    through the trainer's own rule, `tirun.early_stop.EarlyStop`."""
    rule = EarlyStop(every=1, window=window, threshold=threshold)
    return next((step for step, loss in history if rule.record(step, loss, [])), None)


def kept_step(history: list[tuple[int, float]], stop: int) -> int:
    """`keep=best`: the step of the lowest fixed-batch loss up to the stop."""
    return min((h for h in history if h[0] <= stop), key=lambda h: h[1])[0]


def at_step(curve: list[dict], step: int, metric: str = "reconstruction") -> float:
    """A curve's metric at ``step``, linearly interpolated between scored points."""
    points = sorted((p["step"], p[metric]) for p in curve)
    for (s0, v0), (s1, v1) in zip(points, points[1:], strict=False):
        if s0 <= step <= s1:
            return v0 + (v1 - v0) * (step - s0) / (s1 - s0) if s1 > s0 else v1
    return points[-1][1]


@functools.cache
def metrics_of(folder: Path) -> dict:
    """A job's `metrics.json`, read once: the tables below ask for it per setting and per word."""
    return json.loads((folder / "metrics.json").read_text())


def early_of(word: ScoredWord) -> dict:
    """What the job's trainer wrote of its early stop and kept word."""
    return metrics_of(word.folder).get("early_stop") or {}


def history_of(word: ScoredWord) -> list[tuple[int, float]]:
    return [(int(s), float(v)) for s, v in early_of(word).get("history", [])]


def budget_curve(word: ScoredWord) -> list[dict]:
    """The run's words along its whole budget: its curve, whose final point is the saved word,
    with the last word in that place when an earlier one was kept."""
    last = metrics_of(word.folder)["applications"]["toybench"].get("last_word")
    return word.curve if last is None else word.curve[:-1] + [last]


def best_in_budget(word: ScoredWord) -> float:
    """The best reconstruction of any word the run scored (the kept one included)."""
    points = budget_curve(word) + word.curve[-1:]
    return max(p["reconstruction"] for p in points if p["step"] > 0)


def fraction_row(label: str, fractions: list[float], bests: list[float]) -> str:
    """kept/best over runs: mean, how many reach 90%, the worst, and among learned words."""
    learned = [f for f, b in zip(fractions, bests, strict=True) if b >= LEARNED]
    return (
        f"{label} | {statistics.fmean(fractions):.3f} | "
        f"{sum(f >= 0.9 for f in fractions)}/{len(fractions)} | {min(fractions):.3f} | "
        f"{sum(f >= 0.9 for f in learned)}/{len(learned)} |"
    )


def validated_replay(words: list[ScoredWord]) -> list[str]:
    """`keep=validated` replayed on the recorded validation scores under either rule for ties
    (the earliest or the latest of equal scores), each kept word's reconstruction read off the
    run's scored snapshots."""
    lines = [
        "| ties keep | mean kept step | mean kept/best recon. | runs ≥ 90% of best | "
        "worst kept/best | learned words ≥ 90% of best |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for rule in ("earliest", "latest"):
        fractions, bests, steps = [], [], []
        for word in words:
            scores = early_of(word)["validation"]
            top = max(v for _, v in scores)
            tied = [s for s, v in scores if v == top]
            steps.append(tied[0] if rule == "earliest" else tied[-1])
            curve = budget_curve(word)
            best = max(p["reconstruction"] for p in curve if p["step"] > 0)
            fractions.append(at_step(curve, steps[-1]) / best if best > 0 else 1.0)
            bests.append(best)
        lines.append(fraction_row(f"| {rule} | {statistics.fmean(steps):.0f}", fractions, bests))
    return lines


def saved_table(words: list[ScoredWord]) -> list[str]:
    """The saved word (the one `keep=validated` or `keep=best` kept, else the last) against the
    best word scored anywhere in the run's budget."""
    fractions, bests, kept_steps = [], [], []
    for word in words:
        best = best_in_budget(word)
        fractions.append(word.curve[-1]["reconstruction"] / best if best > 0 else 1.0)
        bests.append(best)
        kept_steps.append(early_of(word).get("kept", {}).get("step", word.curve[-1]["step"]))
    return [
        "| runs | mean saved step | mean saved/best recon. | runs ≥ 90% of best | "
        "worst saved/best | learned words ≥ 90% of best |",
        "|---:|---:|---:|---:|---:|---:|",
        fraction_row(f"| {len(words)} | {statistics.fmean(kept_steps):.0f}", fractions, bests),
    ]


def budget_table(words: list[ScoredWord]) -> list[str]:
    """The word at each step every run scored, as if its budget ended there, against the best
    word scored anywhere in its whole budget."""
    lines = [
        "| stop at step | mean word/best recon. | runs ≥ 90% of best | worst word/best | "
        "learned words ≥ 90% of best |",
        "|---:|---:|---:|---:|---:|",
    ]
    curves = [budget_curve(w) for w in words]
    bests = [best_in_budget(w) for w in words]
    steps = set.intersection(*({p["step"] for p in curve} for curve in curves)) - {0}
    for step in sorted(steps):
        fractions = [
            at_step(curve, step) / best if best > 0 else 1.0
            for curve, best in zip(curves, bests, strict=True)
        ]
        lines.append(fraction_row(f"| {step}", fractions, bests))
    return lines


def keep_rule(words: list[ScoredWord]) -> str:
    """Which word the runs saved: `keep=validated`, `keep=best`, or the last (`keep=last`)."""
    rules = {early_of(w).get("kept", {}).get("why", "keep=last").split(":")[0] for w in words}
    return rules.pop() if len(rules) == 1 else "mixed"


def dvar_table(words: list[ScoredWord], settings: list[tuple[int, float]]) -> list[str]:
    lines = [
        "| window | threshold | runs stopped | mean stop step | mean kept/best recon. | "
        "runs ≥ 90% of best | worst kept/best | learned words ≥ 90% of best |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    budget = max(p["step"] for w in words for p in budget_curve(w))
    for window, threshold in settings:
        stops, fractions, bests = [], [], []
        for word in words:
            history = history_of(word)
            stop = dvar_stop(history, window, threshold) or history[-1][0]
            stops.append(stop)
            curve = budget_curve(word)
            best = max(p["reconstruction"] for p in curve if p["step"] > 0)
            kept = at_step(curve, kept_step(history, stop))
            fractions.append(kept / best if best > 0 else 1.0)
            bests.append(best)
        stopped = sum(s < budget for s in stops)
        label = f"| {window} | {threshold} | {stopped}/{len(words)} | {statistics.fmean(stops):.0f}"
        lines.append(fraction_row(label, fractions, bests))
    return lines


def reference_norm(folder: Path) -> float:
    """The norm the trainer's health check measures a job's word against
    (`tirun.word.Word.reference_norm`), from the job's own config."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tirun import xti
    from tirun.word import Word

    cfg = OmegaConf.load(folder / "config.yaml")
    components = instantiate(cfg.model)
    wc = cfg.word
    layers = xti.install(components.unet) if wc.per_layer else []
    word = Word(components, wc.token, wc.initializer, wc.num_vectors, 0, wc.init, wc.init_file,
                len(layers))  # fmt: skip
    return word.reference_norm


def norm_rows(words: list[ScoredWord]) -> list[tuple[float, float, float]]:
    """(norm / reference norm, reconstruction, editability) at every scored snapshot."""
    rows = []
    for word in words:
        reference = reference_norm(word.folder)
        for point in word.curve:
            if point["step"] == 0:
                continue
            snapshot = word.folder / "snapshots" / f"step_{point['step']:06d}.safetensors"
            source = snapshot if snapshot.is_file() else word.file
            try:
                vectors = embeddings.load(str(source)).vectors[0].float()
            except (ValueError, KeyError):  # a per-layer (XTI) word: no single row to measure
                continue
            ratio = float(vectors.norm(dim=-1).mean()) / reference
            rows.append((ratio, point["reconstruction"], point["editability"]))
    return rows


def health_table(rows: list[tuple[float, float, float]]) -> list[str]:
    lines = [
        "| norm / reference | snapshots | mean reconstruction | mean editability |",
        "|---|---:|---:|---:|",
    ]
    for low, high in zip(RATIO_BINS, RATIO_BINS[1:], strict=False):
        inside = [r for r in rows if low <= r[0] < high]
        if inside:
            label = f"≥ {low}" if high > 1e8 else f"{low}–{high}"
            lines.append(
                f"| {label} | {len(inside)} | {statistics.fmean(r[1] for r in inside):.3f} | "
                f"{statistics.fmean(r[2] for r in inside):.3f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.calibrate")
    parser.add_argument("runs", type=Path, nargs="+", help="dev-split ToyBench run folders")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--chosen", action="store_true", help="only the trainer's defaults")
    args = parser.parse_args(argv)
    chosen = EarlyStop()
    settings = (
        [(chosen.window, chosen.threshold)]
        if args.chosen
        else [(w, t) for w in WINDOWS for t in THRESHOLDS]
    )
    title = "at the settings chosen on dev" if args.chosen else "on ToyBench's dev split"
    lines = [f"# Calibration {title}", ""]
    all_rows = []
    for folder in args.runs:
        words = load_run(folder)
        splits = {w.folder for w in words}
        lines += [f"## {folder.name} ({len(words)} words)", ""]
        if all(history_of(w) for w in words):
            lines += ["DVAR, simulated on the recorded fixed-batch losses:", ""]
            lines += dvar_table(words, settings) + [""]
        rule = keep_rule(words)
        lines += [f"The saved word ({rule}) against the best word scored in the budget:"]
        lines += [""] + saved_table(words) + [""]
        lines += [
            "Each scored step's word, as if the budget ended there, against the budget's best:"
        ]
        lines += [""] + budget_table(words) + [""]
        if rule == "keep=validated" and not args.chosen:
            lines += ["`keep=validated` replayed on the recorded validation scores:", ""]
            lines += validated_replay(words) + [""]
        rows = norm_rows(words)
        all_rows += rows
        lines += [f"Word norm over its reference norm ({len(splits)} words):"]
        lines += [""] + health_table(rows) + [""]
    lines += ["## All runs: norm against editability", ""] + health_table(all_rows) + [""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
