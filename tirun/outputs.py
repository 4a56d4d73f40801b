"""Where a run's word goes: the saved word in every format asked for, snapshots along the way,
and the file names each format is written under (the file names themselves are the readers'
constants: `embeddings.DIFFUSERS_NAME`, `xti.FILE_NAME`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from tirun import embeddings, xti
from tirun.early_stop import EarlyStop
from tirun.word import Word


def save_outputs(
    cfg: DictConfig, run_dir: Path, word: Word, layers: list[str], step: int, early: EarlyStop
) -> list[str]:
    """The learned word in every format of ``cfg.export`` (an XTI word: its own file); with
    ``early_stop.keep=best`` or ``validated``, the word at its lowest fixed-batch loss or highest
    validation score."""
    kept = early.kept() or (step, None)
    if layers:
        return [str(p) for p in save_word(word, layers, run_dir / xti.FILE_NAME, *kept)]
    learned = word.learned(*kept)
    return [
        str(p)
        for fmt in cfg.export
        for p in embeddings.save(learned, export_path(run_dir, fmt, learned), fmt)
    ]


def snapshot_path(run_dir: Path, step: int) -> Path:
    return run_dir / "snapshots" / f"step_{step:06d}.safetensors"


def save_word(word: Word, layers: list[str], path: Path, step: int, vectors=None) -> list[Path]:
    """The word in diffusers' format (two files for SDXL), or an XTI word in its own."""
    learned = word.learned(step, vectors)
    if layers:
        return [xti.save(xti.XTIWord(learned.token, learned.vectors[0], layers, step), path)]
    return embeddings.save(learned, path, "diffusers")


def export_path(run_dir: Path, fmt: str, learned: embeddings.LearnedWord) -> Path:
    """Where each format's file goes: the names the other tools look for."""
    name = learned.token.strip("<>") or "word"
    sdxl = len(learned.vectors) == 2
    return {
        "diffusers": run_dir / embeddings.DIFFUSERS_NAME,
        "a1111": run_dir / f"{name}.{'safetensors' if sdxl else 'pt'}",
        "official": run_dir / "embeddings.pt",
        "kohya": run_dir / f"{name}.kohya.safetensors",
    }.get(fmt, run_dir / fmt)


def word_file(metrics: dict, where: str) -> Path:
    """The word a training run just saved (its ``metrics``), never a file an earlier run left in
    the same folder; of its formats, the one diffusers reads (an XTI word has one file)."""
    if metrics.get("status", "finished") != "finished":
        raise ValueError(
            f"training ended with status {metrics['status']!r} and saved no word: nothing to apply"
        )
    files = [Path(f) for f in metrics.get("files", [])]
    if files:
        readable = [f for f in files if f.name in (embeddings.DIFFUSERS_NAME, xti.FILE_NAME)]
        return (readable or files)[0]
    raise ValueError(
        f"{where} holds no learned word to apply: train one or give embeddings=[path,...]"
    )
