"""Learned-word files: save, load and convert the formats other tools read and write.

A learned word is a placeholder token with k vectors per text encoder. The formats in use:

- ``diffusers``: ``learned_embeds.safetensors`` = ``{token: [k, dim]}``; for SDXL the training
  example writes a second file, ``learned_embeds_2.safetensors``, for the second encoder.
- ``a1111`` (AUTOMATIC1111 web UI): ``.pt`` with ``string_to_token`` (``{"*": 265}``),
  ``string_to_param`` (``{"*": [k, dim]}``), ``name``, ``step``, ``sd_checkpoint``,
  ``sd_checkpoint_name``; SDXL words are ``.safetensors`` with ``clip_l``/``clip_g``.
- ``official`` (the paper's code): ``embeddings.pt`` = ``{"string_to_token": {tok: id},
  "string_to_param": {tok: [k, dim]}}``, one text encoder only.
- ``kohya`` (sd-scripts): ``.safetensors`` = ``{"emb_params": [k, dim]}``; SDXL ``clip_l`` (768)
  and ``clip_g`` (1280).

Loading detects the layout from the content, not the suffix. Pickled files (``.pt``/``.bin``)
are read only through torch's allow-list unpickler (``weights_only=True``), widened as
AUTOMATIC1111 widens it (``ParameterDict``, ``OrderedDict``), so a file that would run code
when unpickled is refused, never executed.

    python -m tirun.embeddings convert IN OUT --to {diffusers,a1111,official,kohya} [--token T]
    python -m tirun.embeddings show FILE
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tirun.choices import CHOICES
from tirun.files import atomic_path

FORMATS = CHOICES["export"]
DIFFUSERS_NAME = "learned_embeds.safetensors"
# A1111 and the official code key a word by "*", CLIP's token id 265; the official code swaps
# the embedding of that id, so a prompt there says "*" whatever the word is called.
STAR, STAR_ID = "*", 265
SDXL_KEYS = ("clip_l", "clip_g")
PICKLE_ALLOWED = [torch.nn.ParameterDict, OrderedDict]

Source = str | Path | tuple[str | Path, str | Path]


@dataclass
class LearnedWord:
    """A placeholder token and its vectors, one ``[k, width]`` tensor per text encoder.

    Args:
        token: the placeholder, e.g. ``"<cat-toy>"``; vector ``i > 0`` is named ``token_i``.
        vectors: ``[clip]`` for SD 1.x/2.x, ``[clip_l, clip_g]`` (768, 1280 wide) for SDXL.
        step: the training step the vectors come from, when known.
        checkpoint_name: the model the word was trained on (A1111's ``sd_checkpoint_name``).
    """

    token: str
    vectors: list[torch.Tensor]
    step: int | None = None
    checkpoint_name: str | None = None

    def __post_init__(self) -> None:
        if not self.token or not isinstance(self.token, str):
            raise ValueError(f"a learned word needs a non-empty token name, got {self.token!r}")
        if len(self.vectors) not in (1, 2):
            raise ValueError(
                f"{self.token} has {len(self.vectors)} vector sets; give one per text encoder "
                "(1 for SD1/SD2, 2 for SDXL)"
            )
        # Old diffusers files hold a single vector as a 1-D tensor.
        self.vectors = [
            v.detach().unsqueeze(0) if v.dim() == 1 else v.detach() for v in self.vectors
        ]
        if any(v.dim() != 2 for v in self.vectors):
            shapes = [list(v.shape) for v in self.vectors]
            raise ValueError(f"{self.token} has vectors of shape {shapes}; each must be [k, width]")
        counts = {v.shape[0] for v in self.vectors}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(
                f"{self.token} has {sorted(counts)} vectors across its text encoders; "
                "every encoder needs the same k >= 1"
            )

    def num_vectors(self) -> int:
        return self.vectors[0].shape[0]

    def tokens(self) -> list[str]:
        """The token names of the k vectors: ``token, token_1, ..., token_{k-1}``."""
        return [self.token] + [f"{self.token}_{i}" for i in range(1, self.num_vectors())]

    @property
    def widths(self) -> list[int]:
        return [v.shape[1] for v in self.vectors]


def prompt_tokens(word: LearnedWord) -> str:
    """The text standing for ``word`` in a prompt once it is expanded: ``"<t> <t>_1 <t>_2"``.

    Use it where you tokenize yourself (training, ``prompt_embeds``). Give a diffusers
    pipeline the bare ``word.token``: its ``maybe_convert_prompt`` expands it to this string
    itself, and given this string it replaces every ``<t>`` again, inside ``<t>_1`` too,
    garbling the prompt.

    Args:
        word: the learned word.
    """
    return " ".join(word.tokens())


# Saving


def save(word: LearnedWord, path: str | Path, format: str) -> list[Path]:
    """Write ``word`` in one of the formats other tools read; every file is written atomically.

    Args:
        word: the learned word.
        path: for ``diffusers`` a folder (``learned_embeds.safetensors`` goes in it) or a
            ``.safetensors`` file; for SDXL words the second encoder's file sits beside it with
            ``_2`` in its name (``learned_embeds_2.safetensors``). For ``a1111`` and ``official``
            a ``.pt`` file (``.safetensors`` for SDXL words in ``a1111``), for ``kohya`` a
            ``.safetensors`` file.
        format: one of ``diffusers``, ``a1111``, ``official``, ``kohya``.

    Returns:
        The paths written, the first encoder's file first.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is unknown; use one of {FORMATS}")
    path = Path(path)
    sdxl = len(word.vectors) == 2
    meta = _metadata(word)
    if format == "diffusers":
        if path.suffix in (".pt", ".bin", ".ckpt"):
            _check_suffix(path, format, (".safetensors",), sdxl)
        first = path if path.suffix == ".safetensors" else path / DIFFUSERS_NAME
        targets = [first, _second_path(first)] if sdxl else [first]
        if not sdxl and _second_path(first).exists():
            # `load` would read the old second-encoder file as part of this word.
            raise ValueError(
                f"{_second_path(first)} is left from an SDXL word and would be read as the second "
                f"encoder of {word.token}: remove it or save to another folder"
            )
        for target, vectors in zip(targets, word.vectors, strict=True):
            _save_safetensors(target, {word.token: vectors}, meta)
        return targets
    if format == "official" and sdxl:
        raise ValueError(
            f"{word.token} is an SDXL word (two text encoders) and the official format holds one; "
            "save it as diffusers, a1111 or kohya"
        )
    if sdxl or format == "kohya":
        _check_suffix(path, format, (".safetensors",), sdxl)
        tensors = dict(zip(SDXL_KEYS, word.vectors, strict=True)) if sdxl else None
        _save_safetensors(path, tensors or {"emb_params": word.vectors[0]}, meta)
        return [path]
    _check_suffix(path, format, (".pt", ".bin"), sdxl)
    vectors = word.vectors[0].cpu().contiguous()
    if format == "a1111":
        data = {
            "string_to_token": {STAR: STAR_ID},
            "string_to_param": {STAR: vectors},
            "name": word.token,
            "step": word.step,
            "sd_checkpoint": None,
            "sd_checkpoint_name": word.checkpoint_name,
        }
    else:
        data = {"string_to_token": {word.token: STAR_ID}, "string_to_param": {word.token: vectors}}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return [path]


def _metadata(word: LearnedWord) -> dict[str, str]:
    """safetensors headers hold strings only; they carry what kohya/A1111 files have no key for."""
    meta = {"format": "pt", "name": word.token}
    if word.step is not None:
        meta["step"] = str(word.step)
    if word.checkpoint_name is not None:
        meta["sd_checkpoint_name"] = word.checkpoint_name
    return meta


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _check_suffix(path: Path, format: str, allowed: tuple[str, ...], sdxl: bool) -> None:
    if path.suffix not in allowed:
        kind = "SDXL words" if sdxl else "words"
        raise ValueError(
            f"{format} stores {kind} in {' or '.join(allowed)} files, and {path} ends in "
            f"{path.suffix or 'no suffix'}: name it {path.with_suffix(allowed[0]).name}"
        )


def _second_path(first: Path) -> Path:
    """The SDXL second-encoder file beside ``first``, named as diffusers' SDXL example names it.

    ``learned_embeds.safetensors`` -> ``learned_embeds_2.safetensors`` (and the example's
    ``learned_embeds-steps-500`` -> ``learned_embeds_2-steps-500``); other names get ``_2``.
    """
    name = first.stem
    if "learned_embeds" in name and "learned_embeds_2" not in name:
        return first.with_name(name.replace("learned_embeds", "learned_embeds_2", 1) + first.suffix)
    return first.with_name(f"{name}_2{first.suffix}")


# Loading


def load(path: Source, token: str | None = None) -> LearnedWord:
    """Read a learned word from any of the formats, detected from the file content.

    The token is, in order: ``token``; the name the file carries (the diffusers key, A1111's
    ``name``, the official code's key unless it is ``"*"``, or a ``name`` in the safetensors
    header); else the file stem in angle brackets (``cat_toy.pt`` -> ``<cat_toy>``), since
    kohya files carry no name and a bare stem such as ``cat`` would shadow a real word.

    Args:
        path: a file, a diffusers folder holding ``learned_embeds.safetensors`` (or ``.bin``),
            or a pair of files (first and second text encoder) for a diffusers SDXL word. A
            diffusers file whose ``_2`` sibling exists (``learned_embeds_2.safetensors``) is
            read as an SDXL word with it.
        token: overrides the name the file carries.
    """
    return _load(path, token)[0]


def _load(path: Source, token: str | None) -> tuple[LearnedWord, str]:
    """The word and the name of the format it was found in."""
    if isinstance(path, (tuple, list)):
        if len(path) != 2:
            raise ValueError(
                f"give one file or a pair (first, second encoder), not {len(path)} paths"
            )
        return _load_pair(Path(path[0]), Path(path[1]), token)
    file = _resolve(Path(path))
    data, meta = _read(file)
    fmt, name, vectors, step, checkpoint = _parse(data, meta, file)
    if fmt == "diffusers" and _second_path(file).is_file():
        return _load_pair(file, _second_path(file), token)
    word = LearnedWord(
        token=token or name or f"<{file.stem.strip('<>')}>",
        vectors=[v.float() for v in vectors],
        step=step,
        checkpoint_name=checkpoint,
    )
    return word, fmt


def _load_pair(first: Path, second: Path, token: str | None) -> tuple[LearnedWord, str]:
    parts = []
    for file in (_resolve(first), _resolve(second)):
        data, meta = _read(file)
        _, name, vectors, step, checkpoint = _parse(data, meta, file)
        if len(vectors) != 1:
            raise ValueError(
                f"{file} holds {len(vectors)} text encoders; a pair needs one in each file"
            )
        parts.append((name, vectors[0], step, checkpoint))
    names = {p[0] for p in parts if p[0]}
    if len(names) > 1 and token is None:
        raise ValueError(
            f"{first} and {second} name different tokens {sorted(names)}: pass token= to choose one"
        )
    word = LearnedWord(
        token=token or next(iter(names), None) or f"<{first.stem.strip('<>')}>",
        vectors=[parts[0][1].float(), parts[1][1].float()],
        step=parts[0][2] if parts[0][2] is not None else parts[1][2],
        checkpoint_name=parts[0][3] or parts[1][3],
    )
    return word, "diffusers (SDXL pair)"


def _resolve(path: Path) -> Path:
    if path.is_dir():
        for name in (DIFFUSERS_NAME, "learned_embeds.bin"):
            if (path / name).is_file():
                return path / name
        raise ValueError(
            f"{path} is a folder without {DIFFUSERS_NAME}: give the embedding file itself"
        )
    if not path.is_file():
        raise ValueError(f"{path} does not exist: give the path of an embedding file")
    if path.stat().st_size == 0:
        raise ValueError(
            f"{path} is empty: the file was not written completely; save the word again"
        )
    return path


def _read(path: Path) -> tuple[Any, dict[str, str]]:
    """The file's object and its safetensors header, choosing the reader from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file starts with an 8-byte header length and then the JSON header.
    if head[8:9] == b"{":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"{path} is a damaged safetensors file ({_first_line(error)}); save it again"
            ) from None
    # torch writes a zip archive ("PK") or, in its legacy format, a pickle (protocol opcode 0x80).
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise ValueError(f"{path} is neither a torch (.pt/.bin) nor a safetensors file")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(PICKLE_ALLOWED):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it did not write
            return torch.load(path, map_location="cpu", weights_only=True), {}
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise ValueError(
            f"{path} is refused: it contains non-tensor objects{what} that only a full unpickler "
            "would build, and it was not executed; load it only if you trust it and re-save the "
            "tensors"
        ) from None
    # Damaged or foreign archives raise KeyError, RuntimeError, EOFError... from torch.load.
    except Exception as error:
        raise ValueError(
            f"{path} is neither a torch (.pt/.bin) nor a safetensors file ({_first_line(error)})"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _parse(
    data: Any, meta: dict[str, str], path: Path
) -> tuple[str, str | None, list[torch.Tensor], int | None, str | None]:
    """(format, token or None, vectors per encoder, step, checkpoint name) of a file's object."""
    step = _int(meta.get("step"))
    checkpoint = meta.get("sd_checkpoint_name")
    name = meta.get("name")
    if isinstance(data, torch.Tensor):
        return "tensor", name, [data], step, checkpoint
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} holds a {type(data).__name__}, not a dict of tensors: {_EXPECTED}"
        )
    if "string_to_param" in data:
        params = data["string_to_param"]
        # ParameterDict from torch 1.11 files keeps its tensors in _parameters, as A1111 notes.
        params = dict(getattr(params, "_parameters", params))
        if len(params) != 1:
            raise ValueError(
                f"{path} has {len(params)} terms in string_to_param ({sorted(params)}); "
                "a word file holds exactly one"
            )
        key, vectors = next(iter(params.items()))
        fmt = "a1111" if "name" in data else "official"
        name = data.get("name") or (key if key != STAR else None)
        step = _int(data.get("step"))
        return fmt, name, [_tensor(vectors, path, key)], step, data.get("sd_checkpoint_name")
    if all(k in data for k in SDXL_KEYS):
        vectors = [_tensor(data[k], path, k) for k in SDXL_KEYS]
        return "sdxl (clip_l/clip_g)", name, vectors, step, checkpoint
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:
        key, vectors = next(iter(tensors.items()))
        if key == "emb_params":
            return "kohya", name, [vectors], step, checkpoint
        return "diffusers", key, [vectors], step, checkpoint
    raise ValueError(
        f"{path} has an unknown layout (keys {sorted(map(str, data))[:6]}): {_EXPECTED}"
    )


_EXPECTED = (
    "expected {token: tensor} (diffusers), string_to_param (A1111/official), "
    "emb_params (kohya) or clip_l/clip_g (SDXL)"
)


def _tensor(value: Any, path: Path, key: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{path}: {key!r} holds a {type(value).__name__}, not a tensor")
    return value


def _int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``convert IN OUT --to FORMAT [--token T]`` and ``show FILE``; errors are one line, exit 2."""
    parser = _Parser(prog="python -m tirun.embeddings", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="rewrite a word file in another format")
    convert.add_argument("source", help="the word file (or diffusers folder)")
    convert.add_argument("target", help="the file (or diffusers folder) to write")
    convert.add_argument("--to", required=True, choices=FORMATS)
    convert.add_argument("--token", help="rename the word")
    show = commands.add_parser("show", help="print a word file's token, vectors, widths, norms")
    show.add_argument("source")
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            word = load(args.source, token=args.token)
            for written in save(word, args.target, args.to):
                print(written)
        else:
            word, fmt = _load(args.source, None)
            print(describe(word, fmt))
    except (ValueError, OSError) as error:
        print(f"tirun.embeddings: error: {_first_line(error)}", file=sys.stderr)
        return 2
    return 0


def describe(word: LearnedWord, fmt: str | None = None) -> str:
    """A few lines for people: token, format, step, and per encoder the shape and vector norms.

    Args:
        word: the learned word.
        fmt: the format the word was read from, if known.
    """
    lines = [f"token: {word.token}  ({word.num_vectors()} vectors: {prompt_tokens(word)})"]
    if fmt:
        lines.append(f"format: {fmt}")
    if word.step is not None:
        lines.append(f"step: {word.step}")
    if word.checkpoint_name:
        lines.append(f"checkpoint: {word.checkpoint_name}")
    labels = ["text_encoder", "text_encoder_2"]
    for label, vectors in zip(labels, word.vectors, strict=False):
        norms = ", ".join(f"{n:.4f}" for n in vectors.float().norm(dim=-1).tolist())
        lines.append(
            f"{label}: [{vectors.shape[0]}, {vectors.shape[1]}] {vectors.dtype}  norms: {norms}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
