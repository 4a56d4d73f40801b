"""The workers: one variant per process, one JSON command per line.

Each variant runs in a worker process of its own, so peak memory is that process's high-water
mark (`ru_maxrss`, or CUDA's peak allocation on a GPU) and no variant inherits another's.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from experiments.bench.cases import REPO, Case, Plan
from experiments.bench.models import load_components
from experiments.bench.steps import Stopwatch, synchronize
from experiments.bench.trainer import run_tirun, sample_grid
from experiments.bench.variants import Floor, common_loop
from tirun.toybench.common import ExampleLoop


class Channel:
    """A worker's end of the pipe: requests on stdin, answers on the original stdout; library
    prints are moved to stderr so that stdout carries nothing but the answers."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)

    def read(self) -> dict | None:
        line = sys.stdin.readline()
        return json.loads(line) if line else None

    def answer(self, message: dict) -> None:
        self.out.write(json.dumps(message) + "\n")


class Clock:
    """Wall and CPU seconds since `start`; CPU time (all threads) is the cross-check that a
    busy machine inflates less than wall time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start()

    def start(self) -> None:
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        synchronize(self.device)
        return {"s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu}


class Session:
    """A `common` or `floor` worker: the variant it built and the commands it answers."""

    commands = ("setup", "step", "phases", "stats", "sample", "profile")

    def __init__(self, variant: str, case: Case, images: Path, plan: Plan, channel: Channel):
        self.variant_name = variant
        self.case = case
        self.images = images
        self.plan = plan
        self.device = torch.device(case.device)
        self.variant: ExampleLoop | Floor | None = None

    def setup(self) -> dict:
        """Build the variant and take its first step: the time to first step."""
        clock = Clock(self.device)
        components = load_components(self.case.model, self.case.resolution)
        variants = {"common": common_loop, "floor": Floor}
        self.variant = variants[self.variant_name](components, self.case, self.images)
        loss = self.variant.step()
        return {"first_step_s": clock.read()["s"], "loss": loss}

    def step(self) -> dict:
        clock = Clock(self.device)
        loss = self.variant.step()
        return {**clock.read(), "loss": loss}

    def phases(self) -> dict:
        clock = Stopwatch(self.device)
        self.variant.step(clock)
        return {"phases": dict(clock.seconds)}

    def stats(self) -> dict:
        restored = (
            self.variant.other_rows_restored() if isinstance(self.variant, ExampleLoop) else None
        )
        return {
            "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": peak_cuda_mb(self.device),
            "optimizer_state_bytes": self.variant.optimizer_state_bytes(),
            "restored": restored,
        }

    def sample(self, kind: str) -> dict:
        """One validation grid; both kinds run in the same autocast (an fp32 text encoder
        beside an fp16 UNet needs it, as in the example's validation)."""
        pipe = self.variant.pipeline()
        clock = Clock(self.device)
        with self.variant.autocast():
            sample_grid(pipe, kind, self.plan, self.case.resolution)
        return clock.read()

    def profile(self, kind: str = "step") -> dict:
        """torch.profiler's table of the top costs of one step (or one sampling call)."""
        profiler = start_profiler(self.device)
        if kind == "step":
            self.variant.step()
        else:
            self.sample(kind)
        return {"table": stop_profiler(profiler, self.device)}


class TrainerSession:
    """A `tirun` worker: tirun's own trainer, paused after each of its optimisation steps.

    A global optimizer step hook (torch's public instrumentation API; the trainer is not
    touched) hands control to the coordinator after every step, so the trainer's real loop
    takes its steps in turn with the other variants. An interval runs from the coordinator's
    `step` to the next optimizer step: exactly one loop iteration. The `setup` command runs
    the whole training; the hook answers the commands that arrive meanwhile. A `phases`
    step is split by `TrainerPhases`, from the outside too.
    """

    commands = ("setup",)

    def __init__(self, variant: str, case: Case, images: Path, plan: Plan, channel: Channel):
        self.case = case
        self.images = images
        self.channel = channel
        self.device = torch.device(case.device)
        self.clock = Clock(self.device)
        self.first = True
        self.profiler = None
        self.phases: TrainerPhases | None = None
        self.hook = None

    def setup(self, steps: int, out_dir: str) -> dict:
        """Train for `steps` steps; answers `finish` (the last command) with the metrics."""
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.clock.start()
        self.hook = register_optimizer_step_post_hook(self._after_step)
        try:
            metrics = run_tirun(self.case, self.images, Path(out_dir), steps)
        finally:
            self.hook.remove()
        return {
            "metrics": metrics,
            "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": peak_cuda_mb(self.device),
        }

    def _after_step(self, optimizer, args, kwargs) -> None:
        answer = self.clock.read()
        if self.first:
            answer, self.first = {"first_step_s": answer["s"]}, False
        if self.profiler is not None:
            answer["table"] = stop_profiler(self.profiler, self.device)
            self.profiler = None
        if self.phases is not None:
            answer["phases"] = self.phases.stop()
            self.phases = None
        self.channel.answer(answer)
        while (request := self.channel.read()) is not None:
            command = request.pop("op")
            if command == "stats":
                self.channel.answer({"peak_rss_mb": peak_rss_mb()})
                continue
            if command == "profile":
                self.profiler = start_profiler(self.device)
            if command == "phases":
                self.phases = TrainerPhases(self.device, optimizer)
            if command == "finish":
                self.hook.remove()
            elif command not in ("step", "profile", "phases"):
                self.channel.answer({"error": f"unknown command {command!r} during training"})
                continue
            self.clock.start()
            return


class TrainerPhases:
    """Where one step of tirun's trainer goes, read from the outside through torch's hooks
    (module forward hooks, tensor and gradient hooks, optimizer step hooks), in the phases the
    other variants report: `data` (from the coordinator's `step` to the text encoder: the end of
    the previous iteration after the optimizer's step, i.e. the lr scheduler and logging, then
    the batch's draw), `text_encoder` (its forward, and its backward from the gradient of its
    output to the word's vectors), `unet` (forward, loss and backward down to the text
    encoder's output), `optimizer` (the optimizer's step) and `other` (the rest: noise and
    timesteps, the loss read back, health checks, clipping). Marks synchronise the device, as
    the other variants' clocks do."""

    ENCODERS = ("CLIPTextModel", "CLIPTextModelWithProjection")

    def __init__(self, device: torch.device, optimizer: torch.optim.Optimizer):
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self.device = device
        self.seconds: dict[str, float] = dict.fromkeys(
            ("data", "text_encoder", "unet", "optimizer", "other"), 0.0
        )
        self.opened: dict[str, float] = {}
        self.last = self.now()
        self.handles = [
            register_module_forward_pre_hook(self._before_forward),
            register_module_forward_hook(self._after_forward),
            register_optimizer_step_pre_hook(lambda *_: self._mark("optimizer")),
        ]
        self.handles += [
            p.register_post_accumulate_grad_hook(lambda _: self._mark("other"))
            for group in optimizer.param_groups
            for p in group["params"]
        ]
        self.phase = "data"

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def _mark(self, following: str) -> None:
        """Close the phase running now and open ``following``."""
        now = self.now()
        self.seconds[self.phase] += now - self.last
        self.last, self.phase = now, following

    def _before_forward(self, module, args, kwargs=None) -> None:
        name = type(module).__name__
        if name in self.ENCODERS:
            self._mark("text_encoder")
        elif name == "UNet2DConditionModel":
            self._mark("unet")
            states = (kwargs or {}).get("encoder_hidden_states")
            if states is None and len(args) > 2:
                states = args[2]
            if torch.is_tensor(states) and states.requires_grad:
                # the UNet's backward ends where the gradient reaches the text encoder's output
                self.handles.append(states.register_hook(self._unet_backward_done))

    def _unet_backward_done(self, grad: torch.Tensor) -> None:
        self._mark("text_encoder")

    def _after_forward(self, module, args, output) -> None:
        if type(module).__name__ in self.ENCODERS:
            self._mark("other")

    def stop(self) -> dict[str, float]:
        """The phases' seconds, the optimizer's step (the last) closed now."""
        self._mark("other")
        for handle in self.handles:
            handle.remove()
        return self.seconds


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_cuda_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def start_profiler(device: torch.device):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiler = profile(activities=activities)
    profiler.start()
    return profiler


def stop_profiler(profiler, device: torch.device, rows: int = 15) -> str:
    """torch.profiler's table of the top costs, by self time on the device that does the work."""
    synchronize(device)
    profiler.stop()
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=sort, row_limit=rows)


def serve(variant: str, case: Case, images: Path, plan: Plan) -> None:
    """A worker's loop: answer each command until `quit` or the end of stdin."""
    channel = Channel()
    torch.set_num_threads(plan.threads)
    kind = TrainerSession if variant == "tirun" else Session
    session = kind(variant, case, images, plan, channel)
    while (request := channel.read()) is not None:
        command = request.pop("op")
        if command == "quit":
            break
        try:
            if command not in kind.commands:
                raise ValueError(f"unknown command {command!r}")
            answer = getattr(session, command)(**request)
        except Exception:
            answer = {"error": traceback.format_exc()}
        channel.answer(answer)


class WorkerError(RuntimeError):
    pass


class Worker:
    """The coordinator's handle on one worker process."""

    def __init__(self, variant: str, case: Case, images: Path, plan: Plan, log_dir: Path):
        self.variant = variant
        self.log_path = log_dir / f"{case.model}-{case.label.replace(' ', '_')}-{variant}.log"
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            OMP_NUM_THREADS=str(plan.threads),
            MKL_NUM_THREADS=str(plan.threads),
        )
        command = [sys.executable, "-m", "experiments.bench", "--worker", variant]
        command += ["--case", json.dumps(asdict(case)), "--plan", json.dumps(asdict(plan))]
        command += ["--images", str(images)]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=REPO,
                env=env,
            )

    def call(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"{self.variant} worker died during {op!r}:\n{self.log_tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.variant} worker failed on {op!r}:\n{answer['error']}")
        return answer

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
