"""`hydra/launcher=slurm`'s class: Hydra takes launchers only from the `hydra_plugins`
package; what it does is `tirun.slurm`'s."""

from tirun import slurm


class SlurmLauncher(slurm.SlurmLauncher):
    """Hydra's submitit SLURM launcher that ends a sweep as the local launcher does."""
