"""tirun's sweeps on a real SLURM scheduler: `make test-slurm` starts a one-node cluster on this
machine (cluster/local_slurm.sh), runs these, and stops it.

A sweep writes every job's word and metrics and reports a failing job failed; each job keeps
to the CPUs it was given; a job requeued (by `scontrol requeue`, or preempted after SLURM's
USR2 signal) resumes and writes the unbroken run's word bit for bit; a job killed at its time
limit is reported failed with its checkpoints kept and `resume=latest` finishes it; a job of
2 tasks trains one word on 2 processes; ToyBench runs its jobs on the cluster; bad requests
are one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, tirun_process
from tirun import report
from tirun.toyworld.concepts import split

pytestmark = pytest.mark.slurm

ON_DEBUG = ("hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "hydra.launcher.mem_gb=2")
# A word whose training outlasts the signals below: 100 steps, every 4th checkpointed (all kept).
RESUMABLE = (
    "+exp=object",
    "model=tiny",
    "train.max_steps=100",
    "train.checkpoint_every=4",
    "train.keep_checkpoints=0",
    "tracker=none",
    "~application",
)
ONE_CPU = "hydra.launcher.cpus_per_task=1"  # one thread, as `tirun_process` runs the reference


@pytest.fixture(scope="module")
def accounting() -> bool:
    """Whether the cluster keeps accounting (`sacct` answers); fails where no cluster is up."""
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False) if (
        shutil.which("scontrol")
    ) else None  # fmt: skip
    if ping is None or "UP" not in ping.stdout:
        pytest.fail("no SLURM controller answers: `make test-slurm` starts the local test cluster")
    return subprocess.run(["sacct", "-n", "-X"], capture_output=True, check=False).returncode == 0


def sweep_command(sweep: Path, *overrides: str) -> list[str]:
    return ["--multirun", *ON_DEBUG, *overrides, f"hydra.sweep.dir={sweep}"]


def start_sweep(sweep: Path, *overrides: str) -> subprocess.Popen:
    """A sweep in the background, as `tirun_process` runs one (its output in sweep.log)."""
    sweep.mkdir(parents=True)
    log = (sweep.parent / f"{sweep.name}.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tirun", *sweep_command(sweep, *overrides)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the sweep ended before {path} was written"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.1)


def finish(process: subprocess.Popen, sweep: Path, timeout: float = 600) -> str:
    assert process.wait(timeout=timeout) == 0, (sweep.parent / f"{sweep.name}.log").read_text()
    return (sweep.parent / f"{sweep.name}.log").read_text()


def job_id(sweep: Path) -> str:
    """The SLURM job of a one-job sweep (submitit's folder for it is named after it)."""
    folders = [p.name for p in (sweep / ".submitit").glob("*") if list(p.glob("*_submitted.pkl"))]
    assert len(folders) == 1, folders
    return folders[0]


def release(job: str, timeout: float = 120) -> None:
    """Start a requeued job now: SLURM holds one for 2 minutes (BeginTime) before it may run
    again, which is all this waiting would measure."""
    deadline = time.monotonic() + timeout
    while "BeginTime" not in squeue(job):
        assert time.monotonic() < deadline, f"job {job} was not requeued: {squeue(job)}"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)


def squeue(job: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True, check=False
    ).stdout


def word(run_dir: Path) -> torch.Tensor:
    return load_file(run_dir / "learned_embeds.safetensors")["<object>"]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(
        int(p.name.removeprefix("step_")) for p in (run_dir / "checkpoints").glob("step_*")
    )


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> torch.Tensor:
    """RESUMABLE's word from one uninterrupted run outside SLURM, on one thread."""
    run_dir = tmp_path_factory.mktemp("unbroken")
    result = tirun_process(*RESUMABLE, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return word(run_dir)


def test_a_four_job_sweep_writes_every_word_and_reports_the_failing_job(tmp_path, accounting):
    sweep = tmp_path / "sweep"
    result = tirun_process(
        *sweep_command(
            sweep,
            "hydra.launcher.cpus_per_task=1",
            "+exp=object",
            "model=tiny",
            "train.max_steps=2",
            "tracker=none",
            "~application",
            "optimizer.lr=1e-3,5e-3,-1,2e-3",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in "013":
        finished = metrics(sweep / job)
        assert finished["status"] == "finished" and finished["steps"] == 2
        assert finished["timing"]["threads"] == 1, "a job of one CPU trains on one thread"
        assert (sweep / job / "learned_embeds.safetensors").is_file()
    assert metrics(sweep / "2") == {
        "status": "failed",
        "error": "ValueError: optimizer.lr=-1 is out of range: it must be more than 0",
    }
    assert report.main([str(sweep)]) == 0
    table = (sweep / "report.md").read_text()
    assert "| 2 | -1 | failed |" in table and "4 jobs, 3 finished, failed: 2" in table
    # submitit reads the jobs' states from sacct, and says so on every poll when it cannot
    assert ("Bypassing sacct error" in result.stdout + result.stderr) is not accounting
    if accounting:
        states = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id_of_array(sweep)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()  # the job read last may still be closing
        assert len(states) == 4 and set(states) <= {"COMPLETED", "RUNNING"}, states


def job_id_of_array(sweep: Path) -> str:
    return next(p.name for p in (sweep / ".submitit").glob("*") if "_" not in p.name)


def test_a_job_requeued_mid_training_resumes_and_writes_the_unbroken_word(tmp_path, unbroken):
    sweep = tmp_path / "sweep"
    process = start_sweep(sweep, ONE_CPU, *RESUMABLE)
    wait_for(sweep / "0" / "checkpoints" / "step_000008", process)
    subprocess.run(["scontrol", "requeue", job_id(sweep)], check=True)
    release(job_id(sweep))
    finish(process, sweep)

    log = (sweep / "0" / "__main__.log").read_text()
    assert "SLURM restart 1: resuming from the run's latest checkpoint" in log
    assert metrics(sweep / "0")["steps"] == 100
    assert checkpoint_steps(sweep / "0") == list(range(4, 101, 4)), "every checkpoint kept"
    resumed = word(sweep / "0")
    assert torch.equal(unbroken, resumed), (unbroken - resumed).abs().max().item()


def test_a_preempted_job_hears_usr2_is_requeued_and_writes_the_unbroken_word(tmp_path, unbroken):
    sweep = tmp_path / "sweep"
    process = start_sweep(sweep, ONE_CPU, *RESUMABLE)
    wait_for(sweep / "0" / "checkpoints" / "step_000008", process)
    # a job of the higher-priority partition needs both of the node's CPUs: SLURM preempts ours
    subprocess.run(
        ["sbatch", "-p", "urgent", "-c", "2", "--mem=1G", "-o", "/dev/null", "--wrap", "sleep 1"],
        check=True,
        capture_output=True,
    )
    release(job_id(sweep))
    finish(process, sweep)

    job = job_id(sweep)
    submitit_log = (sweep / ".submitit" / job / f"{job}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in submitit_log and "this job is preempted" in submitit_log
    assert "Requeued job" in submitit_log or "requeue" in submitit_log.lower()
    log = (sweep / "0" / "__main__.log").read_text()
    assert "resuming from the run's latest checkpoint" in log
    resumed = word(sweep / "0")
    assert torch.equal(unbroken, resumed), (unbroken - resumed).abs().max().item()


def training_process(sweep: Path) -> int | None:
    """The pid of the sweep's job (submitit's `python -m submitit.core._submit SWEEP/...`)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        python = Path(command[0].decode()).name.startswith("python")  # not srun, its parent
        if python and b"submitit.core._submit" in command and str(sweep).encode() in command[-2]:
            return int(proc.name)
    return None


def test_a_job_killed_at_its_time_limit_is_reported_failed_and_resume_latest_finishes_it(
    tmp_path, unbroken
):
    sweep = tmp_path / "sweep"
    process = start_sweep(
        sweep,
        ONE_CPU,
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=5",
        *RESUMABLE,
    )
    wait_for(sweep / "0" / "checkpoints" / "step_000008", process)
    # Frozen, the job reaches its one-minute limit mid-training (SLURM's clock runs on). Its
    # USR2, 5 s before the limit as SLURM counts (up to 30 s early), may come first: then
    # submitit stops it, and tirun records that.
    pid = training_process(sweep)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    finish(process, sweep, timeout=300)

    failed = metrics(sweep / "0")
    assert failed["status"] == "failed" and "resume=latest" in failed["error"], failed
    assert not (sweep / "0" / "learned_embeds.safetensors").exists()
    kept = checkpoint_steps(sweep / "0")
    assert kept and kept == list(range(4, kept[-1] + 1, 4)) and kept[-1] < 100

    result = tirun_process(*RESUMABLE, "resume=latest", f"hydra.run.dir={sweep / '0'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed from step {kept[-1]}" in (sweep / "0" / "__main__.log").read_text()
    resumed = word(sweep / "0")
    assert torch.equal(unbroken, resumed), (unbroken - resumed).abs().max().item()


def test_a_job_cancelled_mid_training_is_reported_failed_and_the_others_finish(tmp_path):
    sweep = tmp_path / "sweep"
    process = start_sweep(sweep, ONE_CPU, *RESUMABLE, "optimizer.lr=1e-2,5e-3")
    wait_for(sweep / "0" / "checkpoints" / "step_000008", process)
    array = next(p.name for p in (sweep / ".submitit").glob("*") if "_" not in p.name)
    subprocess.run(["scancel", f"{array}_0"], check=True)  # killed: no result, as at a hard limit
    finish(process, sweep)

    failed = metrics(sweep / "0")
    assert failed["status"] == "failed" and failed["error"].startswith(
        f"JobEnded: SLURM job {array}_0 ended"
    )
    assert "without a result; its checkpoints are kept: resume=latest" in failed["error"]
    assert checkpoint_steps(sweep / "0")[:2] == [4, 8]
    assert metrics(sweep / "1")["status"] == "finished"


def test_a_job_of_two_tasks_learns_the_word_of_one_process_with_the_same_global_batch(tmp_path):
    common = ("+exp=object", "model=tiny", "train.max_steps=3", "train.cpu=true", "tracker=none",
              "~application", "train.checkpoint_every=0")  # fmt: skip
    sweep = tmp_path / "sweep"
    result = tirun_process(
        *sweep_command(
            sweep,
            "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.cpus_per_task=1",
            *common,
            "train.batch_size=1",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (sweep / "0" / "__main__.log").read_text()
    assert "SLURM task 0 of 2" in log and "SLURM task 1 of 2" in log
    assert metrics(sweep / "0")["steps"] == 3

    one = tmp_path / "one"
    result = tirun_process(*common, "train.batch_size=2", f"hydra.run.dir={one}")
    assert result.returncode == 0, result.stderr[-2000:]
    two = word(sweep / "0")
    assert not torch.equal(two, torch.zeros_like(two))
    torch.testing.assert_close(two, word(one), rtol=0, atol=1e-5)


def test_toybench_runs_its_jobs_on_the_cluster_and_writes_its_report(tmp_path):
    name = f"slurm-test-{os.getpid()}"
    try:
        result = tirun_process(
            "split=dev",
            "seeds=1",
            f"name={name}",
            *ON_DEBUG,
            "hydra.launcher.cpus_per_task=1",
            "tracker=none",
            "train.max_steps=2",
            "application.samples_per_set=4",
            "application.sampling.steps=2",
            module="tirun.toybench",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs = ROOT / "toybench_runs" / name
        jobs = sorted(runs.glob("[0-9]*/metrics.json"))
        dev = len(split("dev"))
        assert len(jobs) == dev and all(
            json.loads(j.read_text())["status"] == "finished" for j in jobs
        )
        assert list((runs / ".submitit").glob("*_0")), "the jobs ran through SLURM"
        results = ROOT / "outputs" / "toybench" / name  # not the committed results: no --record
        assert (results / "summary.md").is_file()
        assert len((results / "per_concept.csv").read_text().splitlines()) == 1 + dev
    finally:
        shutil.rmtree(ROOT / "toybench_runs" / name, ignore_errors=True)
        shutil.rmtree(ROOT / "outputs" / "toybench" / name, ignore_errors=True)


@pytest.mark.parametrize(
    ("request_", "env", "message"),
    [
        ((), {"PATH": "/nonexistent"}, "hydra/launcher=slurm needs SLURM's `sbatch` on the PATH"),
        (
            ("hydra.launcher.partition=nope",),
            {},
            "sbatch refused the sweep's jobs: Batch job submission failed: Invalid partition "
            "name specified; hydra.launcher.partition=nope is not one of `sinfo`'s partitions",
        ),
        (
            ("hydra.launcher.cpus_per_task=4096",),
            {},
            "SLURM holds the sweep's jobs for good (PartitionConfig) and they are cancelled; no "
            "node has what one job asks for (nodes=1, tasks_per_node=1, cpus_per_task=4096",
        ),
        (
            ("hydra.launcher.mem_gb=100000",),
            {},
            "sbatch refused the sweep's jobs: Batch job submission failed: Requested node "
            "configuration is not available; no node has what one job asks for",
        ),
    ],
    ids=["no-sbatch", "unknown-partition", "more-cpus-than-any-node", "more-memory-than-any-node"],
)
def test_a_bad_request_is_one_line_and_nothing_is_lost(tmp_path, request_, env, message):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "earlier.txt").write_text("kept")
    result = tirun_process(
        *sweep_command(
            sweep,
            "+exp=object",
            "model=tiny",
            "tracker=none",
            "~application",
            "optimizer.lr=1e-3,5e-3",
            *request_,
        ),  # fmt: skip
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"tirun: error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert (sweep / "earlier.txt").read_text() == "kept"
    if shutil.which("squeue"):
        assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout == ""
