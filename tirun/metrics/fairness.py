"""Bias as ITI-GEN measures it: the distribution of an attribute over samples, KL to uniform."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torchmetrics.functional import kl_divergence


def distribution(labels: Sequence[str], classes: Sequence[str]) -> dict[str, float]:
    """Share of each class among ``labels`` (classes never seen get 0).

    Args:
        labels: one predicted class per sample.
        classes: every class the attribute can take.
    """
    unknown = set(labels) - set(classes)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among the classes {list(classes)}")
    if not labels:
        raise ValueError("no labels: the distribution of zero samples is undefined")
    counts = Counter(labels)
    return {c: counts[c] / len(labels) for c in classes}


def kl_uniform(shares: dict[str, float] | Sequence[float]) -> float:
    """KL(p ‖ uniform) in nats: 0 for a uniform p, log K when every sample is one class.

    Args:
        shares: the distribution p over K classes (a dict from `distribution`, or a list).
    """
    p = torch.tensor(
        list(shares.values()) if isinstance(shares, dict) else list(shares), dtype=torch.float64
    )
    if p.numel() < 2 or (p < 0).any() or abs(float(p.sum()) - 1) > 1e-6:
        raise ValueError(f"shares must be a distribution over 2+ classes, got {p.tolist()}")
    q = torch.full_like(p, 1.0 / p.numel())
    return float(kl_divergence(p[None], q[None]))
