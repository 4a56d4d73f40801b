"""The same config and seed give the same word bit for bit in separate processes on two CPU
threads, and a run killed with SIGKILL at a random step and resumed gives the unbroken run's.

Before the fix the word's vectors were gathered by indexing, whose backward (index_put_ with
accumulate) adds rows in an order that differs between processes on several threads: two
processes differed by up to 9e-8 while one thread agreed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, tirun_process

STEPS, EVERY = 40, 2
COMMAND = (
    "+exp=object",
    "model=tiny",
    f"train.max_steps={STEPS}",
    f"train.checkpoint_every={EVERY}",
    "train.keep_checkpoints=2",
    "tracker=none",
    "~application",
)
TWO_THREADS = {"OMP_NUM_THREADS": "2"}


def word(run_dir: Path) -> torch.Tensor:
    """The saved word: under the preset's fast recipe a word of three vectors."""
    return load_file(run_dir / "learned_embeds.safetensors")["<object>"]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> torch.Tensor:
    run_dir = tmp_path_factory.mktemp("unbroken")
    result = tirun_process(*COMMAND, f"hydra.run.dir={run_dir}", env=TWO_THREADS)
    assert result.returncode == 0, result.stderr[-2000:]
    return word(run_dir)


def test_two_processes_write_the_same_word_bit_for_bit(unbroken, tmp_path):
    result = tirun_process(*COMMAND, f"hydra.run.dir={tmp_path}", env=TWO_THREADS)
    assert result.returncode == 0, result.stderr[-2000:]
    again = word(tmp_path)
    assert torch.equal(unbroken, again), (unbroken - again).abs().max().item()


def test_a_run_killed_at_a_random_step_and_resumed_writes_the_unbroken_word(unbroken, tmp_path):
    kill_after = random.randrange(EVERY, STEPS // 2 + 1, EVERY)  # a checkpoint step
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **TWO_THREADS}
    process = subprocess.Popen(
        [sys.executable, "-m", "tirun", *COMMAND, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    reached = tmp_path / "checkpoints" / f"step_{kill_after:06d}"
    deadline = time.monotonic() + 300
    while not reached.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.05))  # somewhere in the steps after it
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(tmp_path.glob("learned_embeds*.safetensors")), "killed before the end"

    result = tirun_process(*COMMAND, "resume=latest", f"hydra.run.dir={tmp_path}", env=TWO_THREADS)
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = word(tmp_path)
    assert torch.equal(unbroken, resumed), (kill_after, (unbroken - resumed).abs().max().item())


@pytest.mark.gpu
def test_deterministic_cuda_runs_in_two_processes_write_the_same_word(tmp_path):
    """On CUDA bit-identical reruns need deterministic kernels: `train.deterministic=true`."""
    command = (*COMMAND, "train.deterministic=true", "train.max_steps=10")
    words = []
    for name in ("a", "b"):
        result = tirun_process(*command, f"hydra.run.dir={tmp_path / name}")
        assert result.returncode == 0, result.stderr[-2000:]
        words.append(word(tmp_path / name))
    assert torch.equal(*words)
