"""`python -m tirun +exp=style`: compose the config with Hydra and train."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.types import RunMode
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from tqdm.auto import tqdm

from tirun import choices, config, schema, tracking
from tirun.config import CONF
from tirun.files import write_json

log = logging.getLogger("tirun")
# What a word learned for an application takes from the run (the command's model and training
# settings); its preset gives the rest (word, dataset, template).
RUN_SETTINGS = ("model", "train", "optimizer", "tracker", "validation", "export")


def metric_value(metrics: dict, name: str | None) -> float | None:
    """The value a sweeper optimises, by dotted name (`oracle.concept_match`)."""
    if not name:
        return None
    value = metrics
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(
                f"optimized_metric={name!r} is not in the run's metrics ({sorted(metrics)})"
            )
        value = value[part]
    return float(value)


def missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys still set to `???`, found without resolving interpolations that point at them."""
    keys = []
    for key in node:
        if key == "hydra":
            continue
        if OmegaConf.is_missing(node, key):
            keys.append(f"{prefix}{key}")
        elif OmegaConf.is_dict(node._get_node(key)):
            keys += missing_keys(node._get_node(key), f"{prefix}{key}.")
    return keys


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train a word (unless `embeddings=[...]` names saved ones), then run the application."""
    missing = missing_keys(cfg)
    if missing:
        raise ValueError(
            f"config key {missing[0]} needs a value: add {missing[0]}=... to the command"
        )
    schema.check(cfg)
    choices.check(cfg)
    # torch and diffusers load here, so `--cfg job` stays quick
    train = get_method(choices.LOOPS[cfg.train.loop])

    applying = cfg.get("application") is not None
    if applying:  # before any training: what the application needs, and the words it learns
        from tirun import applications

        applications.check(cfg)
        learn_words(cfg, run_dir, train)
    metrics, objects = (
        train(cfg, run_dir, keep_tracking=applying) if not cfg.embeddings else ({}, {})
    )
    if not applying:
        return metrics
    from tirun.applications import run as run_application

    # The run's trackers stay open through the application, so its scores and grids land in
    # the same W&B run as the training curves.
    try:
        metrics = run_application(cfg, run_dir, metrics, objects)
    finally:
        if objects:
            grids = sorted((run_dir / "samples" / cfg.application.name).glob("*.png"))
            tracking.finish(objects["accelerator"], metrics, metrics.get("files", []), grids)
    return metrics


def learn_words(cfg: DictConfig, run_dir: Path, train: Callable) -> None:
    """Learn the words `application.learn` names, unless `embeddings=[...]` gives them; they
    become the run's `embeddings`, applied as saved words are.

    Each name is a preset (`tirun/conf/exp/<name>.yaml`), learned as `python -m tirun +exp=<name>`
    learns it, on the run's `RUN_SETTINGS`, in `<run>/<name>/`.
    """
    from tirun import config
    from tirun.outputs import word_file

    learn = list(cfg.application.get("learn") or [])
    presets = sorted(f.stem for f in (CONF / "exp").glob("*.yaml"))
    unknown = [preset for preset in learn if preset not in presets]
    if unknown:
        raise ValueError(
            f"application.learn: {unknown[0]!r} is not a preset; use names from tirun/conf/exp/: "
            f"{', '.join(presets)}"
        )
    if cfg.embeddings or not learn:
        return
    files = []
    for preset in learn:
        word_cfg = config.compose([f"+exp={preset}"])
        for key in RUN_SETTINGS:
            word_cfg[key] = cfg[key]
        folder = Path(run_dir) / preset
        log.info("application %s: learning the %s word (+exp=%s) in %s",
                 cfg.application.name, preset, preset, folder)  # fmt: skip
        metrics, _ = train(word_cfg, folder)
        files.append(str(word_file(metrics, str(folder))))
    cfg.embeddings = files


def agreed_run_dir(own: Path, cpu: bool) -> Path:
    """The run folder every process of a `torchrun`/`accelerate launch` job writes to.

    Each rank composes its own config, so `${now:...}` in `hydra.run.dir` can land a second
    apart; rank 0's folder wins (broadcast over the job's process group, which Accelerate
    sets up here once and reuses in `train`). The other ranks drop the folder Hydra made for
    them if it holds nothing but Hydra's own files, and log warnings only.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return own
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=cpu)
    agreed = Path(broadcast_object_list([str(own)], from_process=0)[0])
    if not state.is_main_process:
        logging.getLogger().setLevel(logging.WARNING)
        hydra_files = {".hydra", f"{HydraConfig.get().job.name}.log"}
        if agreed.resolve() != own.resolve() and {p.name for p in own.iterdir()} <= hydra_files:
            shutil.rmtree(own, ignore_errors=True)
    return agreed


def record_failure(run_dir: Path, error: BaseException) -> None:
    """Mark a sweep job failed in its `metrics.json` (kept, if training wrote one) for the report."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics.update(status="failed", error=f"{type(error).__name__}: {first_line(error)}")
    write_json(path, metrics)


def job_failed(number: int, error: BaseException) -> None:
    """A sweep's failed job: one line on the terminal (and in the job's log), its traceback in
    the job's log file only, so a sweep of many failures stays readable."""
    log.error("job %s failed: %s", number, first_line(error))
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "job %s failed: its traceback", (number,),
        (type(error), error, error.__traceback__),
    )  # fmt: skip
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def first_line(error: BaseException) -> str:
    if isinstance(error, MissingMandatoryValue) and error.full_key:
        key = error.full_key
        return f"config key {key} needs a value: add {key}=... to the command"
    return (str(error).splitlines() or [type(error).__name__])[0]


def file_being_written(error: BaseException) -> str | None:
    """The name of the open file in the frame that raised ``error`` (or the nearest frame
    around it that has one): a failed write says no file name of its own, unlike a failed
    open (Hydra's write of `.hydra/config.yaml` on a full disk, say)."""
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                return value.name
    return None


_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_NO_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


def user_error(error: BaseException) -> str | None:
    """The one line that says what to fix, for a problem with the input or the machine; None
    for anything else (a bug, which keeps its traceback)."""
    where = re.search(r"full_key: (\S+)", str(error))
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__  # Hydra wraps what a config node's target raised
    extra = re.search(r"(\w+)\(\) got an unexpected keyword argument '(\w+)'", str(error))
    if where and extra and isinstance(error, TypeError):
        key = f"{where.group(1)}.{extra.group(2)}"
        return (
            f"{key} is not a setting {extra.group(1)} takes (the {where.group(1)} config's "
            f"_target_); drop it, e.g. '~{key}' on the command line"
        )
    if type(error).__name__ == "SafetensorError":  # safetensors' writer reports I/O in its text
        code = re.search(r"(?:code: |os error )(\d+)", str(error))
        if code:
            error = OSError(int(code.group(1)), os.strerror(int(code.group(1))))
    if isinstance(error, OSError) and error.errno is not None:
        where = error.filename or file_being_written(error) or "a file"
        if error.errno in _DISK_FULL:
            return (
                f"cannot write {where}: {error.strerror}; free disk space or point "
                "hydra.run.dir at another disk (files written before are kept)"
            )
        if error.errno in _NO_ACCESS:
            return f"cannot use {where}: {error.strerror}; check the path and its permissions"
        return f"{where}: {error.strerror}"
    if isinstance(error, ValueError | MissingMandatoryValue):
        return first_line(error)
    return None


def composition_error(args: list[str]) -> str | None:
    """Compose the command's config as Hydra will, and say in one line what stops it.

    Hydra reports a bad override or an unknown key in several lines with a traceback hint;
    an override its grammar cannot read is refused here, flags or not, and a single run is
    composed here first, its values checked against their types and choices (sweeps and flags
    are left to Hydra, whose errors `hydra_problem` says in one line).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    args, folders = own_config_folders(args)
    for arg in (a for a in args if "=" in a and not a.startswith("-")):
        try:
            OverridesParser.create().parse_overrides([arg])
        except OverrideParseException:
            key, _, value = arg.partition("=")
            return (
                f"{arg!r} cannot be read as an override: quote a value with characters such as "
                f"< > ~ or spaces, e.g. \"{key}='{value}'\" (the outer quotes are the shell's)"
            )
    if any(a.startswith("-") for a in args):
        return None

    # a user's folder (`hydra.searchpath=[...]`) composes here too; Hydra's other keys do not
    overrides = [a for a in args if not a.startswith("hydra") or a.startswith("hydra.searchpath")]
    if folders and not any(a.startswith("hydra.searchpath") for a in overrides):
        paths = ",".join(f"'file://{Path(folder).resolve()}'" for folder in folders)
        overrides.append(f"hydra.searchpath=[{paths}]")
    try:
        cfg = config.compose(overrides)
    except Exception as error:
        message = hydra_problem(error, overrides)
        if message is None:
            raise
        return message
    return schema.problem(cfg) or choices.problem(cfg)


def own_config_folders(args: list[str]) -> tuple[list[str], list[str]]:
    """The command without its `--config-dir DIR` (`-cd DIR`, `--config-dir=DIR`) flags, and
    those folders: a user's configs, composed on top of the packaged ones."""
    rest, folders = [], []
    words = iter(args)
    for arg in words:
        if arg in ("--config-dir", "-cd"):
            folders.append(next(words, ""))
        elif arg.startswith("--config-dir="):
            folders.append(arg.partition("=")[2])
        else:
            rest.append(arg)
    return rest, folders


def hydra_problem(error: BaseException, overrides: list[str]) -> str | None:
    """The one line for what stopped Hydra composing the config (a bad override, an unknown key
    or choice, a config file that is not YAML); None for anything else."""
    if isinstance(error, yaml.YAMLError):
        return config.yaml_problem(error)
    if isinstance(error, ValueError):  # Hydra's defaults list refuses a group set to null
        group = next((a.split("=")[0] for a in overrides if a.endswith("=null")), None)
        if group and (CONF / group.lstrip("+~")).is_dir():
            return f"{group}=null is not a choice; '~{group}' drops the group"
        return first_line(error)
    if isinstance(error, HydraException):
        message = f"{error} {error.__cause__ or ''}"
        absent = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", message)
        if absent and (CONF / absent.group(1)).is_dir():
            group, name = absent.groups()
            # the packaged options and those of a user's folders (`hydra.searchpath`)
            searched = " ".join(a for a in overrides if a.startswith("hydra.searchpath"))
            folders = [CONF, *map(Path, re.findall(r"file://([^',\]]+)", searched))]
            options = sorted({p.stem for f in folders for p in (f / group).glob("*.yaml")})
            listed = f"{', '.join(options)} (tirun/conf/{group}/)"
            return f"{group}={name} is not a choice; use one of {listed}"
        unknown = re.search(r"Could not override '([^']+)'", message)
        if unknown and "not in struct" in message:
            key = unknown.group(1)
            return f"{key} is not a config key; `python -m tirun --cfg job` lists them"
        return first_line(error)
    return None


def raised_in_job(error: BaseException) -> bool:
    """Whether ``error`` came from inside the job (`main`'s body) rather than from Hydra's
    composing and launching around it."""
    job = main.__wrapped__.__code__
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is job:
            return True
        tb = tb.tb_next
    return False


def fail(message: str) -> NoReturn:
    """Say ``message`` once on the terminal as `tirun: error: ...` (the run's log file, when
    Hydra opened one, keeps a copy) and exit 2."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    for bar in list(tqdm._instances):  # a progress bar left open would share the line
        bar.close()
    print(f"tirun: error: {message}", file=sys.stderr)
    sys.exit(2)


def cli() -> None:
    """`python -m tirun`: a bad command is one line; then Hydra composes and runs it."""
    problem = config.folder_problem() or composition_error(sys.argv[1:])
    if problem:
        fail(problem)
    # Hydra's own writes (.hydra/config.yaml, before the job runs) fail outside `main`; with
    # HYDRA_FULL_ERROR they reach the handler below instead of Hydra's multi-line report.
    earlier = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from tirun.slurm_launcher import SubmissionError

    try:
        main()
    except (HydraException, yaml.YAMLError) as error:  # with flags: Hydra's own, before a job
        message = None if raised_in_job(error) else hydra_problem(error, sys.argv[1:])
        if message is None or os.environ.get("TIRUN_DEBUG"):
            raise
        fail(message)
    except OSError as error:
        message = user_error(error)
        if message is None or os.environ.get("TIRUN_DEBUG"):
            raise
        fail(message)
    except SubmissionError as error:  # a launcher's: the jobs were never submitted
        if os.environ.get("TIRUN_DEBUG"):
            raise
        fail(str(error))
    finally:
        if earlier is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = earlier


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from tirun import job_environment

    hc = HydraConfig.get()
    job_environment.settle(hc.launcher)
    run_dir = agreed_run_dir(Path(hc.runtime.output_dir), cpu=cfg.train.cpu)
    cfg.resume = job_environment.requeued_resume(cfg.resume, run_dir)
    try:
        metrics = run(cfg, run_dir)
        return metric_value(metrics, cfg.optimized_metric)
    except Exception as error:
        if os.environ.get("TIRUN_DEBUG"):
            raise
        if hc.mode == RunMode.MULTIRUN:
            # Hydra's basic sweeper re-raises a job's exception after the batch and a
            # SystemExit would end the sweep at once: record the failure, let the others run.
            # None makes an Optuna sweeper mark the trial failed and go on.
            job_failed(hc.job.num, error)
            tracking.end_failed_run()
            if int(os.environ.get("RANK", "0")) == 0:
                record_failure(run_dir, job_environment.stopped_at_time_limit(error, run_dir))
            return None
        message = user_error(error)
        if message is None:
            raise
        fail(message)


if __name__ == "__main__":
    cli()
