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

    Each draw picks concepts with replacement, within each its seeds with replacement, and
    within each word its samples with replacement; a resampled word's count of 1s is then
    binomial in its sample count and rate, so the third level is drawn as that count (the same
    distribution, without a loop over samples).

    Args:
        words: per concept, per seed, the 1/0 outcome of each sample.
        iterations: bootstrap resamples.
        level: the interval's coverage.
        seed: the resampling's seed (the interval is reproducible).
    """
    concepts = [[np.asarray(o, dtype=float) for o in seeds] for seeds in words.values()]
    if not concepts or any(not seeds for seeds in concepts):
        raise ValueError("bootstrap_mean needs at least one word per concept")
    every = [o for seeds in concepts for o in seeds]
    if any(o.size == 0 or not np.isin(o, (0.0, 1.0)).all() for o in every):
        raise ValueError("bootstrap_mean needs each word's outcomes: one or more 1/0 values")
    mean = float(np.mean([np.mean([o.mean() for o in seeds]) for seeds in concepts]))
    samples, seeds_of = _padded([[o.size for o in seeds] for seeds in concepts])
    rates, _ = _padded([[o.mean() for o in seeds] for seeds in concepts])
    rng = np.random.default_rng(seed)
    picked, chosen, used = _resample_seeds(rng, seeds_of, iterations)
    n = samples[picked[..., None], chosen].astype(int)
    rate = rng.binomial(n, rates[picked[..., None], chosen]) / n
    return mean, *_interval(_draw_means(rate, used, seeds_of[picked]), level)


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
    concepts = [[b - a for a, b in seeds] for seeds in pairs.values()]
    if not concepts or any(not d for d in concepts):
        raise ValueError("bootstrap_paired_difference needs at least one pair per concept")
    mean = float(np.mean([np.mean(d) for d in concepts]))
    differences, seeds_of = _padded(concepts)
    rng = np.random.default_rng(seed)
    picked, chosen, used = _resample_seeds(rng, seeds_of, iterations)
    drawn = differences[picked[..., None], chosen]
    return mean, *_interval(_draw_means(drawn, used, seeds_of[picked]), level)


def _padded(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` (concept -> one value per seed) as a concepts × most-seeds array padded with
    zeros, and each concept's count of seeds."""
    counts = np.array([len(r) for r in rows])
    table = np.zeros((len(rows), counts.max()))
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    return table, counts


def _resample_seeds(
    rng: np.random.Generator, seeds_of: np.ndarray, iterations: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bootstrap's first two levels, every draw at once: the concepts picked with replacement
    (draws × concepts); within each, its seeds picked with replacement (draws × concepts × the
    most seeds, every index one of the concept's own); and which of those places count (a
    concept with fewer seeds uses the first as many as it has)."""
    picked = rng.integers(len(seeds_of), size=(iterations, len(seeds_of)))
    slots = seeds_of.max()
    held = seeds_of[picked][..., None]
    chosen = rng.integers(0, held, size=(iterations, len(seeds_of), slots))
    return picked, chosen, np.arange(slots) < held


def _draw_means(values: np.ndarray, used: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Each draw's mean over its picked concepts of their picked seeds' mean: ``values`` and
    ``used`` are draws × concepts × slots, ``seeds`` (draws × concepts) the slots each uses."""
    return ((values * used).sum(-1) / seeds).mean(-1)


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The equal-tailed ``level`` interval of the bootstrap ``draws``."""
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(low), float(high)


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
