"""Training budgets of steps or wall-clock minutes, whichever runs out first.

The pretraining shares two cores with other work, so a stage may have to stop before its
steps are done; its learning rate decays on whichever budget is nearer its end, so a cut run
still finishes at a low rate instead of mid-schedule. When the step budget binds (a quiet
machine), the run is a pure function of its seed.
"""

from __future__ import annotations

import math
import time


class Budget:
    def __init__(self, steps: int, minutes: float) -> None:
        self.steps = steps
        self.seconds = minutes * 60
        self.start = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start

    def progress(self, step: int) -> float:
        """Fraction of the budget spent after ``step`` steps, in [0, 1]."""
        return min(1.0, max(step / self.steps, self.elapsed() / self.seconds))

    def over(self) -> bool:
        """True once the wall-clock part is spent."""
        return self.elapsed() > self.seconds

    def cosine(self, step: int, peak: float, warmup: int = 0, floor: float = 0.1) -> float:
        """Linear warm-up over ``warmup`` steps, then cosine from ``peak`` to ``floor * peak``."""
        if step < warmup:
            return peak * (step + 1) / warmup
        return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * self.progress(step))))
