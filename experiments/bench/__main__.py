"""How fast tirun trains a word, beside the common approach and the floor.

Three variants, measured on the same model, machine, batch, resolution, precision and attention:

- `tirun`: tirun's own trainer, `train(cfg)` composed through Hydra as `python -m tirun`
  composes it, paused after each optimisation step so it steps in turn with the others.
- `common`: the loop of the diffusers textual_inversion example as ToyBench runs it
  (`tirun.toybench.common.ExampleLoop`, `train.loop=common`): images resized every step, the
  VAE encodes every batch, the whole token table trains under AdamW (weight decay 0.01) and
  every other row is copied back after the step.
- `floor`: one forward and backward of the frozen text encoder and UNet on cached latents, the
  gradient reaching only the new vector, in eager PyTorch: what the method itself costs.

Each variant runs in a worker process of its own, so peak memory is that process's high-water
mark (`ru_maxrss`, or CUDA's peak allocation on a GPU) and no variant inherits another's. The
coordinator steps the three in turn (ABBA order), so a change in the machine's load hits every
variant alike.

    python -m experiments.bench                 # CPU: sd15 (and toy when present), 256 px
    python -m experiments.bench --quick         # a short smoke run (small images, few steps)
    python -m experiments.bench --device cuda   # 512 px, batch 1/4, fp16/bf16, sdpa/xformers

The report goes to outputs/bench/ in the current folder; `--record` rewrites the committed
experiments/results/bench.md (bench_quick.md with --quick) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from experiments.bench.cases import REPO, RESULTS, TOY_MODEL, Case, Plan
from experiments.bench.models import native_resolution, toy_available, write_images
from experiments.bench.report import (
    CaseResult,
    VariantResult,
    fmt,
    machine,
    median_or_none,
    missed,
    report,
    summary_line,
)
from experiments.bench.trainer import tirun_sampler
from experiments.bench.workers import Worker, WorkerError, serve

# 1. The coordinator ---------------------------------------------------------------------------


def alternate(workers: list[Worker], rounds: int, op: str = "step") -> dict[str, list[dict]]:
    """Each worker's answers to `rounds` calls, in ABBA order: no variant always goes first,
    so slow drift of the machine's load cancels."""
    answers: dict[str, list[dict]] = defaultdict(list)
    for index in range(rounds):
        for worker in workers if index % 2 == 0 else workers[::-1]:
            answers[worker.variant].append(worker.call(op))
    return answers


def record_times(results: dict[str, VariantResult], answers: dict[str, list[dict]]) -> None:
    for variant, steps in answers.items():
        if any("s" not in answer for answer in steps):
            raise WorkerError(f"{variant} stopped before its last step: {steps[-1]}")
        results[variant].times += [answer["s"] for answer in steps]
        results[variant].cpu_times += [answer["cpu_s"] for answer in steps]


def record_phases(results: dict[str, VariantResult], answers: dict[str, list[dict]]) -> None:
    for variant, steps in answers.items():
        names = steps[0]["phases"]
        results[variant].phases = {
            n: statistics.median(a["phases"][n] for a in steps) for n in names
        }


def bench_case(case: Case, plan: Plan, work: Path, log: Callable[[str], None]) -> CaseResult:
    """Every variant of one case, side by side, step by step."""
    images = write_images(work / "images", count=4, size=case.resolution)
    results = {name: VariantResult(name) for name in ("tirun", "common", "floor")}
    outcome = CaseResult(case, results, plan)
    with ExitStack() as stack:
        workers = [
            stack.enter_context(Worker(name, case, images, plan, work))
            for name in (["tirun"] if trainer_available(results["tirun"], log) else [])
            + ["common", "floor"]
        ]
        trainer_steps = plan.warmup + plan.timed + (1 if plan.profile else 0) + plan.phase_steps
        # 1. build one at a time, so no time to first step pays for another's build
        for worker in workers:
            args = {}
            if worker.variant == "tirun":
                args = {"steps": trainer_steps, "out_dir": str(work / "tirun-run")}
            first = worker.call("setup", **args)["first_step_s"]
            results[worker.variant].first_step_s = first
            log(f"  {worker.variant}: first step after {first:.1f} s")
        # 2. warm-up, then the timed steps, every variant in turn
        alternate(workers, plan.warmup - 1)
        record_times(results, alternate(workers, plan.timed))
        for name, result in results.items():
            each = " ".join(f"{t:.2f}" for t in result.times)
            log(
                f"  {name}: {fmt(result.step_s, 3)} s/step, {fmt(result.step_cpu_s, 3)} CPU "
                f"s/step (each step: {each})"
            )
        # 3. one profiled step each, then where the time goes; the trainer then finishes and
        #    reports its own figures
        tables = {w.variant: w.call("profile")["table"] for w in workers} if plan.profile else {}
        record_phases(results, alternate(workers, plan.phase_steps, op="phases"))
        if workers[0].variant == "tirun":
            finish_trainer(workers.pop(0), results["tirun"])
        # 4. memory (before sampling can raise the high-water mark)
        for worker in workers:
            record_stats(worker.call("stats"), results[worker.variant], outcome)
        # 5. the validation grid: tirun's sampler against one plain pipeline call
        common = workers[0]
        bench_sampling(common, plan, outcome, log)
        # 6. where a target is missed, what costs the time
        for name in missed(outcome) if plan.profile else []:
            if name.startswith("sampling:"):
                tables[name] = common.call("profile", kind=name.split(":")[1])["table"]
            if name in tables:
                outcome.profiles[name] = tables[name]
    return outcome


def trainer_available(result: VariantResult, log) -> bool:
    if (REPO / "tirun" / "train.py").is_file():
        return True
    result.note = "tirun.train not written yet"
    log(f"  tirun: skipped ({result.note})")
    return False


def finish_trainer(worker: Worker, result: VariantResult) -> None:
    """Let the trainer end its run and keep what it reports about memory.

    Its own `timing` is not used: the pauses between steps (while the other variants step)
    fall inside the steps it times.
    """
    answer = worker.call("finish")
    worker.close()
    metrics = answer["metrics"]
    result.optimizer_state_bytes = metrics.get("optimizer_state_bytes")
    result.peak_rss_mb, result.peak_cuda_mb = answer["peak_rss_mb"], answer["peak_cuda_mb"]
    result.note = f"real trainer, {metrics.get('steps')} steps, status {metrics.get('status')}"


def record_stats(stats: dict, result: VariantResult, outcome: CaseResult) -> None:
    result.peak_rss_mb, result.peak_cuda_mb = stats["peak_rss_mb"], stats["peak_cuda_mb"]
    result.optimizer_state_bytes = stats["optimizer_state_bytes"]
    if stats["restored"] is not None:
        outcome.restored = stats["restored"]


def bench_sampling(worker: Worker, plan: Plan, outcome: CaseResult, log) -> None:
    if tirun_sampler() is None:
        outcome.sampling_note = "tirun.sampling.sample not available"
    kinds = ["plain"] + ([] if outcome.sampling_note else ["tirun"])
    worker.call("sample", kind="plain")  # warm-up
    for index in range(plan.sample_repeats):
        for kind in kinds if index % 2 == 0 else kinds[::-1]:
            outcome.sampling.setdefault(kind, []).append(worker.call("sample", kind=kind)["s"])
    log(
        f"  sampling: plain {fmt(median_or_none(outcome.sampling.get('plain')), 2)} s, "
        f"tirun {fmt(median_or_none(outcome.sampling.get('tirun')), 2)} s"
    )


# 2. The grid and the command line -------------------------------------------------------------


def cases_for(models: list[str], device: str, quick: bool) -> tuple[list[Case], list[str]]:
    """CPU: 256 px (toy at its own size), batch 1, fp32, sdpa. GPU: 512 px, batch 1 and 4,
    fp16 and bf16, sdpa and xformers."""
    cases, notes = [], []
    for model in models:
        if model == "toy" and not toy_available():
            notes.append(f"toy model skipped: {TOY_MODEL.relative_to(REPO)} does not exist yet")
            continue
        if model == "sd15":
            size = 512 if device != "cpu" else 128 if quick else 256
        else:
            size = native_resolution(model)
        if device == "cpu":
            cases.append(Case(model, device, size, 1))
            continue
        for batch in (1, 4):
            for precision in ("fp16", "bf16"):
                for attention in ("sdpa", "xformers"):
                    cases.append(Case(model, device, size, batch, precision, attention))
    return cases, notes


def plan_for(device: str, quick: bool, model: str) -> Plan:
    """SD 1.5 steps on a CPU cost seconds, so few of them; a toy step costs tens of
    milliseconds and a GPU step less, so they afford many (a median of a few short steps moves
    by more than the 5% a target allows), and the validation grid tirun draws by default
    (4 images a prompt, 25 steps)."""
    if quick:
        return Plan(
            warmup=1, timed=2, phase_steps=1, sample_steps=2, sample_repeats=1, profile=False
        )
    if device == "cpu" and model == "sd15":
        return Plan()
    return Plan(
        warmup=5, timed=60, phase_steps=10, sample_steps=25, images_per_prompt=4, sample_repeats=5
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="short smoke run: 128 px, few steps")
    parser.add_argument(
        "--models", default="sd15,toy", help="comma-separated: sd15, toy, or an arch folder"
    )
    parser.add_argument("--out", default=None, help="Markdown report path")
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the committed experiments/results/bench.md (default: outputs/bench/)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        serve(
            args.worker,
            Case(**json.loads(args.case)),
            Path(args.images),
            Plan(**json.loads(args.plan)),
        )
        return

    name = "bench_quick.md" if args.quick else "bench.md"
    out = Path(args.out) if args.out else (RESULTS if args.record else Path("outputs/bench")) / name
    cases, notes = cases_for(args.models.split(","), args.device, args.quick)
    load_before = os.getloadavg()[0]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="tirun-bench-") as tmp:
        for index, case in enumerate(cases):
            print(f"[{time.strftime('%H:%M:%S')}] {case.model} {case.label}", flush=True)
            work = Path(tmp) / str(index)
            work.mkdir()
            plan = plan_for(args.device, args.quick, case.model)
            try:
                outcomes.append(bench_case(case, plan, work, lambda m: print(m, flush=True)))
            except WorkerError as error:
                notes.append(
                    f"{case.model} {case.label} failed: {str(error).strip().splitlines()[-1][:300]}"
                )
                print(error, flush=True)
    text = report(outcomes, machine(), (load_before, os.getloadavg()[0]), notes)
    line = summary_line(outcomes)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n" + line + "\n")
    print(text)
    print(line)


if __name__ == "__main__":
    main()
