"""Where tirun's configs live, and the one way every module composes them.

The config folder ships inside the package (`tirun/conf`, package data: Hydra's "application
packaging"), so a wheel, `pip install git+URL` and the editable install compose the same files
from wherever they are run. A user's own folder composes on top of it: `--config-dir DIR` or
`hydra.searchpath=[file:///abs/DIR]` (docs/configuration.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parent / "conf"
CONFIG_NAME = "config"


def folder_problem() -> str | None:
    """Why the packaged config folder cannot be used (a broken install), or None."""
    if not (CONF / f"{CONFIG_NAME}.yaml").is_file():
        return (
            f"tirun's config folder {CONF} has no {CONFIG_NAME}.yaml: the install is incomplete; "
            "reinstall tirun (pip install --force-reinstall .)"
        )
    return None


def yaml_problem(error: yaml.YAMLError) -> str:
    """A config file that is not YAML, in one line: which file, which line, what is wrong."""
    mark = getattr(error, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}" if mark else "a config file"
    what = getattr(error, "problem", None) or str(error).splitlines()[0]
    inside = mark is not None and Path(mark.name).is_relative_to(CONF)
    fix = "reinstall tirun, or fix the file" if inside else "fix the file"
    return f"{where} is not valid YAML ({what}): {fix}"


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python -m tirun OVERRIDES` runs with, for modules and scripts that compose
    without the command line; inside a Hydra run, through the run's own config loader (so a
    user's `--config-dir` still applies), outside one from `CONF` (`hydra.searchpath=[...]`
    among the overrides adds a user's folder)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(CONFIG_NAME, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(CONFIG_NAME, overrides=list(overrides))
