"""Training that stops by itself: DVAR (Voronov et al., NeurIPS 2023) on a deterministic objective.

The training loss of Textual Inversion is too noisy to say when a word is learned: each step
draws new images, noise and timesteps. The same loss on one *fixed* batch (fixed images,
sentences, noise and timesteps) is a smooth curve. Every `every` steps it is evaluated; once
the variance of its last `window` values falls below `threshold` times its variance over the
whole run, the curve has flattened and training stops. The lowest value seen names the best
snapshot, which the run keeps when `keep=best`, and a final value well above it flags a word
that degraded.

Where a validation score exists (the toy world's oracle reading the run's validation samples,
`validation.oracle=true`), `keep=validated` keeps the word at the highest score instead, and a
last score well below it flags the word as degraded too.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field

import torch

from tirun.choices import CHOICES

log = logging.getLogger("tirun.train")


@dataclass
class EarlyStop:
    """The DVAR rule and the best snapshot by the deterministic loss.

    Args:
        every: evaluate the fixed-batch loss every N steps (0: off).
        window: how many recent evaluations the variance is taken over.
        threshold: stop when var(recent window) < threshold × var(whole run).
        keep: `best` (the word at the lowest fixed-batch loss), `validated` (the word at the
            highest validation score) or `last`.
        degrade_ratio: flag the run when its final loss exceeds the best by this factor (or its
            final validation score falls below the best by it).
    """

    every: int = 0
    window: int = 10
    threshold: float = 0.05
    keep: str = "last"
    degrade_ratio: float = 1.1
    history: list[tuple[int, float]] = field(default_factory=list)
    best: tuple[int, float] | None = None
    best_vectors: list[list[list[float]]] | None = None
    stopped: dict | None = None
    validation: list[tuple[int, float]] = field(default_factory=list)
    validated: tuple[int, float] | None = None
    validated_vectors: list[list[list[float]]] | None = None

    def __post_init__(self) -> None:
        if self.keep not in CHOICES["train.early_stop.keep"]:
            raise ValueError(
                f"train.early_stop.keep={self.keep!r} is unknown; use one of "
                f"{CHOICES['train.early_stop.keep']}"
            )
        if self.every and self.window < 2:
            raise ValueError(f"train.early_stop.window={self.window} must be 2 or more")

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def ratio(self) -> float | None:
        """var(last window) / var(all evaluations), once there are two windows of them."""
        values = [v for _, v in self.history]
        if len(values) < 2 * self.window:
            return None
        whole = statistics.pvariance(values)
        return statistics.pvariance(values[-self.window :]) / whole if whole > 0 else 0.0

    def record(self, step: int, loss: float, vectors: list[torch.Tensor]) -> bool:
        """Add one evaluation; True when training should stop now."""
        self.history.append((step, loss))
        if self.best is None or loss < self.best[1]:
            self.best = (step, loss)
            self.best_vectors = [v.detach().float().cpu().tolist() for v in vectors]
        ratio = self.ratio()
        if ratio is not None and ratio < self.threshold:
            self.stopped = {
                "step": step,
                "reason": f"DVAR: variance of the last {self.window} fixed-batch losses is "
                f"{ratio:.3f} of the run's (< {self.threshold})",
                "ratio": ratio,
            }
            log.info("early stop at step %d: %s", step, self.stopped["reason"])
            return True
        return False

    def record_validation(self, step: int, score: float, vectors: list[torch.Tensor]) -> None:
        """Add one validation score (higher is better). Of equal scores the latest is kept: a
        grid of a few dozen samples ties often, and on ToyBench's dev split the later of tied
        words was as good or better (experiments/results/calibration.md)."""
        self.validation.append((step, score))
        if self.validated is None or score >= self.validated[1]:
            self.validated = (step, score)
            self.validated_vectors = [v.detach().float().cpu().tolist() for v in vectors]

    def kept(self) -> tuple[int, list[list[list[float]]]] | None:
        """The step and vectors of the word to save instead of the last one (None: the last)."""
        if self.keep == "best" and self.best:
            return self.best[0], self.best_vectors
        if self.keep == "validated" and self.validated:
            return self.validated[0], self.validated_vectors
        return None

    def outcome(self, final_step: int) -> dict:
        """What metrics.json says: when and why it stopped, the snapshot kept, a degradation."""
        result: dict = {
            "evaluations": len(self.history),
            "stopped": self.stopped,
            "history": [list(h) for h in self.history],
            "validation": [list(v) for v in self.validation],
        }
        kept: dict = {"step": final_step, "why": "keep=last"}
        degraded = []
        if self.best is not None:
            last_step, last = self.history[-1]
            result["best"] = {"step": self.best[0], "loss": self.best[1]}
            if last > self.best[1] * self.degrade_ratio:
                degraded.append(
                    f"its fixed-batch loss rose from {self.best[1]:.4f} at step {self.best[0]} "
                    f"to {last:.4f} at step {last_step}"
                )
            if self.keep == "best":
                kept = {"step": self.best[0], "loss": self.best[1],
                        "why": "keep=best: the lowest fixed-batch loss"}  # fmt: skip
        if self.validated is not None:
            last_step, last = self.validation[-1]
            result["best_validated"] = {"step": self.validated[0], "score": self.validated[1]}
            if last * self.degrade_ratio < self.validated[1]:
                degraded.append(
                    f"its validation score fell from {self.validated[1]:.3f} at step "
                    f"{self.validated[0]} to {last:.3f} at step {last_step}"
                )
            if self.keep == "validated":
                kept = {"step": self.validated[0], "score": self.validated[1],
                        "why": "keep=validated: the highest validation score"}  # fmt: skip
        if degraded:
            log.warning(
                "the word degraded: %s%s",
                "; ".join(degraded),
                f"; the word of step {kept['step']} is kept ({kept['why']})"
                if kept["step"] != final_step
                else " (train.early_stop.keep=best or validated keeps an earlier one)",
            )
        result.update(kept=kept, degraded=bool(degraded))
        return result

    def state_dict(self) -> dict:
        return {
            "history": self.history,
            "best": self.best,
            "best_vectors": self.best_vectors,
            "stopped": self.stopped,
            "validation": self.validation,
            "validated": self.validated,
            "validated_vectors": self.validated_vectors,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = [tuple(h) for h in state.get("history", [])]
        self.best = tuple(state["best"]) if state.get("best") else None
        self.best_vectors = state.get("best_vectors")
        self.stopped = state.get("stopped")
        self.validation = [tuple(v) for v in state.get("validation", [])]
        self.validated = tuple(state["validated"]) if state.get("validated") else None
        self.validated_vectors = state.get("validated_vectors")
