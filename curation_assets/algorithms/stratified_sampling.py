"""Cluster-stratified sensitivity sampling: systematic πps sampling along the clusters.

Sensitivity sampling with i.i.d. draws (`sample_with_replacement`) is unbiased, but its variance
keeps the *between-cluster* part of the loss's variance, which the clustering already explains.
Stratifying removes it: order the rows by stratum (a cluster, or a group of similar clusters when
the budget is below the number of clusters), at random inside a stratum, give row i the
inclusion probability

    pi_i = min(1, c q_i),   sum_i pi_i = m,    q_i = alpha / n + (1 - alpha) s_i / sum(s)

and take the rows where the points u, u + 1, ..., u + m - 1 (u ~ U[0, 1)) fall on the cumulative
sum of pi along that order (Madow's systematic sampling). Then

- exactly m distinct rows are drawn, and P(i in S) = pi_i exactly, so the Horvitz-Thompson weights
  w_i = 1 / pi_i give E[sum_S w f] = sum_i f_i for every f (unbiased);
- stratum h gets floor or ceil of Pi_h = sum_{i in h} pi_i rows: the allocation between strata is
  fixed up to rounding, so the estimate's error comes only from the spread of f / pi *inside* the
  strata. With alpha = 1 this is proportional stratified sampling, never worse than a simple
  random sample to first order (Cochran 1977, 5.7); with alpha < 1 the sensitivity s_i = v_a(i) +
  lambda d_i^z shifts draws toward clusters with a high representative loss and toward points far
  from their centroid (where a Hoelder-continuous loss can differ most from the representative's).

s need not be the clusters' sensitivity alone. With a probe (labelled data) its own expected
loss at each row, the entropy of its predicted class probabilities (scorers.expected_losses),
predicts which rows *inside* a cluster have a high loss, where the distance term can only guess:
measured on the real sets of benchmarks/selection_quality.py its correlation with the loss is
0.36-0.88 against 0.14-0.67 for v_a(i) + lambda d_i^z (0.1-0.3 on the synthetic sets, where the
loss is mostly label noise). `choose_stratified_design` lets the labelled holdout choose the source and alpha.

With m < k a stratum of clusters receives about one draw per group: the clusters are grouped by
a k-means of their centroids (g = m groups, weighted by cluster sizes), so a draw stands for a
region of the embedding instead of one cluster of many that get none.
"""

from __future__ import annotations

import numpy as np

from .sampling import WeightedSample, inclusion_probabilities
from .validation import check_budget

# Mixture weights of uniform in q the labelled pilot chooses among (1: proportional stratification);
# 0.1 still bounds the second moment at 10x uniform's (pi_i >= alpha m / n).
STRATIFIED_ALPHA_GRID = (1.0, 0.5, 0.25, 0.1)


# The sensitivities the default chooses among: the clusters' v_a(i) + lambda d_i^z, the probe's expected loss.
CLUSTERS, PROBE = "clusters", "probe"

# A design must promise this fraction of proportional's variance on the pilot: a pilot of a few
# hundred rows misses the rare rows a small pi makes heavy (a confident probe's mistakes), and on
# the hyperplane mixtures of tests/test_stratified_sampling.py it promised 0.83-0.86 for designs
# that were 1.09-1.60 on the whole pool. The real gains measured were 0.1-0.8.
DESIGN_MARGIN = 0.8


def systematic_sample(pi: np.ndarray, strata: np.ndarray, seed: int) -> np.ndarray:
    """Sorted row indices of a systematic sample with inclusion probabilities `pi` (summing to an
    integer m), rows ordered by `strata` and at random inside each stratum."""
    pi = np.asarray(pi, dtype=np.float64)
    rng = np.random.default_rng(seed)
    # by stratum, at random inside it: one sort of stratum + U[0, 1) (lexsort's order, 5x faster)
    order = np.argsort(np.asarray(strata) + rng.random(pi.size))
    cum = np.cumsum(pi[order])
    m = int(round(cum[-1]))
    cum *= m / cum[-1]  # absorb float drift: the total is exactly m
    u = rng.random()
    # row j of the order is drawn when a point u + t (t = 0..m-1) lies in [cum_{j-1}, cum_j)
    hits = np.searchsorted(cum, u + np.arange(m), side="right")
    return np.sort(order[np.minimum(hits, pi.size - 1)])


def cluster_groups(centroids: np.ndarray, sizes: np.ndarray, groups: int, seed: int) -> np.ndarray:
    """Group id of each cluster: `groups` groups of nearby clusters (a size-weighted k-means of the
    centroids), or each cluster its own group when groups >= number of clusters."""
    k = centroids.shape[0]
    if groups >= k:
        return np.arange(k)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=max(1, groups), n_init=3, random_state=seed)
    return km.fit_predict(np.asarray(centroids, dtype=np.float64), sample_weight=np.maximum(sizes, 1e-9))


def strata_of(cluster_ids: np.ndarray, m: int, seed: int, centroids: np.ndarray | None = None) -> np.ndarray:
    """The stratum of each row: its cluster, or its group of nearby clusters when m < k."""
    cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
    k = int(cluster_ids.max()) + 1
    if centroids is None or m >= k:
        return cluster_ids
    sizes = np.bincount(cluster_ids, minlength=k).astype(np.float64)
    return cluster_groups(centroids, sizes, m, seed)[cluster_ids]


def mixture_inclusion(s: np.ndarray, m: int, alpha: float) -> np.ndarray:
    """pi_i = min(1, c q_i), sum pi = m, q = alpha/n + (1 - alpha) s/sum(s)."""
    n = s.size
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: must be a number in [0, 1], got {alpha!r}")
    if not np.isfinite(s).all() or (s < 0).any() or (alpha < 1.0 and s.sum() <= 0):
        raise ValueError("sensitivities: must be finite, >= 0 and not all 0")
    q = np.full(n, 1.0 / n) if alpha == 1.0 else alpha / n + (1.0 - alpha) * s / s.sum()
    return inclusion_probabilities(q, m)


def stratified_sensitivity_sample(s: np.ndarray, cluster_ids: np.ndarray, m: int, seed: int, *,
                                  alpha: float = 1.0, centroids: np.ndarray | None = None) -> WeightedSample:
    """m distinct rows, stratified by cluster (or by groups of clusters when m < k), with inclusion
    probabilities from the defensive mixture of the sensitivities `s` (see the module docstring);
    weights 1/pi_i. `alpha` = 1: proportional stratified sampling; 0: the plain sensitivities."""
    s = np.asarray(s, dtype=np.float64)
    m = check_budget(m, s.size)
    pi = mixture_inclusion(s, m, alpha)
    idx = systematic_sample(pi, strata_of(cluster_ids, m, seed, centroids), seed)
    return WeightedSample(idx.astype(np.int64), 1.0 / pi[idx], pi[idx], np.ones(idx.size, dtype=np.int64))


def stratified_variance(pilot_rows: np.ndarray, pilot_losses: np.ndarray, n: int, pi: np.ndarray,
                        strata: np.ndarray, big_pi: np.ndarray | None = None) -> float:
    """Estimate, from a uniform pilot (distinct rows, losses l), the variance of the stratified
    Horvitz-Thompson total with inclusion `pi`: sum_h [sum_{i in h} l_i^2/pi_i - T_h^2 / Pi_h]
    (draws inside a stratum taken as independent), each sum replaced by its unbiased pilot estimate."""
    p = pilot_rows.size
    l = np.asarray(pilot_losses, dtype=np.float64)
    h = strata[pilot_rows]
    if big_pi is None:  # given, it spares a pass over all n rows (choose_stratified_design calls this per resample)
        big_pi = np.bincount(strata, weights=pi, minlength=int(strata.max()) + 1)
    k = big_pi.size
    sq = np.bincount(h, weights=l * l, minlength=k)
    first = n / p * np.bincount(h, weights=l * l / pi[pilot_rows], minlength=k)
    total = np.bincount(h, weights=l, minlength=k)
    cross = total ** 2 - sq  # sum over ordered pairs j != k of the pilot inside the stratum
    t2 = n / p * sq + (n * (n - 1.0)) / (p * max(p - 1.0, 1.0)) * cross
    keep = big_pi > 0
    return float(np.sum(first[keep] - t2[keep] / big_pi[keep]))


def choose_stratified_design(pilot_rows, pilot_losses, candidates: dict[str, np.ndarray], strata, m: int,
                             seed: int = 0, grid=STRATIFIED_ALPHA_GRID, support: float = 0.9,
                             margin: float = DESIGN_MARGIN, reps: int = 200) -> tuple[str | None, float]:
    """(source, alpha): the design the labelled pilot says is best among every candidate
    sensitivity (`candidates`: name -> s, e.g. the clusters' and the probe's expected loss) mixed
    with uniform at each alpha in `grid`; a design is trusted only when the pilot puts its
    variance below `margin` times alpha = 1's (proportional) and it beats proportional in at
    least `support` of bootstrap resamples of the pilot; (None, 1.0) when none is. Proportional
    stratification needs no trust: it is never worse than uniform."""
    rows = np.asarray(pilot_rows, dtype=np.int64)
    l = np.asarray(pilot_losses, dtype=np.float64)
    usable = {name: np.asarray(s, dtype=np.float64) for name, s in candidates.items()
              if s is not None and np.isfinite(s).all() and (np.asarray(s) >= 0).all() and np.sum(s) > 0}
    if rows.size < 10 or not usable:
        return None, 1.0
    strata = np.asarray(strata, dtype=np.int64)
    n = next(iter(usable.values())).size
    k = int(strata.max()) + 1
    designs = {(None, 1.0): mixture_inclusion(np.ones(n), m, 1.0)}
    designs.update({(name, float(a)): mixture_inclusion(s, m, float(a))
                    for name, s in usable.items() for a in grid if a < 1.0})
    totals = {key: np.bincount(strata, weights=pi, minlength=k) for key, pi in designs.items()}
    rng = np.random.default_rng(seed)
    boot = [rng.integers(0, rows.size, rows.size) for _ in range(reps)]

    # What the variance needs of the n rows, taken once: the pilot rows' strata and pi; a resample
    # then indexes these, not the n-row arrays.
    at_rows = {key: pi[rows] for key, pi in designs.items()}
    pilot_strata, everyone = strata[rows], np.arange(rows.size)

    def var(key, pick=everyone):
        return stratified_variance(pick, l[pick], n, at_rows[key], pilot_strata, totals[key])

    base = var((None, 1.0))
    base_boot = [var((None, 1.0), b) for b in boot]
    point = {key: var(key) for key in designs if key[0] is not None}
    for key in sorted(point, key=point.get):  # the best point estimate that the resamples back
        if point[key] >= margin * base:
            break
        if np.mean([var(key, b) < vb for b, vb in zip(boot, base_boot)]) >= support:
            return key
    return None, 1.0
