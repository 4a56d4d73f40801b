"""The pieces of a training step the variants share: phase timing, backward, optimizer step."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from experiments.bench.cases import Case


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Seconds per named phase; an inactive one costs nothing and leaves the step unsplit."""

    def __init__(self, device: torch.device, active: bool = True):
        self.device = device
        self.active = active
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, name: str):
        return self._phase(name) if self.active else nullcontext()

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[name] += time.perf_counter() - start


def unet_and_backward(
    unet, noisy, timesteps, states, target, clock: Stopwatch, scaler: torch.amp.GradScaler | None
) -> float:
    """UNet forward, loss and backward; a measuring clock splits off the text encoder's backward
    so the two costs can be told apart (the same operations, in two calls)."""
    condition = states.detach().requires_grad_() if clock.active else states
    with clock("unet"):
        prediction = unet(noisy, timesteps, condition).sample
        loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
        (scaler.scale(loss) if scaler else loss).backward()
    if clock.active:
        with clock("text_encoder"):
            states.backward(condition.grad)
    return loss.item()


def grad_scaler(case: Case) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling to train at all (Accelerate adds it); fp32 and bf16 do not."""
    return torch.amp.GradScaler(case.device) if case.precision == "fp16" else None


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad()


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    )
