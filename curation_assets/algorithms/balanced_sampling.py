"""Hierarchical balanced sampling (Vo et al. 2024): equal budget per cluster, top-down.

The budget is split equally across the top-level clusters; a cluster smaller than its share
takes all it has and its surplus goes to the others (water-filling); each cluster's draws are
split the same way among its children, down to the leaves; within a leaf the examples are drawn
at random (default) or taken closest to the leaf's centroid.

What the weights mean. The balanced subset is meant to be trained on *unweighted*: its point is
a flat distribution over concepts, which weighting would undo. The weights only let the same
subset estimate full-data sums: the design is stratified by leaf, m_leaf of size_leaf drawn at
random, so weight = size_leaf / m_leaf and sum_S w f estimates sum_all f without bias over the
leaves that received draws (a leaf given no draws is not represented; with a budget of at least
one draw per leaf, the weights sum to n exactly). In "closest" mode the weights are the same
expansion factors, but the draw is not random, so the estimate is not unbiased.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from .hierarchical_kmeans import fit_hierarchical_kmeans
from .sampling import WeightedSample
from .validation import check_budget

WITHIN_LEAF = ("random", "closest")


def _whole_numbers(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
                     or not np.isfinite(arr).all() or (arr != np.round(arr)).any() or (arr < 0).any()):
        raise ValueError(f"{name}: must be whole numbers >= 0")
    return arr.astype(np.int64)


def water_fill(budget: int, capacities, priority=None) -> np.ndarray:
    """Split `budget` as equally as possible over clusters, none above its capacity.

    Clusters are filled smallest first: one whose capacity is below the equal share of what is
    left takes its capacity, and the rest is shared again among the larger ones. The final equal
    share is split by largest remainder; all remainders are equal there, so the extra units go
    to the clusters of highest `priority` (default: lowest index first). The result sums to
    `budget` exactly and is deterministic.
    """
    caps = _whole_numbers(capacities, "capacities")
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not float(budget).is_integer() \
            or budget < 0:
        raise ValueError(f"budget: must be a whole number >= 0, got {budget!r}")
    budget = int(budget)
    if budget > caps.sum():
        raise ValueError(f"budget: {budget} is more than the {int(caps.sum())} the clusters can hold")
    k = caps.size
    alloc = np.zeros(k, dtype=np.int64)
    if budget == 0:
        return alloc
    if priority is None:
        priority = -np.arange(k)
    priority = np.asarray(priority)
    if priority.shape != (k,):
        raise ValueError(f"priority: expected one value per cluster ({k}), got shape {priority.shape}")
    order = np.lexsort((np.arange(k), caps))  # ascending capacity, ties by index
    s = caps[order]
    before = np.cumsum(s) - s  # what the smaller clusters took, if all of them are full
    fits = s * (k - np.arange(k)) <= budget - before
    t = k if fits.all() else int(np.argmin(fits))
    alloc[order[:t]] = s[:t]
    rest = order[t:]
    if rest.size:
        base, extra = divmod(budget - int(s[:t].sum()), rest.size)
        alloc[rest] = base
        if extra:
            ranked = rest[np.lexsort((rest, -priority[rest]))]
            alloc[ranked[:extra]] += 1
    return alloc


def _check_tree(leaf_assignment, parents: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
    leaves = _whole_numbers(leaf_assignment, "leaf_assignment")
    if leaves.size == 0:
        raise ValueError("leaf_assignment: is empty (0 examples)")
    links = [_whole_numbers(p, f"parents[{i}]") for i, p in enumerate(parents)]
    highest, what = int(leaves.max()), "leaf_assignment"
    for i, link in enumerate(links):
        if highest >= link.size:
            raise ValueError(f"parents[{i}]: has {link.size} entries but {what} refers to cluster {highest}")
        highest, what = int(link.max()), f"parents[{i}]"
    return leaves, links


def cluster_sizes_per_level(leaf_assignment, parents: Sequence = ()) -> list[np.ndarray]:
    """Examples under each cluster, bottom-up: leaves first, then each level of `parents`."""
    leaves, links = _check_tree(leaf_assignment, parents)
    n_leaves = links[0].size if links else int(leaves.max()) + 1
    sizes = [np.bincount(leaves, minlength=n_leaves)]
    for i, link in enumerate(links):
        n_up = links[i + 1].size if i + 1 < len(links) else int(link.max()) + 1
        sizes.append(np.bincount(link, weights=sizes[-1], minlength=n_up).astype(np.int64))
    return sizes


def _allocate(sizes: list[np.ndarray], links: list[np.ndarray], budget: int, replace: bool,
              rng: np.random.Generator) -> list[np.ndarray]:
    # Without replacement a cluster holds at most its size; with it, any non-empty one holds all.
    caps = [s if not replace else np.where(s > 0, budget, 0) for s in sizes]
    allocs = [None] * len(sizes)
    allocs[-1] = water_fill(budget, caps[-1], priority=rng.permutation(caps[-1].size))
    for level in range(len(sizes) - 2, -1, -1):
        link, cap = links[level], caps[level]
        priority = rng.permutation(cap.size)
        alloc = np.zeros(cap.size, dtype=np.int64)
        order = np.argsort(link, kind="stable")
        bounds = np.searchsorted(link[order], np.arange(allocs[level + 1].size + 1))
        for parent in np.flatnonzero(allocs[level + 1]):
            children = order[bounds[parent]:bounds[parent + 1]]
            alloc[children] = water_fill(int(allocs[level + 1][parent]), cap[children], priority[children])
        allocs[level] = alloc
    return allocs


def allocate_budget(leaf_assignment, parents: Sequence = (), budget: int = 1, *, seed: int = 0,
                    replace: bool = False) -> list[np.ndarray]:
    """Draws per cluster at every level, bottom-up, exactly as `hierarchical_balanced_sample`
    with the same arguments allocates them. parents[l][j]: the cluster at level l+2 of cluster j
    at level l+1 (no parents: flat, per-cluster balanced)."""
    leaves, links = _check_tree(leaf_assignment, parents)
    budget = _check_sample_budget(budget, leaves.size, replace)
    sizes = cluster_sizes_per_level(leaves, links)
    return _allocate(sizes, links, budget, replace, np.random.default_rng(seed))


def _check_sample_budget(budget, n: int, replace: bool) -> int:
    # With replacement a budget may exceed n (small leaves are drawn several times).
    return check_budget(budget, 2**62 if replace else n)


def hierarchical_balanced_sample(
    leaf_assignment,
    parents: Sequence = (),
    budget: int = 1,
    *,
    seed: int = 0,
    within: str = "random",
    sq_distance=None,
    replace: bool = False,
) -> WeightedSample:
    """Hierarchical balanced sample of `budget` rows.

    leaf_assignment: each example's leaf (level-1) cluster. parents: bottom-up links, parents[l][j]
    the level-(l+2) cluster of level-(l+1) cluster j; empty for flat per-cluster balancing.
    within: "random" (default) or "closest" (needs sq_distance to the leaf centroid).
    replace=False (default) never picks a row twice; replace=True lets small leaves be drawn
    several times to keep the equal split (`draws` counts the repeats).
    Weights size_leaf / m_leaf per draw; probabilities m_leaf / size_leaf (with replacement: the
    row's expected number of draws).
    """
    if within not in WITHIN_LEAF:
        raise ValueError(f"within: must be one of {WITHIN_LEAF}, got {within!r}")
    if not isinstance(replace, (bool, np.bool_)):
        raise ValueError(f"replace: must be True or False, got {replace!r}")
    if replace and within == "closest":
        raise ValueError("replace: True only applies to within='random' (the closest rows are a fixed set)")
    leaves, links = _check_tree(leaf_assignment, parents)
    n = leaves.size
    budget = _check_sample_budget(budget, n, replace)
    if within == "closest":
        if sq_distance is None:
            raise ValueError("sq_distance: within='closest' needs each row's squared distance to its leaf centroid")
        key = np.asarray(sq_distance, dtype=np.float64)
        if key.shape != (n,) or not np.isfinite(key).all():
            raise ValueError(f"sq_distance: expected {n} finite values, got shape {key.shape}")
    rng = np.random.default_rng(seed)
    sizes = cluster_sizes_per_level(leaves, links)
    leaf_alloc = _allocate(sizes, links, budget, replace, rng)[0]
    leaf_size = sizes[0]

    by_leaf = np.argsort(leaves, kind="stable")
    start = np.searchsorted(leaves[by_leaf], np.arange(leaf_size.size))
    if replace:
        drawn_leaves = np.repeat(np.arange(leaf_size.size), leaf_alloc)
        offsets = np.floor(rng.random(drawn_leaves.size) * leaf_size[drawn_leaves]).astype(np.int64)
        idx, draws = np.unique(by_leaf[start[drawn_leaves] + offsets], return_counts=True)
    else:
        if within == "random":
            key = rng.random(n)
        order = np.lexsort((np.arange(n), key, leaves))  # by leaf, then key, then row
        rank = np.arange(n) - start[leaves[order]]
        idx = np.sort(order[rank < leaf_alloc[leaves[order]]])
        draws = np.ones(idx.size, dtype=np.int64)
    own = leaves[idx]
    per_draw_weight = leaf_size[own] / leaf_alloc[own]
    return WeightedSample(
        indices=idx.astype(np.int64),
        weights=draws * per_draw_weight,
        probabilities=leaf_alloc[own] / leaf_size[own],
        draws=draws.astype(np.int64),
    )


def hierarchical_balanced_selector(*, seed: int = 0, unweighted: bool = True, **fit_options):
    """A (pool, m, seed) -> WeightedSample selector for `evaluation.selectors()`.

    The hierarchy is fit once per pool (on `pool.x`, with `seed` and `fit_options`), as the
    pipeline fits it once per dataset; only the draw varies with the selector's seed. With
    `unweighted` (default) every row weighs n/m: the subset is scored the way it is meant to be
    trained on, and its loss estimate is the plain subset mean, with whatever bias balancing brings.
    """
    fitted: dict = {}

    def select(pool, m: int, sample_seed: int) -> WeightedSample:
        if fitted.get("x") is not pool.x:
            fitted.update(x=pool.x, h=fit_hierarchical_kmeans(pool.x, seed=seed, **fit_options))
        h = fitted["h"]
        smp = hierarchical_balanced_sample(h.leaf_assignment, h.parents, m, seed=sample_seed)
        if unweighted:
            n = h.leaf_assignment.size
            return WeightedSample(smp.indices, np.full(smp.indices.size, n / smp.indices.size), smp.probabilities,
                                  smp.draws)
        return smp

    return select


def concept_balance(concepts, n_concepts: int | None = None) -> dict:
    """How flat a subset's concept distribution is: entropy (nats; ln C is perfectly flat), its
    ratio to ln C, the largest and smallest concept share and their ratio (inf when a concept is
    missing), and how many concepts appear."""
    c = _whole_numbers(concepts, "concepts")
    k = int(n_concepts) if n_concepts is not None else int(c.max()) + 1
    share = np.bincount(c, minlength=k) / c.size
    nz = share[share > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    return {
        "entropy": entropy,
        "entropy_ratio": entropy / np.log(k) if k > 1 else 1.0,
        "max_share": float(share.max()),
        "min_share": float(share.min()),
        "max_over_min": float(share.max() / share.min()) if share.min() > 0 else float("inf"),
        "concepts_covered": int((share > 0).sum()),
    }
