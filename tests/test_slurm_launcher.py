"""The SLURM launcher without a cluster: a sweep that cannot be submitted is one line from
`python -m tirun`, though Hydra's plugin scan runs the launcher's module a second time."""

from __future__ import annotations

from tests.conftest import tirun_process


def test_a_slurm_sweep_without_sbatch_is_one_line(tmp_path):
    result = tirun_process(
        "--multirun",
        "hydra/launcher=slurm",
        "+debug=default",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env={"PATH": "/nonexistent"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "tirun: error: hydra/launcher=slurm needs SLURM's `sbatch` on the PATH: run the sweep "
        "on the cluster's login node (cluster/local_slurm.sh start makes a test cluster here)"
    ]
