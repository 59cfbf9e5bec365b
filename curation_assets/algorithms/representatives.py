"""One representative per cluster: the member nearest the centroid."""

from __future__ import annotations

import numpy as np


def nearest_members(cluster_ids, sq_dist, n_clusters: int) -> np.ndarray:
    """Row index of the member closest to each centroid; -1 for an empty cluster.

    Ties go to the lowest row index, so a stable row order gives a stable choice.
    """
    ids = np.asarray(cluster_ids, dtype=np.int64)
    dist = np.asarray(sq_dist, dtype=np.float64)
    if ids.shape != dist.shape:
        raise ValueError(f"cluster_ids and sq_dist: shapes differ ({ids.shape} vs {dist.shape})")
    if ids.size and (ids.min() < 0 or ids.max() >= n_clusters):
        raise ValueError(f"cluster_ids: values must lie in [0, {n_clusters})")
    # Sort by (cluster, distance, row); the first row of each cluster's run is its nearest member.
    order = np.lexsort((np.arange(ids.size), dist, ids))
    first = np.ones(order.size, dtype=bool)
    first[1:] = ids[order][1:] != ids[order][:-1]
    reps = np.full(n_clusters, -1, dtype=np.int64)
    reps[ids[order][first]] = order[first]
    return reps


def cluster_sizes(cluster_ids, n_clusters: int) -> np.ndarray:
    return np.bincount(np.asarray(cluster_ids, dtype=np.int64), minlength=n_clusters)
