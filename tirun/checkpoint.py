"""Training checkpoints that a kill cannot corrupt, damage cannot fool, and a resume continues
exactly.

A checkpoint is a folder `checkpoints/step_000500/` holding everything a resume needs: the
word's vectors and the random generators' states (safetensors), the optimizer state (a tensor
dict read back with `weights_only=True`), the step, the lr scheduler, the sampler queue and
the SHA-256 of every other file (JSON), and the resolved config. It is written under a
temporary name and renamed when complete; then the small `checkpoints/latest` pointer is
replaced, last. `capture` and `restore` are the one place the trainer's state gets its names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tirun.files import atomic_write

log = logging.getLogger(__name__)
POINTER = "latest"
COMPLETE = "state.json"  # written last inside the folder: its presence marks a whole checkpoint
TENSORS, OPTIMIZER, CONFIG = "tensors.safetensors", "optimizer.pt", "config.yaml"


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, torch.Tensor]
    optimizer: dict
    state: dict


class DamagedCheckpoint(ValueError):
    """A checkpoint folder whose files are unreadable or fail their checksum."""


def capture(step: int, word, optimizer, lr_scheduler, sampler, prompts, extra: dict) -> Checkpoint:
    """Everything the loop depends on at the end of ``step``, under the names `restore` reads.

    Args:
        extra: further JSON-able loop state (the early-stop tracker, the best snapshot).
    """
    tensors = {f"vectors.{i}": v.detach().cpu() for i, v in enumerate(word.vectors)}
    tensors["rng.sampler"] = sampler.state_dict()["generator"]
    tensors["rng.batch"] = prompts.state_dict()["generator"]
    state = {
        "lr_scheduler": lr_scheduler.state_dict(),
        "sampler_queue": sampler.state_dict()["queue"],
        "loop": extra,
    }
    return Checkpoint(step, tensors, optimizer.state_dict(), state)


def restore(checkpoint: Checkpoint, word, optimizer, lr_scheduler, sampler, prompts) -> dict:
    """Put a captured state back into the loop's objects; returns the ``extra`` loop state."""
    with torch.no_grad():
        for i, vectors in enumerate(word.vectors):
            vectors.copy_(checkpoint.tensors[f"vectors.{i}"])
    optimizer.load_state_dict(checkpoint.optimizer)
    lr_scheduler.load_state_dict(checkpoint.state["lr_scheduler"])
    sampler.load_state_dict(
        {"generator": checkpoint.tensors["rng.sampler"], "queue": checkpoint.state["sampler_queue"]}
    )
    prompts.load_state_dict({"generator": checkpoint.tensors["rng.batch"]})
    return checkpoint.state.get("loop", {})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(folder: Path, checkpoint: Checkpoint, config_yaml: str, keep: int = 0) -> Path:
    """Write `folder/step_N` atomically and point `folder/latest` at it.

    Args:
        folder: the run's `checkpoints/` folder.
        checkpoint: what to store.
        config_yaml: the resolved config, stored beside the state for reproducibility.
        keep: how many complete checkpoints to keep (0 keeps all).
    """
    name = f"step_{checkpoint.step:06d}"
    final = folder / name
    partial = folder / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in checkpoint.tensors.items()}, partial / TENSORS)
    torch.save(checkpoint.optimizer, partial / OPTIMIZER)
    (partial / CONFIG).write_text(config_yaml)
    files = {f: _sha256(partial / f) for f in (TENSORS, OPTIMIZER, CONFIG)}
    state = {"step": checkpoint.step, **checkpoint.state, "files": files}
    (partial / COMPLETE).write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    atomic_write(folder / POINTER, lambda tmp: tmp.write_text(name + "\n"))
    if keep > 0:
        for old in sorted(complete_checkpoints(folder))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*") if (p / COMPLETE).is_file())


def verify(path: Path) -> dict:
    """The checkpoint's state, once every file it lists matches its checksum; else
    `DamagedCheckpoint` naming the first bad file."""
    try:
        state = json.loads((path / COMPLETE).read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no step")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DamagedCheckpoint(
            f"{path / COMPLETE} is unreadable ({error.__class__.__name__})"
        ) from None
    for name, expected in state.get("files", {}).items():
        file = path / name
        if not file.is_file() or _sha256(file) != expected:
            raise DamagedCheckpoint(f"{file} does not match its checksum")
    return state


def find(resume: str, folder: Path) -> Path:
    """The checkpoint `resume` names: `latest` (this run's newest intact one) or a path.

    A half-written or damaged newer checkpoint is skipped with a one-line warning, falling
    back to the newest intact one; `latest` with no intact checkpoint at all is an error, never
    a silent fresh start.
    """
    if resume != "latest":
        path = Path(resume).expanduser()
        if not (path / COMPLETE).is_file():
            raise ValueError(
                f"resume={resume!r} is not a complete checkpoint folder (no {COMPLETE})"
            )
        try:
            verify(path)
        except DamagedCheckpoint as error:
            raise ValueError(
                f"resume={resume!r} is damaged: {error}; resume=latest falls back to an older "
                "intact checkpoint of the run"
            ) from None
        return path
    candidates = complete_checkpoints(folder)
    if folder.is_dir():
        for broken in sorted(folder.glob("step_*")) + sorted(folder.glob(".step_*.partial")):
            if broken not in candidates:
                log.warning("skipping half-written checkpoint %s", broken)
    pointer = folder / POINTER
    named = folder / pointer.read_text(errors="replace").strip() if pointer.is_file() else None
    ordered = sorted(candidates, key=lambda p: (p == named, p.name), reverse=True)
    damaged = []
    for path in ordered:
        try:
            verify(path)
        except DamagedCheckpoint as error:
            log.warning("skipping damaged checkpoint %s: %s", path.name, error)
            damaged.append(path.name)
            continue
        return path
    if damaged:
        raise ValueError(
            f"resume=latest found no intact checkpoint in {folder} ({', '.join(damaged)} "
            "damaged); drop resume= to start afresh"
        )
    raise ValueError(
        f"resume=latest found no complete checkpoint in {folder}; point hydra.run.dir at the "
        "run to resume, or drop resume= to start afresh"
    )


def load(path: Path) -> Checkpoint:
    """Read a checkpoint that `find` chose (its checksums are verified again here)."""
    try:
        state = verify(path)
        optimizer = torch.load(path / OPTIMIZER, weights_only=True)
        tensors = load_file(path / TENSORS)
    except DamagedCheckpoint as error:
        raise ValueError(f"checkpoint {path}: {error}") from None
    except Exception as error:
        raise ValueError(
            f"checkpoint {path}: state unreadable ({error.__class__.__name__}); "
            "remove the folder to resume from an older checkpoint"
        ) from None
    state.pop("files", None)
    return Checkpoint(step=state.pop("step"), tensors=tensors, optimizer=optimizer, state=state)
