"""Hierarchical k-means with resampling (Vo et al. 2024, written from the paper's description).

Level 1 clusters the examples; level l clusters the centroids of level l-1, each counted once,
so a concept that k-means split into many level-1 clusters still weighs little higher up.

Web-scale data is long-tailed, and plain k-means spends most centroids on the dense head. Each
resampling step takes the r points closest to every centroid (so every current cluster
contributes at most r points), re-runs k-means (fresh k-means++ then Lloyd) on that flatter set,
and reassigns everything; repeated, the centroids drift from the head toward an even cover of
the concepts.

Lloyd iterations are the flat k-means' (faiss on the CPU, faiss's GPU build or torch on CUDA),
started from our own seeded k-means++ centroids, on every point given (never subsampled). A
cluster that empties is refilled (faiss splits a large one, torch re-seeds with the farthest
points), so no centroid is wasted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from .kmeans import assign_to_centroids, default_n_clusters, fit_kmeans
from .validation import as_embedding_matrix, check_whole_number


@dataclass(frozen=True)
class KMeansLevel:
    """One level of the hierarchy. Its inputs are the examples (level 1) or the centroids of the
    level below; `assignment[i]` is the cluster of input i, `parent[j]` the cluster of centroid j
    at the level above (-1 at the top)."""

    centroids: np.ndarray  # (k, d) float32
    assignment: np.ndarray  # (inputs,) int64
    sq_distance: np.ndarray  # (inputs,) float32, to the assigned centroid
    parent: np.ndarray  # (k,) int64
    resample_size: int  # r: points kept per cluster in each resampling step
    resampling_steps_run: int  # fewer than asked when r = 1 leaves nothing to re-cluster
    cost: float  # k-means objective on this level's inputs after the last step

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])


@dataclass(frozen=True)
class HierarchicalKMeansResult:
    levels: tuple[KMeansLevel, ...]  # bottom-up: levels[0] is level 1, clustering the examples
    resampling_steps: int
    n_iter: int
    seed: int

    @property
    def leaf_assignment(self) -> np.ndarray:
        return self.levels[0].assignment

    @property
    def parents(self) -> list[np.ndarray]:
        """Bottom-up links for the balanced sampler: parents[l][j] is the level-(l+2) cluster of
        level-(l+1) cluster j."""
        return [level.parent for level in self.levels[:-1]]

    def example_clusters(self) -> np.ndarray:
        """(n, L) int64: each example's cluster at every level, bottom-up (column 0 is its leaf)."""
        cols = [self.levels[0].assignment]
        for level in self.levels[:-1]:
            cols.append(level.parent[cols[-1]])
        return np.stack(cols, axis=1)

    def cluster_sizes(self) -> list[np.ndarray]:
        """Examples under each cluster, per level (bottom-up)."""
        per_example = self.example_clusters()
        return [np.bincount(per_example[:, i], minlength=lv.n_clusters) for i, lv in enumerate(self.levels)]

    def paths(self) -> list[str]:
        """Each example's clusters top-down, e.g. '3/17' (top-level cluster 3, leaf 17)."""
        return cluster_paths(self.leaf_assignment, self.parents)


def cluster_paths(leaf_assignment, parents) -> list[str]:
    """'top/.../leaf' for each row, following parents[l] (level l+1 -> level l+2) up from its leaf."""
    chain = [np.asarray(leaf_assignment, dtype=np.int64)]
    for link in parents:
        chain.append(np.asarray(link, dtype=np.int64)[chain[-1]])
    return ["/".join(map(str, row[::-1])) for row in np.stack(chain, axis=1).tolist()]


def check_clusters_per_level(clusters_per_level: Sequence[int], n: int) -> tuple[int, ...]:
    """Level l clusters the k_{l-1} centroids below it, so k must strictly decrease, with k_1 <= n."""
    if isinstance(clusters_per_level, (str, bytes)) or not isinstance(clusters_per_level, Sequence):
        raise ValueError(f"clusters_per_level: expected a list of cluster counts, got {clusters_per_level!r}")
    if len(clusters_per_level) == 0:
        raise ValueError("clusters_per_level: needs at least one level")
    ks = tuple(check_whole_number(k, f"clusters_per_level[{i}]", 1) for i, k in enumerate(clusters_per_level))
    items = n
    for i, k in enumerate(ks):
        if k > items or (i > 0 and k == items):
            what = "examples" if i == 0 else f"level-{i} centroids it clusters"
            raise ValueError(
                f"clusters_per_level: level {i + 1} asks for {k} clusters but has only {items} {what}; "
                "cluster counts must decrease level by level" + (" and not exceed n" if i == 0 else "")
            )
        items = k
    return ks


def default_clusters_per_level(n: int) -> tuple[int, ...]:
    """Two levels: round(sqrt(2n)) leaves under round(sqrt(n/2)) top clusters.

    The top level, where the budget is split equally, gets the flat `centroids` asset's k, so
    both methods balance over the same number of groups; the leaves are twice as many. On the
    synthetic long-tailed mixture leaves at 2x, 4x and 10x the top level gave the same flatness
    while the cost grows with the number of leaves, so 2x. A single level below 5 examples.
    """
    top = default_n_clusters(n)
    leaves = min(n, max(1, int(round(np.sqrt(2.0 * n)))))
    return (leaves, top) if 1 < top < leaves else (leaves,)


def default_resample_size(n_items: int, n_clusters: int) -> int:
    """r: half the mean cluster size at that level (the paper's rule), at least 1."""
    return max(1, int(round(n_items / (2.0 * n_clusters))))


def _sq_distances(x: np.ndarray, x_sq: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(len(rows), n) squared distances from x[rows] to every row of x, clipped at 0."""
    d = x_sq[rows, None] + x_sq[None, :] - 2.0 * (x @ x[rows].T).T  # (n, d) @ (d, r): the faster layout
    return np.maximum(d, 0.0)


def kmeans_plus_plus(x, n_clusters: int, rng: np.random.Generator, n_local_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding: each new centre is the best of 2 + ln k candidates drawn in
    proportion to D^2 (the one that lowers the total squared distance most)."""
    x = as_embedding_matrix(x)
    n = x.shape[0]
    k = check_whole_number(n_clusters, "n_clusters", 1)
    if k > n:
        raise ValueError(f"n_clusters: {k} is more than the {n} points to seed from")
    trials = n_local_trials if n_local_trials is not None else 2 + int(np.log(k))
    # Each step multiplies a few candidates by x: below a few million entries BLAS threads cost
    # more than they save (10x slower on 2 busy cores, measured on the default data's 2,225 x 384).
    with threadpool_limits(limits=1 if x.size <= 4_000_000 else None, user_api="blas"):
        return _greedy_seeding(x, k, trials, rng)


def _greedy_seeding(x: np.ndarray, k: int, trials: int, rng: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    x_sq = np.einsum("ij,ij->i", x, x)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    closest = _sq_distances(x, x_sq, chosen[:1])[0].astype(np.float64)
    for c in range(1, k):
        cum = np.cumsum(closest)
        if cum[-1] <= 0.0:  # fewer distinct points than k: any point is as good as another
            candidates = rng.integers(n, size=trials)
        else:
            candidates = np.searchsorted(cum, rng.random(trials) * cum[-1], side="right")
            candidates = np.minimum(candidates, n - 1)
        trial_closest = np.minimum(closest[None, :], _sq_distances(x, x_sq, candidates))
        best = int(np.argmin(trial_closest.sum(axis=1)))
        chosen[c] = candidates[best]
        closest = trial_closest[best]
    return np.ascontiguousarray(x[chosen])


def lloyd(x: np.ndarray, init_centroids: np.ndarray, n_iter: int, seed: int, backend: str = "faiss",
          device: str = "cpu") -> np.ndarray:
    """Lloyd iterations from the given centroids, on every row of x (no subsampling), by the flat
    k-means' backends (faiss, faiss's GPU build, torch on CUDA; see kmeans.resolve_backend)."""
    return fit_kmeans(x, init_centroids.shape[0], seed=seed, n_iter=n_iter, backend=backend,
                      device=device if backend == "torch" else None,
                      init_centroids=np.ascontiguousarray(init_centroids, dtype=np.float32)).centroids


def closest_per_cluster(labels: np.ndarray, sq_dist: np.ndarray, r: int) -> np.ndarray:
    """Sorted row indices of the r rows nearest their centroid in every cluster (all rows of a
    smaller cluster); ties go to the lower row index."""
    order = np.lexsort((np.arange(labels.size), sq_dist, labels))
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, labels.size]))
    rank = np.arange(labels.size) - group_start
    return np.sort(order[rank < r])


def kmeans_with_resampling(x, n_clusters: int, *, resampling_steps: int, resample_size: int, n_iter: int,
                           rng: np.random.Generator, backend: str = "faiss",
                           device: str = "cpu") -> tuple[np.ndarray, int]:
    """One level: k-means++ and Lloyd on x, then up to `resampling_steps` rounds of: keep the
    `resample_size` points nearest each centroid, k-means++ and Lloyd on those alone.
    Returns the centroids and the number of resampling steps run."""
    centroids = lloyd(x, kmeans_plus_plus(x, n_clusters, rng), n_iter, int(rng.integers(2**31)), backend, device)
    for step in range(resampling_steps):
        labels, sq_dist = assign_to_centroids(x, centroids, device=device)
        kept = x[closest_per_cluster(labels, sq_dist, resample_size)]
        # With r = 1 (clusters of ~2 inputs) no more points than clusters are kept: k-means on them
        # would return the points themselves, so there is nothing to re-cluster.
        if kept.shape[0] <= n_clusters:
            return centroids, step
        centroids = lloyd(kept, kmeans_plus_plus(kept, n_clusters, rng), n_iter, int(rng.integers(2**31)),
                          backend, device)
    return centroids, resampling_steps


def fit_hierarchical_kmeans(
    x,
    clusters_per_level: Sequence[int] | None = None,
    *,
    resampling_steps: int = 5,
    resample_sizes: Sequence[int] | None = None,
    n_iter: int = 50,
    seed: int = 0,
    backend: str = "faiss",
    device: str = "cpu",
) -> HierarchicalKMeansResult:
    """Cluster the rows of x bottom-up: level 1 the examples, level l the centroids of level l-1.

    clusters_per_level: k per level, bottom-up, strictly decreasing (default
    `default_clusters_per_level(n)`). resample_sizes: r per level (default half the mean cluster
    size there). backend/device: where Lloyd and the assignments run (ComputeDevice.kmeans_backend).
    The same x, parameters and seed give the same result.
    """
    x = as_embedding_matrix(x)
    n = x.shape[0]
    ks = check_clusters_per_level(clusters_per_level if clusters_per_level is not None
                                  else default_clusters_per_level(n), n)
    steps = check_whole_number(resampling_steps, "resampling_steps", 0)
    iters = check_whole_number(n_iter, "n_iter", 1)
    items = (n, *ks[:-1])
    if resample_sizes is None:
        rs = tuple(default_resample_size(m, k) for m, k in zip(items, ks))
    else:
        if isinstance(resample_sizes, (str, bytes)) or not isinstance(resample_sizes, Sequence) \
                or len(resample_sizes) != len(ks):
            raise ValueError(
                f"resample_sizes: expected one r per level ({len(ks)} levels), got {resample_sizes!r}"
            )
        rs = tuple(check_whole_number(r, f"resample_sizes[{i}]", 1) for i, r in enumerate(resample_sizes))
    rng = np.random.default_rng(seed)

    inputs = x
    fitted = []
    for k, r in zip(ks, rs):
        centroids, steps_run = kmeans_with_resampling(inputs, k, resampling_steps=steps, resample_size=r,
                                                      n_iter=iters, rng=rng, backend=backend, device=device)
        labels, sq_dist = assign_to_centroids(inputs, centroids, device=device)
        fitted.append((centroids, labels, sq_dist, r, steps_run))
        inputs = centroids
    levels = []
    for i, (centroids, labels, sq_dist, r, steps_run) in enumerate(fitted):
        parent = fitted[i + 1][1] if i + 1 < len(fitted) else np.full(centroids.shape[0], -1, dtype=np.int64)
        levels.append(KMeansLevel(
            centroids=centroids, assignment=labels.astype(np.int64), sq_distance=sq_dist,
            parent=parent.astype(np.int64), resample_size=r, resampling_steps_run=steps_run,
            cost=float(sq_dist.astype(np.float64).sum()),
        ))
    return HierarchicalKMeansResult(levels=tuple(levels), resampling_steps=steps, n_iter=iters, seed=int(seed))
