"""`pip install` gives a working `tirun`: the wheel carries its configs and runs from any folder.

The wheel is built from a copy of the package's files (the checkout is left as it is) and
installed, offline and without its dependencies, into a fresh venv whose one extra path is this
environment's site-packages, so the dependencies are the ones already installed and the
editable install of the checkout is not on the path (its finder is not loaded from there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tirun.toyworld.concepts import CONCEPTS

PACKAGE_FILES = ("pyproject.toml", "README.md", "tirun", "hydra_plugins")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with tirun's wheel installed in it; its path."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        path = ROOT / name
        if path.is_dir():
            ignored = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
            shutil.copytree(path, source / name, ignore=ignored)
        else:
            shutil.copy2(path, source / name)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(work / "dist"), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("tirun-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-index", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return venv


def in_venv(venv: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    """``command`` run with the venv's programs first on the PATH, from ``cwd``."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_wheel_runs_from_another_folder(installed, tmp_path):
    venv = installed
    where = in_venv(venv, tmp_path, "python", "-c",
                    "import tirun, hydra_plugins.tirun_launcher as l; print(tirun.__file__); "
                    "print(l.__file__)")  # fmt: skip
    assert where.returncode == 0, where.stderr
    for line in where.stdout.splitlines():
        assert Path(line).is_relative_to(venv), line  # the wheel's copy, not the checkout's

    job = in_venv(venv, tmp_path, "tirun", "--cfg", "job")
    assert job.returncode == 0, job.stderr
    assert "_target_: tirun.models.load_pretrained" in job.stdout  # model: toy, the default
    assert "max_steps: 500" in job.stdout

    listed = in_venv(venv, tmp_path, "python", "-m", "tirun.toybench", "--list")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == list(CONCEPTS)

    debug = in_venv(venv, tmp_path, "tirun", "+debug=default")
    assert debug.returncode == 0, debug.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    assert (run_dir / "learned_embeds.safetensors").is_file()
    assert (run_dir / "samples" / "validation" / "step_000004.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("tirun: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("flags", [(), ("--cfg", "job")], ids=["run", "cfg"])
def test_a_missing_config_folder_is_one_line(installed, tmp_path, flags):
    conf = next((installed / "lib").glob("python*/site-packages/tirun/conf"))
    aside = conf.with_name("conf-aside")
    conf.rename(aside)
    try:
        line = _one_error_line(in_venv(installed, tmp_path, "tirun", "+debug=default", *flags))
    finally:
        aside.rename(conf)
    assert f"tirun's config folder {conf} has no config.yaml" in line
    assert "reinstall tirun" in line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("flags", [(), ("--cfg", "job")], ids=["run", "cfg"])
def test_a_config_file_that_is_not_yaml_is_one_line(installed, tmp_path, flags):
    tiny = next((installed / "lib").glob("python*/site-packages/tirun/conf/model/tiny.yaml"))
    kept = tiny.read_text()
    tiny.write_text("resolution: [32\nseed: 0\n")
    try:
        line = _one_error_line(in_venv(installed, tmp_path, "tirun", "+debug=default", *flags))
    finally:
        tiny.write_text(kept)
    assert f"{tiny}, line 2 is not valid YAML" in line
    assert "reinstall tirun, or fix the file" in line
    assert not (tmp_path / "outputs").exists()


def test_a_users_own_config_folder_composes_on_top_of_the_packaged_one(installed, tmp_path):
    mine = tmp_path / "my_configs"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "mine.yaml").write_text(
        "_target_: tirun.models.build_random\narch_dir: tiny-sd1\nseed: 7\nresolution: 32\n"
        "prediction_type: epsilon\n"
    )
    for where in (("--config-dir", str(mine)), (f"hydra.searchpath=[file://{mine}]",)):
        job = in_venv(installed, tmp_path, "tirun", *where, "model=mine", "--cfg", "job")
        assert job.returncode == 0, job.stderr[-3000:]
        assert "arch_dir: tiny-sd1\n  seed: 7\n" in job.stdout
        line = _one_error_line(
            in_venv(installed, tmp_path, "tirun", *where, "model=mine", "model.seed=abc")
        )
        assert line == "tirun: error: model.seed=abc is not an integer"
        line = _one_error_line(in_venv(installed, tmp_path, "tirun", *where, "model=nope"))
        assert "model=nope is not a choice; use one of mine, sd15," in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_configs"]
