"""Representatives of each cluster: the members nearest its centroid."""

from __future__ import annotations

import numpy as np


def nearest_members(cluster_ids, sq_dist, n_clusters: int) -> np.ndarray:
    """Row index of the member closest to each centroid; -1 for an empty cluster.

    Ties go to the lowest row index, so a stable row order gives a stable choice.
    """
    return nearest_members_per_cluster(cluster_ids, sq_dist, n_clusters, 1)[:, 0]


def nearest_members_per_cluster(cluster_ids, sq_dist, n_clusters: int, r: int) -> np.ndarray:
    """(k, r) row indices: for each cluster its min(r, size) members nearest the centroid, nearest
    first, padded with -1 (an empty cluster is all -1).

    Ties go to the lowest row index, so a stable row order gives a stable choice.
    """
    ids = np.asarray(cluster_ids, dtype=np.int64)
    dist = np.asarray(sq_dist, dtype=np.float64)
    if ids.shape != dist.shape:
        raise ValueError(f"cluster_ids and sq_dist: shapes differ ({ids.shape} vs {dist.shape})")
    if ids.size and (ids.min() < 0 or ids.max() >= n_clusters):
        raise ValueError(f"cluster_ids: values must lie in [0, {n_clusters})")
    if isinstance(r, bool) or int(r) != r or r < 1:
        raise ValueError(f"r: must be a whole number >= 1, got {r!r}")
    r = int(r)
    order = np.lexsort((np.arange(ids.size), dist, ids))  # by (cluster, distance, row)
    sorted_ids = ids[order]
    starts = np.searchsorted(sorted_ids, np.arange(n_clusters), side="left")
    rank = np.arange(ids.size) - starts[sorted_ids]  # position within its cluster's run
    take = rank < r
    out = np.full((n_clusters, r), -1, dtype=np.int64)
    out[sorted_ids[take], rank[take]] = order[take]
    return out


def cluster_sizes(cluster_ids, n_clusters: int) -> np.ndarray:
    return np.bincount(np.asarray(cluster_ids, dtype=np.int64), minlength=n_clusters)
