"""The same draws as sampling.py, made shard by shard so memory never holds all n rows.

- With replacement: m i.i.d. draws from p split into m_j ~ Multinomial(m, P_j) per shard
  (P_j = the shard's share of the probability mass), then m_j i.i.d. draws from p restricted to
  shard j. Conditioned on the split the draws are i.i.d. from p_i / P_j, so the joint law is
  exactly that of m i.i.d. draws from p; each draw still weighs 1 / (m p_i).
- Uniform without replacement: m_j ~ multivariate hypergeometric (the shard counts of a simple
  random sample of m rows), then a simple random sample of m_j rows inside shard j: together a
  simple random sample of m rows of all n, each weighing n / m.

Every shard's draws use their own seeded stream (seed, shard position), so a shard's result does
not depend on how many rows the other shards hold.
"""

from __future__ import annotations

import numpy as np

from .sampling import WeightedSample
from .validation import check_budget, check_whole_number


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(stream),)))


def allocate_draws(shard_masses, m: int, seed: int) -> np.ndarray:
    """Draws per shard for m i.i.d. draws: Multinomial(m, masses / sum(masses))."""
    masses = np.asarray(shard_masses, dtype=np.float64)
    if masses.ndim != 1 or masses.size == 0 or not np.isfinite(masses).all() or (masses < 0).any() \
            or masses.sum() <= 0:
        raise ValueError("shard_masses: expected a non-empty 1-d array of finite, non-negative masses, not all 0")
    m = check_whole_number(m, "budget", 1)
    return _rng(seed, 0).multinomial(m, masses / masses.sum()).astype(np.int64)


def draws_within_shard(p_shard, draws: int, m: int, seed: int, shard_index: int) -> WeightedSample:
    """`draws` i.i.d. draws from p restricted to one shard (p are global probabilities); weights
    1 / (m p_i) per draw. Indices are local to the shard."""
    p = np.asarray(p_shard, dtype=np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("p_shard: expected a 1-d array of finite probabilities >= 0")
    if draws == 0:
        empty = np.zeros(0)
        return WeightedSample(np.zeros(0, dtype=np.int64), empty, empty, np.zeros(0, dtype=np.int64))
    if p.sum() <= 0:
        raise ValueError("p_shard: a shard with zero probability mass cannot receive draws")
    drawn = _rng(seed, shard_index + 1).choice(p.size, size=int(draws), replace=True, p=p / p.sum())
    idx, counts = np.unique(drawn, return_counts=True)
    return WeightedSample(idx.astype(np.int64), counts / (m * p[idx]), p[idx], counts.astype(np.int64))


def allocate_uniform(shard_sizes, m: int, seed: int) -> np.ndarray:
    """Rows per shard of a simple random sample of m rows (multivariate hypergeometric)."""
    sizes = np.asarray(shard_sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0 or (sizes < 0).any() or sizes.sum() < 1:
        raise ValueError("shard_sizes: expected a non-empty 1-d array of row counts >= 0 with at least one row")
    m = check_budget(m, int(sizes.sum()))
    return _rng(seed, 0).multivariate_hypergeometric(sizes, m).astype(np.int64)


def uniform_within_shard(shard_size: int, rows: int, n: int, m: int, seed: int, shard_index: int) -> WeightedSample:
    """`rows` distinct rows of one shard, uniformly; each weighs n / m (local indices)."""
    if not 0 <= rows <= shard_size:
        raise ValueError(f"rows: must lie in [0, {shard_size}], got {rows}")
    idx = np.sort(_rng(seed, shard_index + 1).choice(shard_size, size=int(rows), replace=False)).astype(np.int64)
    return WeightedSample(idx, np.full(idx.size, n / m), np.full(idx.size, m / n), np.ones(idx.size, dtype=np.int64))
