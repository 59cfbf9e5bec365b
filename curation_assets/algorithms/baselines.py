"""Baseline subset selectors to compare sensitivity sampling against (methods.md section 3).

Pure functions (numpy / faiss, no Dagster). Every selector returns a `WeightedSample` like the
samplers in `sampling.py`:

- `indices`: distinct row indices, sorted ascending, int64;
- `weights`: float64, meaning what they mean everywhere in this project: sum_S w_i f_i estimates
  sum_{i=1..n} f_i, so the weights sum to n (or about n; each selector says which);
- `probabilities`: float64, the row's inclusion probability where the selector has one
  (uniform, stratified, semdedup), and 1 / weight for the deterministic selectors (kmeans_centroids,
  k_center): the inclusion probability a Horvitz-Thompson design would need to give that weight;
- `draws`: int64 ones (nothing is drawn twice).

Budgets are checked with `check_budget(m, n)` (1 <= m <= n, whole number), embeddings with
`as_embedding_matrix`, so a bad input raises a ValueError that names it. Randomness comes only
from `numpy.random.default_rng(seed)` (and faiss's seeded k-means), so a seed fixes the selection.

`BASELINES` maps a name to a callable with one signature, `fn(x, cluster_ids, m, seed)`, so an
evaluation can loop over them; selectors that ignore `cluster_ids` accept None there.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .kmeans import assign_to_centroids, fit_kmeans
from .representatives import nearest_members
from .sampling import WeightedSample, sample_uniform
from .validation import as_embedding_matrix, check_budget

DEFAULT_DEDUP_THRESHOLD = 0.95
# Cosines are computed in float64 on unit vectors; an exact duplicate can come out as 1 - 1e-16,
# so "cos >= threshold" is tested as "cos >= threshold - _COS_TOL" (threshold = 1 then means
# "same direction", not "never").
_COS_TOL = 1e-9
# Rows per chunk when distances are computed against one point: ~32 MB of float64 at any d.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _as_cluster_ids(cluster_ids, n: int | None = None, name: str = "cluster_ids") -> np.ndarray:
    """A 1-d array of whole-number labels (any integers, not necessarily 0..k-1) as int64."""
    if cluster_ids is None:
        raise ValueError(f"{name}: required, got None")
    arr = np.asarray(cluster_ids)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: is empty (0 entries)")
    if n is not None and arr.size != n:
        raise ValueError(f"{name}: has {arr.size} entries but the embeddings have {n} rows")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected integer labels, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.integer):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(
                f"{name}: expected whole-number labels; {int(bad.sum())} entr(y/ies) are not "
                f"(first at position {int(np.flatnonzero(bad)[0])})"
            )
    return arr.astype(np.int64)


def _check_threshold(threshold) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold: must be a number in (0, 1], got {threshold!r}") from None
    if isinstance(threshold, bool) or not np.isfinite(t) or not (0.0 < t <= 1.0):
        raise ValueError(f"threshold: cosine similarity must be in (0, 1], got {threshold!r}")
    return t


def _chunk_rows(d: int, chunk_rows: int | None) -> int:
    if chunk_rows is None:
        return max(1, _CHUNK_ELEMENTS // max(1, d))
    if isinstance(chunk_rows, bool) or int(chunk_rows) != chunk_rows or chunk_rows < 1:
        raise ValueError(f"chunk_rows: must be a positive whole number, got {chunk_rows!r}")
    return int(chunk_rows)


def _sq_dist_to_point(x: np.ndarray, point: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Squared Euclidean distances of x[start:stop] to `point`, in float64, by differences (so an
    identical row gives exactly 0, which the expansion |x|^2 - 2<x,c> + |c|^2 does not)."""
    diff = x[start:stop].astype(np.float64) - point
    return np.einsum("ij,ij->i", diff, diff)


# --------------------------------------------------------------------------------------------
# 1. Cluster-stratified sampling, proportional allocation by largest remainders
# --------------------------------------------------------------------------------------------


def largest_remainder_allocation(sizes, m: int) -> np.ndarray:
    """Split m over strata of the given sizes in proportion to size, summing to exactly m.

    Hamilton's method: stratum h has quota q_h = m N_h / n; it gets floor(q_h), and the
    r = m - sum floor(q_h) leftover units go one each to the r strata with the largest fractional
    parts q_h - floor(q_h). Ties in the fractional part go to the stratum listed first. Exact
    integer arithmetic (remainder = m N_h mod n), so no float rounding decides a tie.

    Every m_h satisfies floor(q_h) <= m_h <= ceil(q_h) <= N_h (|m_h - q_h| < 1). A stratum whose
    quota is below 1 gets 1 only if its remainder is among the r largest, otherwise 0.
    """
    sizes = np.asarray(sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ValueError(f"sizes: expected a non-empty 1-d array, got shape {sizes.shape}")
    if not np.issubdtype(sizes.dtype, np.integer) or (sizes < 1).any():
        raise ValueError("sizes: stratum sizes must be whole numbers >= 1")
    sizes = sizes.astype(np.int64)
    n = int(sizes.sum())
    m = check_budget(m, n)
    # m * N_h in Python ints (object array): exact for any n, no int64 overflow.
    prod = sizes.astype(object) * m
    base = (prod // n).astype(np.int64)
    rem = (prod % n).astype(np.int64)  # < n, fits
    leftover = m - int(base.sum())  # 0 <= leftover < number of strata
    order = np.lexsort((np.arange(sizes.size), -rem))  # largest remainder first, then position
    alloc = base
    alloc[order[:leftover]] += 1
    return alloc


def stratified_sample(cluster_ids, m: int, seed: int) -> WeightedSample:
    """m rows, stratified by cluster with proportional (largest-remainder) allocation.

    Strata are the distinct values of `cluster_ids`, ordered by value (which fixes the
    largest-remainder tie-break: the smaller cluster id wins). Stratum h of size N_h gets m_h rows
    from `largest_remainder_allocation`, drawn uniformly without replacement; the total is exactly
    m. Each drawn row weighs N_h / m_h and has inclusion probability m_h / N_h.

    A cluster whose quota m N_h / n is below 1 and whose remainder is not among the largest gets
    m_h = 0: none of its rows can be drawn, the weights then sum to n minus the sizes of those
    clusters, and an estimate of a sum misses their total (each represented stratum is still
    estimated without bias). This cannot happen when every cluster has N_h >= n / m.
    """
    ids = _as_cluster_ids(cluster_ids)
    n = ids.size
    m = check_budget(m, n)
    _, inverse, sizes = np.unique(ids, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    alloc = largest_remainder_allocation(sizes, m)
    rng = np.random.default_rng(seed)
    keys = rng.random(n)
    # Sort by stratum, then by an i.i.d. uniform key: the first m_h rows of stratum h are a
    # uniform random m_h-subset of it.
    order = np.lexsort((keys, inverse))
    starts = np.cumsum(sizes) - sizes
    rank = np.arange(n) - np.repeat(starts, sizes)
    chosen = order[rank < np.repeat(alloc, sizes)]
    idx = np.sort(chosen).astype(np.int64)
    h = inverse[idx]
    weights = sizes[h] / alloc[h]
    probs = alloc[h] / sizes[h]
    return WeightedSample(
        idx, weights.astype(np.float64), probs.astype(np.float64), np.ones(m, dtype=np.int64)
    )


# --------------------------------------------------------------------------------------------
# 2. k-means centroids: the member nearest each centroid of a k = m clustering
# --------------------------------------------------------------------------------------------


def kmeans_centroid_sample(
    x,
    m: int,
    seed: int,
    n_iter: int = 25,
    training_sample_size: int | None = None,
) -> WeightedSample:
    """The member nearest each centroid of a k = m k-means clustering, weighted by cluster size.

    `fit_kmeans(x, m, seed=seed, n_iter=n_iter, training_sample_size=...)` (faiss Lloyd), then every
    row goes to its nearest centroid (`assign_to_centroids`) and each non-empty cluster contributes
    its member nearest the centroid (`nearest_members`, ties to the lower row), weighing the
    number of rows in the cluster. Weights sum to exactly n; probabilities are 1 / weight.

    Exactly min(m, number of distinct rows of x) rows come back:
    - representatives that are identical vectors (possible only when centroids coincide, e.g.
      x has fewer distinct rows than m) are merged: the lowest row index stays and its cluster
      absorbs the others;
    - if fewer than min(m, distinct) clusters are left (empty clusters), the shortfall is filled
      with the rows farthest from their assigned centroid (one per distinct vector not yet
      selected; ties to the lower row), as k-means implementations relocate empty clusters.
      A cluster that receives such extra rows is split among its selected rows by nearest
      Euclidean distance (ties to its representative, then to the lower row), so the weight of
      each selected row is the number of rows of its part, and weights still sum to n.
    """
    x = as_embedding_matrix(x)
    n = x.shape[0]
    m = check_budget(m, n)
    if training_sample_size is not None and m > min(int(training_sample_size), n):
        raise ValueError(
            f"training_sample_size: {training_sample_size} rows cannot train a k = {m} "
            "clustering (need at least the budget)"
        )
    km = fit_kmeans(x, m, seed=seed, n_iter=n_iter, training_sample_size=training_sample_size)
    return nearest_member_selection(x, km.centroids, m)


def nearest_member_selection(x, centroids, m: int) -> WeightedSample:
    """The selection rule of `kmeans_centroid_sample` for given centroids (see its docstring)."""
    x = as_embedding_matrix(x)
    n = x.shape[0]
    m = check_budget(m, n)
    labels, sq_dist = assign_to_centroids(x, centroids)
    reps = nearest_members(labels, sq_dist, len(centroids))

    # part[i] = the selected row that row i is counted for; every row's cluster is non-empty
    # (it holds the row), so reps[labels] is never -1.
    part = reps[labels]

    # Merge representatives that are the same vector: the lowest row index of each group stays.
    rep_rows = reps[reps >= 0]
    _, first, inv = np.unique(x[rep_rows], axis=0, return_index=True, return_inverse=True)
    if first.size < rep_rows.size:
        inv = inv.reshape(-1)
        lowest = np.full(first.size, n, dtype=np.int64)
        np.minimum.at(lowest, inv, rep_rows)
        remap = np.arange(n, dtype=np.int64)
        remap[rep_rows] = lowest[inv]
        part = remap[part]
    selected = np.unique(part)

    if selected.size < m:
        _, group_first, group_of = np.unique(x, axis=0, return_index=True, return_inverse=True)
        group_of = group_of.reshape(-1)
        target = min(m, group_first.size)
        need = target - selected.size
        if need > 0:
            taken = np.zeros(group_first.size, dtype=bool)
            taken[group_of[selected]] = True
            # One candidate per distinct vector not yet selected: its lowest row index.
            cand = np.sort(group_first[~taken]).astype(np.int64)
            pick = cand[np.lexsort((cand, -sq_dist[cand].astype(np.float64)))[:need]]
            # Split each cluster that received extra rows among its selected rows.
            for owner in np.unique(part[pick]):
                extra = np.sort(pick[part[pick] == owner])
                centres = np.concatenate(([owner], extra))
                members = np.flatnonzero(part == owner)
                best = np.full(members.size, np.inf)
                who = np.full(members.size, owner, dtype=np.int64)
                for c in centres:  # representative first: ties stay with it
                    d2 = _sq_dist_to_point(x[members], x[c].astype(np.float64), 0, members.size)
                    closer = d2 < best
                    best[closer] = d2[closer]
                    who[closer] = c
                part[members] = who
            selected = np.unique(part)

    counts = np.bincount(part, minlength=n)[selected].astype(np.float64)
    return WeightedSample(
        selected.astype(np.int64), counts, 1.0 / counts, np.ones(selected.size, dtype=np.int64)
    )


# --------------------------------------------------------------------------------------------
# 3. k-center greedy (farthest-point traversal), Sener & Savarese 2018
# --------------------------------------------------------------------------------------------


def _farthest_points(x: np.ndarray, m: int, seed: int, chunk_rows: int):
    """Selection order, owner (position in the order of each row's nearest centre) and the
    squared distance of each row to its nearest centre."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    current = int(rng.integers(n))
    min_sq = np.full(n, np.inf)
    owner = np.zeros(n, dtype=np.int64)
    order: list[int] = []
    for k in range(m):
        order.append(current)
        centre = x[current].astype(np.float64)
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            d2 = _sq_dist_to_point(x, centre, start, stop)
            closer = d2 < min_sq[start:stop]  # strict: ties stay with the earlier centre
            min_sq[start:stop][closer] = d2[closer]
            owner[start:stop][closer] = k
        if k + 1 == m:
            break
        nxt = int(np.argmax(min_sq))  # ties: lowest row index
        if min_sq[nxt] == 0.0:  # every row coincides with a centre: nothing new to add
            break
        current = nxt
    return np.asarray(order, dtype=np.int64), owner, min_sq


def k_center_greedy_order(x, m: int, seed: int, *, chunk_rows: int | None = None) -> np.ndarray:
    """The rows `k_center_greedy` picks, in the order it picks them (see there)."""
    x = as_embedding_matrix(x)
    m = check_budget(m, x.shape[0])
    order, _, _ = _farthest_points(x, m, seed, _chunk_rows(x.shape[1], chunk_rows))
    return order


def k_center_greedy(x, m: int, seed: int, *, chunk_rows: int | None = None) -> WeightedSample:
    """Farthest-point traversal (Gonzalez 1985; Sener & Savarese 2018's k-center greedy).

    Start from row `numpy.random.default_rng(seed).integers(n)`; then repeatedly add the row
    maximising the Euclidean distance to its nearest selected row (ties: lowest row index),
    keeping each row's distance to the selected set up to date after every addition. O(n m d)
    time; distances are computed against one centre at a time in chunks of `chunk_rows` rows
    (default ~4M / d), so extra memory is O(n + chunk_rows d). Distances are on x as given (no
    normalisation), in float64.

    Weight of a selected row = the number of rows whose nearest selected row it is (ties to the
    earlier-selected one), so weights sum to exactly n; probabilities are 1 / weight.
    If every row coincides with a selected row before m are chosen, it stops: exactly
    min(m, number of distinct rows) rows come back.
    The result is a 2-approximation of the optimal k-center radius; `k_center_objective`
    computes that radius for any selection.
    """
    x = as_embedding_matrix(x)
    m = check_budget(m, x.shape[0])
    order, owner, _ = _farthest_points(x, m, seed, _chunk_rows(x.shape[1], chunk_rows))
    counts = np.bincount(owner, minlength=order.size).astype(np.float64)
    perm = np.argsort(order)
    idx = order[perm]
    w = counts[perm]
    return WeightedSample(idx, w, 1.0 / w, np.ones(idx.size, dtype=np.int64))


def k_center_objective(x, indices, *, chunk_rows: int | None = None) -> float:
    """The k-center radius of a selection: max over rows of the Euclidean distance to the nearest
    selected row, max_i min_{s in indices} ||x_i - x_s||."""
    x = as_embedding_matrix(x)
    n = x.shape[0]
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"indices: expected a non-empty 1-d array, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer) or idx.dtype == bool:
        raise ValueError(f"indices: expected integer row indices, got dtype {idx.dtype}")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"indices: row indices must lie in [0, {n})")
    rows = _chunk_rows(x.shape[1], chunk_rows)
    min_sq = np.full(n, np.inf)
    for s in np.unique(idx):
        centre = x[s].astype(np.float64)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            np.minimum(min_sq[start:stop], _sq_dist_to_point(x, centre, start, stop),
                       out=min_sq[start:stop])
    return float(np.sqrt(min_sq.max()))


# --------------------------------------------------------------------------------------------
# 4. SemDeDup (Abbas et al. 2023), then a uniform sample of the kept pool
# --------------------------------------------------------------------------------------------


def semantic_dedup_keep(x, cluster_ids, threshold: float = DEFAULT_DEDUP_THRESHOLD):
    """Semantic deduplication within clusters. Returns (kept, group_sizes).

    Within each cluster (rows with the same `cluster_ids` value), on L2-normalised embeddings,
    rows are visited in increasing row index; a row is kept unless its cosine similarity to some
    already-kept row of the same cluster is >= `threshold` (i.e. > 1 - eps with
    eps = 1 - threshold; tested with a 1e-9 rounding tolerance so threshold = 1 removes exact
    duplicates in direction). Each dropped row joins the duplicate group of the kept row of its
    cluster it is most similar to (ties: lowest row index). threshold must be in (0, 1];
    the default 0.95 is in the range the SemDeDup paper explores (eps 0.05 - 0.3 on CLIP/LAION
    embeddings).

    Differences from the paper's code, deliberate: it orders a cluster by distance to the
    centroid (keeping the least prototypical) and compares with every earlier row, kept or
    not; here the order is the row index (reproducible, independent of a centroid) and only kept
    rows can remove a row, so every dropped row is a near-copy of a row that stays.
    Rows in different clusters are never compared.

    kept: sorted int64 row indices; group_sizes: int64, for each kept row the size of its group
    (itself plus the rows it stands for); group_sizes.sum() == n. Zero-norm rows are an error.
    """
    x = as_embedding_matrix(x)
    n = x.shape[0]
    ids = _as_cluster_ids(cluster_ids, n)
    thr = _check_threshold(threshold) - _COS_TOL
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            f"embeddings: {zero.size} row(s) have zero norm, so cosine similarity is undefined "
            f"(first at row {zero[0]})"
        )
    by_cluster = np.argsort(ids, kind="stable")  # by cluster, then row index
    bounds = np.flatnonzero(np.diff(ids[by_cluster])) + 1
    group_of = np.empty(n, dtype=np.int64)
    kept_all: list[np.ndarray] = []
    for members in np.split(by_cluster, bounds):
        xc = x[members].astype(np.float64) / norms[members, None]
        c = members.size
        undecided = np.ones(c, dtype=bool)
        kept_local: list[int] = []
        for i in range(c):
            if not undecided[i]:
                continue
            undecided[i] = False
            kept_local.append(i)
            rest = np.flatnonzero(undecided[i + 1 :]) + (i + 1)
            if rest.size:
                sims = xc[rest] @ xc[i]
                undecided[rest[sims >= thr]] = False
        kept = np.asarray(kept_local, dtype=np.int64)
        is_kept = np.zeros(c, dtype=bool)
        is_kept[kept] = True
        group_of[members[kept]] = members[kept]
        dropped = np.flatnonzero(~is_kept)
        if dropped.size:
            step = max(1, _CHUNK_ELEMENTS // max(1, kept.size))
            kc = xc[kept]
            for s in range(0, dropped.size, step):
                part = dropped[s : s + step]
                best = np.argmax(xc[part] @ kc.T, axis=1)  # first max: lowest kept row
                group_of[members[part]] = members[kept[best]]
        kept_all.append(members[kept])
    kept_rows = np.sort(np.concatenate(kept_all)).astype(np.int64)
    sizes = np.bincount(group_of, minlength=n)[kept_rows].astype(np.int64)
    return kept_rows, sizes


def semantic_dedup_sample(
    x, cluster_ids, m: int, seed: int, threshold: float = DEFAULT_DEDUP_THRESHOLD
) -> WeightedSample:
    """SemDeDup, then a uniform sample of m of the K kept rows.

    Each drawn row has inclusion probability m / K and weight
    (size of its duplicate group) * K / m, so E[sum_S w f] = sum_kept g_i f_i, which equals the
    full-data sum when the rows of a duplicate group have (nearly) equal values; the weights sum
    to about n (exactly n in expectation). If m >= K, all K kept rows come back (fewer than m),
    each with probability 1 and weight = its group size (weights sum to exactly n).
    m is checked against n (1 <= m <= n).
    """
    x = as_embedding_matrix(x)
    n = x.shape[0]
    m = check_budget(m, n)
    kept, sizes = semantic_dedup_keep(x, cluster_ids, threshold)
    k = kept.size
    if m >= k:
        w = sizes.astype(np.float64)
        return WeightedSample(kept, w, np.ones(k), np.ones(k, dtype=np.int64))
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(k, size=m, replace=False))
    w = sizes[pos].astype(np.float64) * (k / m)
    return WeightedSample(kept[pos], w, np.full(m, m / k), np.ones(m, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# 5. Registry with one signature: fn(x, cluster_ids, m, seed) -> WeightedSample
# --------------------------------------------------------------------------------------------

BaselineSelector = Callable[[np.ndarray, "np.ndarray | None", int, int], WeightedSample]


def _rows(x, cluster_ids) -> np.ndarray:
    x = as_embedding_matrix(x)
    if cluster_ids is not None:
        _as_cluster_ids(cluster_ids, x.shape[0])
    return x


def _uniform(x, cluster_ids, m, seed) -> WeightedSample:
    """sample_uniform: m distinct rows, each with probability m / n and weight n / m."""
    return sample_uniform(_rows(x, cluster_ids).shape[0], m, seed)


def _stratified(x, cluster_ids, m, seed) -> WeightedSample:
    x = as_embedding_matrix(x)
    return stratified_sample(_as_cluster_ids(cluster_ids, x.shape[0]), m, seed)


def _kmeans_centroids(x, cluster_ids, m, seed) -> WeightedSample:
    return kmeans_centroid_sample(_rows(x, cluster_ids), m, seed)


def _k_center(x, cluster_ids, m, seed) -> WeightedSample:
    return k_center_greedy(_rows(x, cluster_ids), m, seed)


def _semdedup(x, cluster_ids, m, seed) -> WeightedSample:
    return semantic_dedup_sample(x, cluster_ids, m, seed)


BASELINES: dict[str, BaselineSelector] = {
    "uniform": _uniform,
    "stratified": _stratified,
    "kmeans_centroids": _kmeans_centroids,
    "k_center": _k_center,
    "semdedup": _semdedup,
}
