"""`hydra/launcher=slurm`'s class. Hydra takes launchers from the `hydra_plugins` package only,
and its plugin scan executes each module there again, so a class defined here would exist twice
and `python -m tirun` could not catch the `SubmissionError` it raises: the launcher's code lives
in `tirun.slurm_launcher`, imported once."""

from tirun import slurm_launcher


class SlurmLauncher(slurm_launcher.SlurmLauncher):
    """Hydra's submitit SLURM launcher that ends a sweep as the local launcher does."""
