"""What a run takes from where it runs (tirun/job_environment.py), without a cluster: its CPU share
under SLURM and Hydra's joblib launcher, its rank in a job of several SLURM tasks, and whether
a SLURM restart resumes it."""

from __future__ import annotations

import json
import os

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import tirun_process
from tirun import checkpoint, job_environment

AFFINITY = len(os.sched_getaffinity(0))


@pytest.fixture
def outside_slurm(monkeypatch):
    exported = (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    )
    for key in exported:  # set then removed: whatever a test exports is undone after it
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for key in list(os.environ):
        if key.startswith(("SLURM_", "SUBMITIT_")) or key in (
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
        ):
            monkeypatch.delenv(key)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    return monkeypatch


def test_a_run_outside_any_scheduler_may_use_every_cpu_it_can_run_on(outside_slurm):
    assert job_environment.cpu_share() == 8


def test_a_slurm_job_keeps_to_its_cpus_per_task_on_a_node_without_cpu_binding(outside_slurm):
    outside_slurm.setenv("SLURM_JOB_ID", "12")
    outside_slurm.setenv("SLURM_CPUS_PER_TASK", "3")
    assert job_environment.cpu_share() == 3


def test_a_joblib_job_takes_its_part_of_the_cpus(outside_slurm):
    joblib = OmegaConf.create({"_target_": "hydra_plugins...JoblibLauncher", "n_jobs": 4})
    assert job_environment.cpu_share(joblib) == 2  # 8 CPUs, 4 jobs at once
    basic = OmegaConf.create({"_target_": "hydra._internal.core_plugins.BasicLauncher"})
    assert job_environment.cpu_share(basic) == 8


def test_torch_threads_are_capped_at_the_share_and_a_lower_setting_is_kept(outside_slurm):
    threads = torch.get_num_threads()
    try:
        outside_slurm.setenv("SLURM_JOB_ID", "12")
        outside_slurm.setenv("SLURM_CPUS_PER_TASK", "1")
        torch.set_num_threads(2)
        assert job_environment.use_cpu_share() == 1 and torch.get_num_threads() == 1
        outside_slurm.setenv("SLURM_CPUS_PER_TASK", "4")
        assert job_environment.use_cpu_share() == 1, "OMP_NUM_THREADS=1 (one thread) is kept"
    finally:
        torch.set_num_threads(threads)


def test_the_tasks_of_a_slurm_job_step_become_torch_distributed_ranks(outside_slurm):
    for key, value in {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NODELIST": "node1",
        "SLURM_NTASKS": "2",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "0",
    }.items():
        outside_slurm.setenv(key, value)
    assert job_environment.join_slurm_tasks()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == (
        "1",
        "2",
        "1",
    )
    assert os.environ["MASTER_ADDR"] == "node1" and 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
    assert not job_environment.join_slurm_tasks(), "a rank already set (torchrun's) is kept"


def test_a_one_task_job_is_left_to_torchrun_or_accelerate(outside_slurm):
    outside_slurm.setenv("SLURM_JOB_ID", "77")
    outside_slurm.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert not job_environment.join_slurm_tasks() and "RANK" not in os.environ


def test_a_slurm_restart_resumes_from_the_runs_checkpoint_and_only_then(outside_slurm, tmp_path):
    assert job_environment.requeued_resume(None, tmp_path) is None
    outside_slurm.setenv("SLURM_RESTART_COUNT", "1")
    assert job_environment.requeued_resume(None, tmp_path) is None, (
        "nothing saved yet: from the start"
    )
    (tmp_path / "checkpoints" / "step_000004").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_000004" / checkpoint.COMPLETE).write_text("{}")
    assert job_environment.requeued_resume(None, tmp_path) == "latest"
    assert job_environment.requeued_resume("/some/checkpoint", tmp_path) == "/some/checkpoint"


@pytest.mark.slow
def test_jobs_of_the_joblib_launcher_train_on_their_part_of_the_cpus(tmp_path, image_folder):
    sweep = tmp_path / "joblib"
    result = tirun_process(
        "--multirun",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model=tiny",
        "tracker=none",
        f"dataset.path={image_folder}",
        "train.max_steps=1",
        "train.checkpoint_every=0",
        "word.num_vectors=1,2",
        f"hydra.sweep.dir={sweep}",
        env={"OMP_NUM_THREADS": str(AFFINITY)},  # torch would take every CPU
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for job in "01":
        timing = json.loads((sweep / job / "metrics.json").read_text())["timing"]
        assert timing["threads"] == max(1, AFFINITY // 2)
