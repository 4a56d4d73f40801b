"""Means with 95% bootstrap confidence intervals over concepts, seeds and samples.

A benchmark figure is a mean over concepts × seeds of per-word rates, each rate over a few dozen
samples. The bootstrap resamples all three levels (concepts with replacement; within each, its
seeds; within each word, its samples), so the interval covers what another draw of concepts,
seeds and sampling noise would give. `paired_spread` and `projected_half_width` say how the
interval would narrow with more concepts or more seeds (`experiments/benchmark_size.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Outcomes = Sequence[int]  # 1/0 per sample of one word


def bootstrap_mean(
    words: Mapping[str, Sequence[Outcomes]],
    iterations: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high) of the per-word rates, over ``words``: concept -> one outcome list per
    seed.

    Args:
        words: per concept, per seed, the 1/0 outcome of each sample.
        iterations: bootstrap resamples.
        level: the interval's coverage.
        seed: the resampling's seed (the interval is reproducible).
    """
    concepts = [[np.asarray(o, dtype=float) for o in seeds] for seeds in words.values()]
    if not concepts or any(not seeds for seeds in concepts):
        raise ValueError("bootstrap_mean needs at least one word per concept")
    mean = float(np.mean([np.mean([o.mean() for o in seeds]) for seeds in concepts]))
    rng = np.random.default_rng(seed)
    draws = np.empty(iterations)
    for i in range(iterations):
        picked = rng.integers(len(concepts), size=len(concepts))
        total = 0.0
        for c in picked:
            seeds = concepts[c]
            chosen = rng.integers(len(seeds), size=len(seeds))
            total += np.mean([rng.choice(seeds[s], size=len(seeds[s])).mean() for s in chosen])
        draws[i] = total / len(picked)
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return mean, float(low), float(high)


def bootstrap_paired_difference(
    pairs: Mapping[str, Sequence[tuple[float, float]]],
    iterations: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high) of `other - reference` over words paired by concept and seed.

    Two recipes trained on the same concepts and seeds share most of their spread (a hard
    concept is hard for both); the paired difference removes it, so it can tell apart recipes
    whose own intervals overlap.

    Args:
        pairs: per concept, per seed, (the reference recipe's rate, the other recipe's rate).
        iterations: bootstrap resamples (concepts with replacement, then seeds within each).
        level: the interval's coverage.
        seed: the resampling's seed.
    """
    concepts = [np.asarray([b - a for a, b in seeds], dtype=float) for seeds in pairs.values()]
    if not concepts or any(len(d) == 0 for d in concepts):
        raise ValueError("bootstrap_paired_difference needs at least one pair per concept")
    mean = float(np.mean([d.mean() for d in concepts]))
    rng = np.random.default_rng(seed)
    draws = np.empty(iterations)
    for i in range(iterations):
        picked = rng.integers(len(concepts), size=len(concepts))
        draws[i] = np.mean([rng.choice(concepts[c], size=len(concepts[c])).mean() for c in picked])
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return mean, float(low), float(high)


def paired_spread(pairs: Mapping[str, Sequence[tuple[float, float]]]) -> tuple[float, float]:
    """(between, within): how much of the paired difference's spread is the concepts' and how
    much the seeds', the one-way random-effects moment estimates.

    ``within`` is the mean over concepts of the seeds' variance of the difference (concepts with
    two or more seeds); ``between`` is the variance of the concepts' mean differences less the
    share the seeds put into those means, clipped at zero. More seeds shrink only the second;
    the first shrinks only with more concepts.
    """
    concepts = [np.asarray([b - a for a, b in seeds], dtype=float) for seeds in pairs.values()]
    repeated = [d for d in concepts if len(d) > 1]
    if len(concepts) < 2 or not repeated:
        raise ValueError("paired_spread needs two concepts and one with two or more seeds")
    within = float(np.mean([d.var(ddof=1) for d in repeated]))
    means = np.asarray([d.mean() for d in concepts])
    seed_share = float(np.mean([within / len(d) for d in concepts]))
    return max(float(means.var(ddof=1)) - seed_share, 0.0), within


def projected_half_width(
    between: float, within: float, concepts: int, seeds: int, z: float = 1.96
) -> float:
    """The 95% interval's half-width of a paired mean over ``concepts`` × ``seeds`` words, by the
    normal approximation: z · sqrt(between / concepts + within / (concepts · seeds))."""
    return z * float(np.sqrt(between / concepts + within / (concepts * seeds)))


def concepts_needed(
    between: float, within: float, seeds: int, target: float, z: float = 1.96
) -> int | None:
    """The fewest concepts whose `projected_half_width` at ``seeds`` seeds is ≤ ``target``
    (None when the difference does not vary at all)."""
    per_concept = between + within / seeds
    return math.ceil(per_concept * (z / target) ** 2) if per_concept > 0 else None
