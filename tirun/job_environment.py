"""What a run takes from the scheduler or launcher that started it: its share of the CPUs, its
rank among a SLURM job's tasks, and whether SLURM requeued it (then it resumes).

`python -m tirun` calls `settle` once, where a run starts, before anything builds a model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from tirun import checkpoint

log = logging.getLogger(__name__)


def cpu_share(launcher: DictConfig | None = None) -> int:
    """The CPUs this run may keep busy: those it may run on (its affinity), at most the
    `--cpus-per-task` SLURM gave its job (a node without CPU binding shows every CPU), and its
    part of them when Hydra's joblib launcher runs `n_jobs` jobs at once."""
    cpus = len(os.sched_getaffinity(0))
    if "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_CPUS_PER_TASK"):
        cpus = min(cpus, int(os.environ["SLURM_CPUS_PER_TASK"]))
    if launcher is not None and str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        from joblib import effective_n_jobs

        cpus //= effective_n_jobs(launcher.get("n_jobs", -1))
    return max(1, cpus)


def use_cpu_share(launcher: DictConfig | None = None) -> int:
    """Cap torch's threads at the run's CPU share (an `OMP_NUM_THREADS` below it is kept):
    each process takes every CPU it sees otherwise, and jobs sharing a node slow each other
    down many times over. tirun's batches come from an in-memory latent cache, so there are no
    data loader workers to size. Returns the thread count."""
    import torch

    threads = min(torch.get_num_threads(), cpu_share(launcher))
    torch.set_num_threads(threads)
    return threads


def join_slurm_tasks() -> bool:
    """In a job of several tasks that submitit started (`hydra/launcher=slurm` with
    `tasks_per_node=2`: one `srun` of 2 processes), export the rank, world size and rendezvous
    address that `torch.distributed`'s env:// start (and so Accelerate) reads, as `torchrun`
    would; returns whether it did. A `torchrun` or `accelerate launch` inside a one-task job
    sets them itself."""
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    by_submitit = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
    if tasks <= 1 or not by_submitit or "RANK" in os.environ:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    # Accelerate picks `cuda:LOCAL_RANK` among the GPUs SLURM gave the job.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def requeued_resume(resume: str | None, run_dir: Path) -> str | None:
    """`latest` for a job SLURM restarted (requeued by `scontrol requeue`, or preempted and
    requeued by submitit after the USR2 signal) whose run folder holds a complete checkpoint:
    it goes on from there and ends with the word of an unbroken run. Otherwise ``resume``."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if resume is not None or restarts < 1:
        return resume
    if not checkpoint.complete_checkpoints(run_dir / "checkpoints"):
        log.info("SLURM restart %d: no checkpoint in %s yet, training from the start", restarts,
                 run_dir)  # fmt: skip
        return resume
    log.info("SLURM restart %d: resuming from the run's latest checkpoint", restarts)
    return "latest"


def stopped_at_time_limit(error: BaseException, run_dir: Path) -> BaseException:
    """What to record for a job submitit stopped at SLURM's USR2 before its time limit (no
    requeue left, `max_num_timeout`): that its checkpoints are kept, and how to go on."""
    if type(error).__name__ != "UncompletedJobError":
        return error
    return RuntimeError(
        f"stopped before SLURM's time limit ({first_line(error)}); its checkpoints are kept: "
        f"resume=latest hydra.run.dir={run_dir} continues it"
    )


def first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def settle(launcher: DictConfig | None) -> None:
    """Fit the process to its place: join the job's other tasks, take its CPU share."""
    if join_slurm_tasks():
        log.info("SLURM task %s of %s", os.environ["RANK"], os.environ["WORLD_SIZE"])
    log.info("torch threads: %d (the run's CPU share)", use_cpu_share(launcher))
