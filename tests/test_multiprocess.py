"""Two processes (torchrun, gloo on CPU) train the same word as one process with the same global
batch; separate processes, and a run killed and resumed, give the same word bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3


@pytest.mark.slow
def test_two_processes_learn_the_word_of_one_process_with_the_same_global_batch(tmp_path, tiny_run):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
    }
    # Each rank's own folder differs on purpose (`${oc.env:RANK}`), as a `${now:...}` a second
    # apart would: rank 0's must win and rank 1's must be gone.
    two = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "tirun",
            "model=tiny",
            "tracker=wandb",
            f"dataset.path={tmp_path / 'images'}",
            "train.batch_size=1",
            f"train.max_steps={STEPS}",
            "train.cpu=true",
            "train.checkpoint_every=0",
            f"hydra.run.dir={tmp_path}/rank" + "${oc.env:RANK}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert not (tmp_path / "rank1").exists(), "all ranks write to rank 0's run folder"
    assert len(list((tmp_path / "rank0" / "wandb").glob("offline-run-*"))) == 1, "rank 0 alone logs"
    assert json.loads((tmp_path / "rank0" / "metrics.json").read_text())["steps"] == STEPS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics, _, one_dir = tiny_run(
            "train.batch_size=2", f"train.max_steps={STEPS}", "train.cpu=true"
        )
    finally:
        torch.set_num_threads(threads)
    assert metrics["word"]["word/shift"] > 0
    a = load_file(tmp_path / "rank0" / "learned_embeds.safetensors")
    b = load_file(one_dir / "learned_embeds.safetensors")
    assert a.keys() == b.keys()
    for token in a:
        assert not torch.equal(a[token], torch.zeros_like(a[token]))
        torch.testing.assert_close(a[token], b[token], rtol=0, atol=1e-5)
