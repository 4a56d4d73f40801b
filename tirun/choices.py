"""Every enumerated config key with its choices, and every number with its range, in one place.

The command line checks a composed config against them before anything runs (`check`), so a
typo is one line that lists the choices instead of a silent default or a library's sentence;
the modules that act on a key take its choices from here, so a new value cannot be added in one
place and forgotten in the other. Light on purpose: no torch, so `--cfg job` stays quick.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, ListConfig, OmegaConf

SCHEDULERS = ("ddim", "ddpm")
# `train.loop`: each name's training function, `train(cfg, run_dir, keep_tracking)` returning
# (metrics, objects), named by its dotted path so that torch loads only when a run starts.
LOOPS = {
    "tirun": "tirun.train.train",
    "common": "tirun.toybench.common.train",  # ToyBench's peer: the diffusers example's loop
}
CHOICES: dict[str, tuple] = {
    "word.init": ("embedding", "encoder_output"),
    "word.norm": (None, "vocab"),
    "train.loop": tuple(LOOPS),
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.attention": ("sdpa", "xformers", "eager"),
    "train.early_stop.keep": ("last", "best", "validated"),
    "validation.scheduler": SCHEDULERS,
    "application.sampling.scheduler": SCHEDULERS,
    "dataset.crop": ("center", "random"),
    "template.kind": ("object", "style"),
    "export": ("diffusers", "a1111", "official", "kohya"),  # a list: each item one of these
}
# (lowest, highest, whether the lowest itself is allowed): the numbers a run cannot work with.
RANGES: dict[str, tuple[float, float, bool]] = {
    "optimizer.lr": (0.0, math.inf, False),
    "optimizer.warmup_steps": (0, math.inf, True),
    "train.max_steps": (1, math.inf, True),
    "train.batch_size": (1, math.inf, True),
    "train.grad_accum": (1, math.inf, True),
    "word.num_vectors": (1, math.inf, True),
    "word.image_token_p": (0.0, 1.0, True),
    "word.init_l2": (0.0, math.inf, True),
    "dataset.flip_p": (0.0, 1.0, True),
    "dataset.repeats": (1, math.inf, True),
}


def _shown(value) -> str:
    return "null" if value is None else str(value)


def _select(cfg: DictConfig, key: str):
    """The key's value, or a sentinel when the config has no such key (another group's)."""
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except Exception:  # an interpolation that cannot resolve yet is checked where it is used
        return _ABSENT


_ABSENT = object()


def problem(cfg: DictConfig) -> str | None:
    """The first key of ``cfg`` outside its choices or range, said in one line; None if none."""
    for key, choices in CHOICES.items():
        value = _select(cfg, key)
        if value is _ABSENT:
            continue
        listed = isinstance(value, ListConfig | list | tuple)
        for item in list(value) if listed else [value]:
            if item not in choices:
                said = f"{key}={_shown(list(value) if listed else value)}"
                if listed:
                    said += f": {_shown(item)}"
                return f"{said} is not a choice; use one of {', '.join(map(_shown, choices))}"
    for key, (low, high, inclusive) in RANGES.items():
        value = _select(cfg, key)
        if value is _ABSENT or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{key}={value} is not a number"
        if value < low or (value == low and not inclusive) or value > high:
            bound = f"between {low:g} and {high:g}" if high != math.inf else f"{low:g} or more"
            if not inclusive:
                bound = f"more than {low:g}"
            return f"{key}={value} is out of range: it must be {bound}"
    return None


def check(cfg: DictConfig) -> None:
    """Raise a one-line ValueError for the first key of ``cfg`` outside its choices or range."""
    message = problem(cfg)
    if message:
        raise ValueError(message)
