"""Hydra's submitit SLURM launcher, ending a sweep as the local launcher does (Hydra finds it as
`hydra_plugins.tirun_launcher.slurm.SlurmLauncher`, a subclass that adds nothing).

Hydra's launcher stops reading results at the first job that ended without one (killed past
its time limit, out of memory, cancelled), and a submission `sbatch` refuses comes out as
submitit's traceback. Here such a job is recorded failed in its `metrics.json` (its
checkpoints stay) and the others' results are still read, and a refused submission is one
line that names what to change. Everything else (the executor, the jobs, requeue and
checkpointing through `checkpoint()`) is the plugin's.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict

from tirun.files import write_json

log = logging.getLogger(__name__)


class SubmissionError(ValueError):
    """SLURM refused the sweep's jobs (or is not there); the message says what to change."""


def sbatch_refusal(stderr: str, params: dict) -> str:
    """One line from what `sbatch` printed, with the launcher field that asked for it."""
    lines = [line.removeprefix("sbatch: error: ").strip() for line in stderr.splitlines()]
    reason = next((line for line in reversed(lines) if line), "no reason given")
    hint = "check hydra.launcher's fields (`python -m tirun hydra/launcher=slurm --cfg hydra`)"
    if "partition" in reason.lower():
        hint = (
            f"hydra.launcher.partition={params.get('partition')} is not one of `sinfo`'s partitions"
        )
    elif "node configuration" in reason.lower() or "memory" in reason.lower():
        hint = request_hint(params)
    return f"sbatch refused the sweep's jobs: {reason}; {hint}"


def request_hint(params: dict) -> str:
    asked = ", ".join(
        f"{key}={params[key]}"
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node", "mem_gb")
        if params.get(key) is not None
    )
    return f"no node has what one job asks for ({asked}); `sinfo -N -l` lists the nodes"


# squeue's reasons for a pending job no node of its partition can ever run
NEVER = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints"}


def never_runs(job_id: str) -> str | None:
    """The reason SLURM gave for holding the job (array) for good, right after submission
    (a cluster that does not refuse such jobs, `EnforcePartLimits=NO`, queues them forever)."""
    listed = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%r"], capture_output=True, text=True, check=False
    )
    return next((r for r in listed.stdout.split() if r in NEVER), None)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit

        if shutil.which("sbatch") is None:
            raise SubmissionError(
                "hydra/launcher=slurm needs SLURM's `sbatch` on the PATH: run the sweep on the "
                "cluster's login node (cluster/local_slurm.sh start makes a test cluster here)"
            )
        assert self.config is not None and self.hydra_context is not None
        # As the plugin builds its executor: init keys apart, the rest as (slurm_)parameters.
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in shared else f"slurm_{key}": value
                for key, value in self.params.items()
                if key not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        nums = range(initial_job_idx, initial_job_idx + len(job_overrides))
        for num, overrides in zip(nums, job_overrides, strict=True):
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
        calls = [
            (list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state())
            for n, o in zip(nums, job_overrides, strict=True)
        ]
        printed = io.StringIO()  # submitit prints sbatch's complaint before it raises
        try:
            with contextlib.redirect_stderr(printed):
                jobs = executor.map_array(self, *zip(*calls, strict=True))
        except submitit.core.utils.FailedJobError as error:
            refusal = sbatch_refusal(str(error) or printed.getvalue(), self.params)
            raise SubmissionError(refusal) from None
        never = never_runs(jobs[0].job_id.split("_")[0])
        if never:
            subprocess.run(["scancel", jobs[0].job_id.split("_")[0]], check=False)
            raise SubmissionError(
                f"SLURM holds the sweep's jobs for good ({never}) and they are cancelled; "
                + request_hint(self.params)
            )
        return [
            self.result(job, num, overrides)
            for job, num, overrides in zip(jobs, nums, job_overrides, strict=True)
        ]

    def result(self, job, num: int, overrides: Sequence[str]) -> JobReturn:
        """The job's JobReturn; for a job that ended without one, a failure recorded in its
        folder (the sweep goes on, as when a job's own exception is recorded)."""
        import submitit

        try:
            return job.results()[0]
        except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError):
            folder = self.job_folder(num, overrides)
            error = (
                f"SLURM job {job.job_id} ended {job.state} without a result; its checkpoints "
                f"are kept: resume=latest hydra.run.dir={folder} continues it"
            )
            log.error("job %d failed: %s", num, error)
            path = folder / "metrics.json"
            metrics = json.loads(path.read_text()) if path.exists() else {}
            metrics.update(status="failed", error=f"JobEnded: {error}")
            write_json(path, metrics)
            return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)

    def job_folder(self, num: int, overrides: Sequence[str]) -> Path:
        assert self.config is not None and self.hydra_context is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = num
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
