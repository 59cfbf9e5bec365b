"""Weighted subset draws whose weighted sums estimate full-data sums.

Every sampler returns a `WeightedSample`: distinct row indices (sorted), a weight per row, and
the probability the row was drawn with. For any per-example value f,
sum(weights * f[indices]) estimates sum(f) over all n rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .validation import check_budget, check_nonnegative

SAMPLING_METHODS = ("with_replacement", "poisson", "poisson_hajek")
POISSON_WEIGHTINGS = ("ratio", "hajek")


@dataclass(frozen=True)
class WeightedSample:
    indices: np.ndarray  # distinct row indices, sorted, int64
    weights: np.ndarray  # float64 importance weights
    probabilities: np.ndarray  # per-draw probability (with replacement) or inclusion probability
    draws: np.ndarray  # how many times each row was drawn (1 unless with replacement)

    def estimate_sum(self, values) -> float:
        return float(np.dot(self.weights, np.asarray(values, dtype=np.float64)[self.indices]))


def _check_probabilities(p) -> np.ndarray:
    p = check_nonnegative(p, "probabilities", "probability")
    if p.size == 0:
        raise ValueError("probabilities: expected a non-empty 1-d array, got shape (0,)")
    total = p.sum()
    if not np.isclose(total, 1.0, rtol=1e-6, atol=1e-9):
        raise ValueError(f"probabilities: must sum to 1, got {total!r}")
    return p / total


def sample_with_replacement(p, m: int, seed: int) -> WeightedSample:
    """m i.i.d. draws from p; each draw weighs 1 / (m p_i). Repeated rows are merged.

    Unbiased: E[sum_S w f] = sum_i f_i, with variance (1/m) (sum_i f_i^2 / p_i - F^2).
    """
    p = _check_probabilities(p)
    m = check_budget(m, p.size)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(p.size, size=m, replace=True, p=p)
    idx, counts = np.unique(drawn, return_counts=True)
    if (p[idx] <= 0).any():  # impossible with rng.choice, kept as a guard for the weights
        raise ValueError("probabilities: drew a row with zero probability")
    weights = counts / (m * p[idx])
    return WeightedSample(idx.astype(np.int64), weights, p[idx], counts.astype(np.int64))


# Passes of the capping iteration before the sort takes over (heavy-tailed p at 1M rows: 4-5).
MAX_CAPPING_PASSES = 30


def inclusion_probabilities(p, m: int) -> np.ndarray:
    """pi_i = min(1, c p_i) with c chosen so that sum(pi) = m exactly.

    Plain min(1, m p_i) loses expected size whenever a row is capped; raising c until the
    capped total is m keeps the expected subset size at m. The capped set is found by fixed-point
    iteration (cap every row with c p_i >= 1, recompute c = (m - capped) / uncapped mass, repeat:
    the set only grows), a few O(n) passes instead of a sort; water-filling over the sorted p is
    the fallback for the rare p that needs many passes.
    """
    p = _check_probabilities(p)
    m = check_budget(m, p.size)
    if np.count_nonzero(p) < m:
        raise ValueError(
            f"budget: {m} exceeds the {np.count_nonzero(p)} rows with non-zero probability"
        )
    capped = np.zeros(p.size, dtype=bool)
    for _ in range(MAX_CAPPING_PASSES):
        rest = float(p[~capped].sum())
        if rest <= 0.0:  # every row with mass is capped: m equals their number
            return np.where(capped, 1.0, 0.0)
        c = (m - np.count_nonzero(capped)) / rest
        grown = capped | (c * p >= 1.0)
        if np.count_nonzero(grown) == np.count_nonzero(capped):
            pi = np.minimum(1.0, c * p)
            pi[capped] = 1.0
            return pi
        capped = grown
    return _water_filling(p, m)


def _water_filling(p: np.ndarray, m: int) -> np.ndarray:
    """inclusion_probabilities by one sort: cap the t largest at 1, the rest c p with
    c = (m - t) / (mass of the rest), for the smallest t that keeps every c p_i <= 1."""
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    tail = np.cumsum(ps[::-1])[::-1]  # tail[t] = sum of ps[t:]
    t_all = np.arange(m)  # t = m - 1 always qualifies
    ok = (m - t_all) * ps[:m] <= tail[:m] * (1.0 + 1e-12)
    t = int(np.argmax(ok))
    c = (m - t) / tail[t]
    pi = np.minimum(1.0, c * p)
    pi[order[:t]] = 1.0
    return pi


def sample_poisson(p, m: int, seed: int, weighting: str = "ratio") -> WeightedSample:
    """Poisson sampling without replacement, inclusion pi_i = min(1, c p_i), E|S| = m.

    The plain 1/pi (Horvitz-Thompson) weights carry the random subset size into every estimate;
    both weightings divide it out:
    - "ratio" (default): w_i = (1/pi_i) / sum_S(p_j/pi_j), calibrated so that sum_S w p = sum p.
      The ratio estimator on the sampling design's own auxiliary variable: for uncapped rows
      w_i = 1/(|S| p_i), the with-replacement weight with m replaced by the realised size.
    - "hajek": w_i = (1/pi_i) * n / sum_S(1/pi_j), so the weights sum to n exactly. Dividing by
      sum_S 1/pi is dominated by the few low-probability rows drawn, which cancels most of the
      advantage of sampling by sensitivity (measured: benchmarks/results/estimate_error.txt).
    Both are biased by O(1/m).
    """
    if weighting not in POISSON_WEIGHTINGS:
        raise ValueError(f"weighting: must be one of {POISSON_WEIGHTINGS}, got {weighting!r}")
    p = _check_probabilities(p)
    n = p.size
    pi = inclusion_probabilities(p, m)
    rng = np.random.default_rng(seed)
    keep = rng.random(n) < pi
    if not keep.any():  # vanishingly rare for m >= 1; take the most likely row rather than none
        keep[np.argmax(pi)] = True
    idx = np.flatnonzero(keep).astype(np.int64)
    ht = 1.0 / pi[idx]
    if weighting == "hajek":
        weights = ht * (n / ht.sum())
    else:
        weights = ht / np.dot(p[idx], ht)
    return WeightedSample(idx, weights, pi[idx], np.ones(idx.size, dtype=np.int64))


def sample_uniform(n: int, m: int, seed: int) -> WeightedSample:
    """Simple random sample of m distinct rows; each weighs n / m."""
    if n < 1:
        raise ValueError(f"n: the dataset is empty (n={n})")
    m = check_budget(m, n)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)
    return WeightedSample(
        idx, np.full(m, n / m), np.full(m, m / n), np.ones(m, dtype=np.int64)
    )


def sample_by_sensitivity(p, m: int, seed: int, method: str = "with_replacement") -> WeightedSample:
    if method == "with_replacement":
        return sample_with_replacement(p, m, seed)
    if method == "poisson":
        return sample_poisson(p, m, seed, weighting="ratio")
    if method == "poisson_hajek":
        return sample_poisson(p, m, seed, weighting="hajek")
    raise ValueError(f"sampling: must be one of {SAMPLING_METHODS}, got {method!r}")
