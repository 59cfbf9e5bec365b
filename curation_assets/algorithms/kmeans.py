"""k-means with faiss on an explicit, seeded training sample, and nearest-centroid assignment.

faiss.Kmeans silently trains on at most 256 points per centroid; here the caller picks the
training-sample size, it is drawn with our own seed and recorded, and faiss is told not to
subsample further, so what was trained on is always known.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from .validation import as_embedding_matrix, check_whole_number


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray  # (k, d) float32
    cost_per_iteration: np.ndarray  # sum of squared distances on the training sample
    training_indices: np.ndarray  # rows of the input that were trained on (sorted)
    n_iter: int

    @property
    def training_sample_size(self) -> int:
        return int(self.training_indices.size)


def default_n_clusters(n: int) -> int:
    """k ~ sqrt(n / 2): a common rule of thumb that keeps clusters of ~sqrt(2n) members."""
    return max(1, int(round(np.sqrt(n / 2.0))))


def fit_kmeans(
    x,
    n_clusters: int,
    *,
    seed: int = 0,
    n_iter: int = 25,
    training_sample_size: int | None = None,
    use_gpu: bool = False,
) -> KMeansResult:
    """Lloyd k-means (faiss) on a seeded uniform sample of the rows of `x`.

    training_sample_size=None trains on every row.
    """
    x = as_embedding_matrix(x)
    n, d = x.shape
    n_clusters = check_whole_number(n_clusters, "n_clusters", 1)
    n_iter = check_whole_number(n_iter, "n_iter", 1)
    size = n if training_sample_size is None else check_whole_number(training_sample_size, "training_sample_size", 1)
    size = min(size, n)
    if n_clusters > size:
        raise ValueError(
            f"n_clusters: {n_clusters} clusters is more than the {size} examples available "
            f"to train on (n={n}, training_sample_size={training_sample_size})"
        )
    rng = np.random.default_rng(seed)
    idx = np.arange(n) if size == n else np.sort(rng.choice(n, size=size, replace=False))
    sample = np.ascontiguousarray(x[idx])
    km = faiss.Kmeans(
        d,
        n_clusters,
        niter=int(n_iter),
        seed=int(seed) % (2**31),
        verbose=False,
        gpu=bool(use_gpu),
        # Train on exactly the sample we drew: no silent subsampling, no warning spam.
        max_points_per_centroid=int(np.ceil(size / n_clusters)) + 1,
        min_points_per_centroid=1,
    )
    km.train(sample)
    return KMeansResult(
        centroids=np.ascontiguousarray(km.centroids, dtype=np.float32),
        cost_per_iteration=np.asarray(km.obj, dtype=np.float64),
        training_indices=idx,
        n_iter=int(n_iter),
    )


def assign_to_centroids(x, centroids, *, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (int64) and squared Euclidean distance to it (float32, >= 0) per row."""
    centroids = as_embedding_matrix(centroids, "centroids")
    x = as_embedding_matrix(x, dim=centroids.shape[1])
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    labels = np.empty(x.shape[0], dtype=np.int64)
    sq_dist = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], batch_size):
        dist, lab = index.search(x[start : start + batch_size], 1)
        labels[start : start + batch_size] = lab[:, 0]
        sq_dist[start : start + batch_size] = dist[:, 0]
    # ||x||^2 + ||c||^2 - 2<x, c> can round to a tiny negative number.
    np.maximum(sq_dist, 0.0, out=sq_dist)
    return labels, sq_dist


def kmeans_cost(sq_dist) -> float:
    """The k-means objective: the sum of squared distances to the assigned centroids."""
    return float(np.sum(np.asarray(sq_dist, dtype=np.float64)))
