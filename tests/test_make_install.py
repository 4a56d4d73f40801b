"""`make install` on a machine without a GPU: torch's CPU build from PyTorch's CPU index, the
pin from the default index when that index cannot be reached (saying so), then tirun with the
extras asked for. Run against a stand-in Python that logs each call, so nothing is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def make_install(tmp_path: Path, *, index_reached: bool, extras: str | None = None):
    """`make install` with VENV a folder whose python logs its arguments and fails a pip call on
    the CPU index unless `index_reached`; PATH holds no nvidia-smi (nor anything else)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls.txt"
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        f'case "$*" in *{CPU_INDEX}*) exit {0 if index_reached else 1};; esac\n'
        'case "$*" in *"import torch"*) echo "make install: torch 2.13.0+cpu (CPU build)";; esac\n'
    )
    python.chmod(0o755)
    (tmp_path / "bin").mkdir()
    args = [MAKE, "-s", "-C", str(ROOT), "install", f"VENV={venv}"]
    result = subprocess.run(
        args + ([f"EXTRAS={extras}"] if extras else []),
        env={"PATH": str(tmp_path / "bin")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, log.read_text().splitlines()


@pytest.mark.skipif(MAKE is None, reason="needs make")
def test_without_a_gpu_torch_comes_from_the_cpu_index(tmp_path):
    out, calls = make_install(tmp_path, index_reached=True)
    torch = [c for c in calls if "torch==" in c]
    assert torch == [
        f"-m pip install -q --retries 0 --timeout 15 --index-url {CPU_INDEX} torch==2.13.0"
    ]
    assert "not reached" not in out and "(CPU build)" in out
    assert calls[-1] == "-m pip install -q -e .[dev]"


@pytest.mark.skipif(MAKE is None, reason="needs make")
def test_an_unreachable_cpu_index_falls_back_to_the_pin_and_says_so(tmp_path):
    out, calls = make_install(tmp_path, index_reached=False, extras="dev,xformers")
    torch = [c for c in calls if "torch==" in c]
    assert torch[1] == "-m pip install -q torch==2.13.0" and len(torch) == 2
    assert f"make install: {CPU_INDEX} not reached: torch==2.13.0 from the default index" in out
    assert calls[-1] == "-m pip install -q -e .[dev,xformers]"
