"""Training checkpoints that a kill cannot corrupt and a resume continues exactly.

A checkpoint is a folder `checkpoints/step_000500/` holding everything a resume needs: the
word's vectors and the random generators' states (safetensors), the optimizer state (a tensor
dict read back with `weights_only=True`), the step, the lr scheduler and the sampler queue
(JSON) and the resolved config. It is written under a temporary name and renamed when
complete; then the small `checkpoints/latest` pointer is replaced, last.
"""

from __future__ import annotations

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


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, torch.Tensor]
    optimizer: dict
    state: dict


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
    save_file(
        {k: v.contiguous() for k, v in checkpoint.tensors.items()}, partial / "tensors.safetensors"
    )
    torch.save(checkpoint.optimizer, partial / "optimizer.pt")
    (partial / "config.yaml").write_text(config_yaml)
    (partial / COMPLETE).write_text(json.dumps({"step": checkpoint.step, **checkpoint.state}))
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


def find(resume: str, folder: Path) -> Path | None:
    """The checkpoint `resume` names: `latest` (this run's newest complete one) or a path.

    A half-written or damaged newest checkpoint is skipped with a one-line warning, falling
    back to the previous complete one; `latest` with no checkpoint at all is an error, never a
    silent fresh start.
    """
    if resume != "latest":
        path = Path(resume).expanduser()
        if (path / COMPLETE).is_file():
            return path
        raise ValueError(f"resume={resume!r} is not a complete checkpoint folder (no {COMPLETE})")
    candidates = complete_checkpoints(folder)
    if folder.is_dir():
        for broken in sorted(folder.glob("step_*")) + sorted(folder.glob(".step_*.partial")):
            if broken not in candidates:
                log.warning("skipping half-written checkpoint %s", broken)
    if not candidates:
        raise ValueError(
            f"resume=latest found no complete checkpoint in {folder}; point hydra.run.dir at the "
            "run to resume, or drop resume= to start afresh"
        )
    pointer = folder / POINTER
    named = folder / pointer.read_text().strip() if pointer.is_file() else None
    return named if named in candidates else candidates[-1]


def load(path: Path) -> Checkpoint:
    state = json.loads((path / COMPLETE).read_text())
    try:
        optimizer = torch.load(path / "optimizer.pt", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"checkpoint {path}: optimizer state unreadable ({error.__class__.__name__})"
        ) from None
    return Checkpoint(
        step=state.pop("step"),
        tensors=load_file(path / "tensors.safetensors"),
        optimizer=optimizer,
        state=state,
    )
