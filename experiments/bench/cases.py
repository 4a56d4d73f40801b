"""The settings every part of the benchmark shares, and one point of its grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "results"
TOY_MODEL = REPO / "tirun" / "assets" / "toy" / "model"
TOKEN, INITIALIZER = "<bench-word>", "toy"
LR, WEIGHT_DECAY = 5e-3, 1e-2
PROMPTS = ["a photo of a {}", "a painting in the style of {}"]
GUIDANCE = 7.5
TARGETS = {"floor_ratio": 1.05, "speedup_vs_common": 1.3, "sampling_ratio": 0.95}
# The trainer's Hydra model preset for each benchmark model.
TIRUN_MODEL = {"sd15": "sd15_random", "toy": "toy", "tiny-sd1": "tiny"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """One point of the grid: every variant of a case runs on exactly these settings."""

    model: str
    device: str
    resolution: int
    batch: int
    precision: str = "fp32"
    attention: str = "sdpa"

    @property
    def label(self) -> str:
        return f"{self.resolution}px b{self.batch} {self.precision} {self.attention}"

    @property
    def weight_dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


@dataclass(frozen=True)
class Plan:
    """How many steps to take; `timed` is split around the tirun run."""

    warmup: int = 2
    timed: int = 6
    phase_steps: int = 2
    sample_steps: int = 8
    images_per_prompt: int = 1
    sample_repeats: int = 2
    threads: int = 2
    profile: bool = True
