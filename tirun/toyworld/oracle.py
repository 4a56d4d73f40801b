"""The oracle: a small CNN that reads every attribute off a toy image.

It is trained on fresh renders with their true attributes (all combinations, held-out ones
included), so it can score what a model generates against the ground truth the renderer knows.
Weights are safetensors with a json config beside them; nothing is unpickled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from tirun.files import atomic_write, write_json
from tirun.toyworld.budget import Budget
from tirun.toyworld.render import ATTRIBUTES, SIZE, Attributes, render_array
from tirun.toyworld.world import random_attributes

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "assets" / "toy" / "oracle"
WEIGHTS, CONFIG = "oracle.safetensors", "config.json"


class OracleNet(nn.Module):
    """Four conv stages and one linear head per attribute."""

    def __init__(self, classes: dict[str, Sequence[str]], width: int = 16) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()
            )

        self.features = nn.Sequential(
            block(3, w), block(w, w), nn.MaxPool2d(2),
            block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),
            block(2 * w, 4 * w), nn.MaxPool2d(2),
            block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({k: nn.Linear(4 * w, len(v)) for k, v in classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x * 2 - 1)
        return {k: head(h) for k, head in self.heads.items()}


class Oracle:
    """Attribute classifier with a names-in, names-out API."""

    def __init__(self, net: OracleNet, classes: dict[str, list[str]]) -> None:
        self.net = net.eval()
        self.classes = classes

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> Oracle:
        """Read ``config.json`` and ``oracle.safetensors`` from ``path``."""
        folder = Path(path)
        if not (folder / WEIGHTS).is_file():
            raise FileNotFoundError(
                f"no oracle weights at {folder / WEIGHTS}; run `python -m tirun.toyworld.pretrain --stage oracle`"
            )
        config = json.loads((folder / CONFIG).read_text())
        net = OracleNet(config["classes"], config["width"])
        net.load_state_dict(load_file(folder / WEIGHTS))
        return cls(net, config["classes"])

    def save(self, path: str | Path) -> None:
        folder = Path(path)
        state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        atomic_write(folder / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
        width = self.net.features[0][0].out_channels
        write_json(folder / CONFIG, {"classes": self.classes, "width": width, "resolution": SIZE})

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor | Sequence[Image.Image], batch: int = 256
    ) -> dict[str, list[str]]:
        """Names of each image's attributes: ``{"shape": ["star", ...], "colour": [...], ...}``.

        Args:
            images: a float tensor [N, 3, H, W] in [0, 1] (resized to 32×32 when H, W differ)
                or a list of PIL images.
        """
        x = to_tensor(images)
        out: dict[str, list[str]] = {k: [] for k in self.classes}
        for start in range(0, len(x), batch):
            logits = self.net(x[start : start + batch])
            for k, names in self.classes.items():
                out[k] += [names[i] for i in logits[k].argmax(1).tolist()]
        return out


def to_tensor(images: torch.Tensor | Sequence[Image.Image]) -> torch.Tensor:
    """[N, 3, 32, 32] float in [0, 1] from a tensor of any size or a list of PIL images."""
    if isinstance(images, torch.Tensor):
        x = images.float()
    else:
        arrays = [
            np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC))
            for im in images
        ]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W]; got shape {tuple(x.shape)}")
    if x.shape[-2:] != (SIZE, SIZE):
        x = F.interpolate(
            x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False
        )
    return x.clamp(0, 1)


def concept_match(predictions: dict[str, list[str]], attributes: dict[str, str]) -> float:
    """Fraction of samples whose predicted attributes all equal ``attributes``."""
    unknown = set(attributes) - set(predictions)
    if unknown:
        raise ValueError(
            f"attributes {sorted(unknown)} are not predicted; known: {sorted(predictions)}"
        )
    n = len(next(iter(predictions.values())))
    if n == 0:
        return 0.0
    hits = sum(all(predictions[k][i] == v for k, v in attributes.items()) for i in range(n))
    return hits / n


def accuracy(predictions: dict[str, list[str]], truth: Sequence[Attributes]) -> dict[str, float]:
    """Per-attribute accuracy of ``predictions`` against the true attributes."""
    return {
        k: float(np.mean([p == getattr(t, k) for p, t in zip(predictions[k], truth, strict=True)]))
        for k in predictions
    }


def class_accuracy(
    predictions: dict[str, list[str]], truth: Sequence[Attributes]
) -> dict[str, dict[str, float]]:
    """Per attribute and per true class, the share of its images read right (which shape,
    colour or style the oracle confuses, where the per-attribute figure hides it)."""
    out: dict[str, dict[str, float]] = {}
    for key, names in predictions.items():
        for value in ATTRIBUTES[key]:
            rows = [
                p == value for p, t in zip(names, truth, strict=True) if getattr(t, key) == value
            ]
            if rows:
                out.setdefault(key, {})[value] = float(np.mean(rows))
    return out


def render_set(count: int, seed: int) -> tuple[torch.Tensor, list[Attributes]]:
    """``count`` fresh renders [N, 3, 32, 32] in [0, 1] and their attributes."""
    rng = np.random.default_rng(seed)
    truth = [random_attributes(rng) for _ in range(count)]  # held-out ones too: the oracle
    # must know every combination
    seeds = rng.integers(0, 2**31, count)
    arrays = np.stack([render_array(a, int(s)) for a, s in zip(truth, seeds, strict=True)])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous(), truth


def _degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, lost resolution and noise of random strength, so generated (softer, noisier) images
    and small objects cropped and upscaled for scoring (an edit's region) read right."""
    n = x.shape[0]
    side = int(torch.randint(18, SIZE + 1, (1,), generator=gen))
    if side < SIZE:  # half the batch loses resolution: down to `side` pixels and back up
        low = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
        up = F.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        x = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, up, x)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    mix = torch.rand(n, 1, 1, 1, generator=gen) * 0.8
    noise = torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.05
    return (x * (1 - mix) + blur * mix + noise).clamp(0, 1)


def train(
    steps: int = 1500,
    minutes: float = 8.0,
    batch: int = 128,
    pool: int = 20_000,
    seed: int = 1234,
    lr: float = 2e-3,
    log: Callable[[str], None] = print,
) -> Oracle:
    """Train the oracle on ``pool`` fresh renders with flips, blur, resolution loss and noise.

    Stops after ``steps`` or ``minutes``, whichever comes first (see ``Budget``).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    classes = {k: list(v) for k, v in ATTRIBUTES.items()}
    t0 = time.time()
    images, truth = render_set(pool, seed)
    targets = {k: torch.tensor([classes[k].index(getattr(a, k)) for a in truth]) for k in classes}
    log(f"oracle: rendered {pool} images in {time.time() - t0:.0f}s")
    net = OracleNet(classes, width=16)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    budget = Budget(steps, minutes)
    net.train()
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = budget.cosine(step, lr, warmup=100, floor=0.02)
        idx = torch.randint(0, pool, (batch,), generator=gen)
        x = _degrade(images[idx], gen)
        flip = torch.rand(batch, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        logits = net(x)
        loss = sum(F.cross_entropy(logits[k], targets[k][idx]) for k in classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps or budget.over():
            log(f"oracle step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
        if budget.over():
            log(f"oracle: stopped at step {step} of {steps}: {minutes} min reached")
            break
    return Oracle(net, classes)
