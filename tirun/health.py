"""Training that goes wrong says so: a loss or word that is no longer finite stops the run, and
one-line warnings flag vectors that have not moved and a word norm past anything measured.

The norm threshold (`train.norm_warn_ratio`, 40) comes from ToyBench's dev split
(`experiments/results/calibration.md`): there, editability did not fall with the word's norm
anywhere up to 38x its reference (words at 2x and at 25x drew as well), so the warning marks a
word beyond everything measured, not a norm known to be bad."""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger("tirun.train")


class Health:
    """The trainer's checks, each said once.

    Args:
        stall_steps: the step by which the vectors must have moved.
        norm_warn_ratio: warn when the word's norm passes this multiple of ``reference_norm``.
        reference_norm: the larger of the vocabulary's median embedding norm and the word's
            norm at its start (Cross Initialization starts far above the vocabulary's).
    """

    def __init__(self, stall_steps: int, norm_warn_ratio: float, reference_norm: float) -> None:
        self.stall_steps = stall_steps
        self.norm_warn_ratio = norm_warn_ratio
        self.reference_norm = reference_norm
        self.norm_warned = False

    def loss_is_finite(self, loss: float, step: int) -> bool:
        """False (with the reason logged) for a NaN or infinite loss, before it reaches the word."""
        if math.isfinite(loss):
            return True
        log.warning(
            "loss is %s at step %d: stopping; the last checkpoint and embedding are kept "
            "(lower optimizer.lr or use train.mixed_precision=bf16)",
            loss,
            step,
        )
        return False

    def vectors_are_finite(self, vectors: list[torch.Tensor], step: int) -> bool:
        """False (logged) once a vector holds a NaN or infinity: a host sync, so call it only
        before something is logged or written."""
        if all(bool(torch.isfinite(v).all()) for v in vectors):
            return True
        log.warning(
            "the word's vectors became non-finite at step %d: stopping; the last checkpoint is "
            "kept (lower optimizer.lr)",
            step,
        )
        return False

    def check_stats(self, stats: dict[str, float], step: int) -> None:
        """Warn about a word that has not moved, or whose norm says it is overfit."""
        if step == self.stall_steps and stats["word/shift"] < 1e-6:
            log.warning(
                "the word's vectors have not moved after %d steps: check optimizer.lr", step
            )
        norm = stats["word/norm"]
        if norm > self.norm_warn_ratio * self.reference_norm and not self.norm_warned:
            self.norm_warned = True
            log.warning(
                "the word's norm %.2f is over %.0fx its reference %.2f (the vocabulary's typical "
                "norm or its start, the larger) at step %d: past every word measured on "
                "ToyBench's dev split; check that its samples still follow the prompt (fewer "
                "steps, a lower lr or word.init_l2)",
                norm,
                self.norm_warn_ratio,
                self.reference_norm,
                step,
            )
