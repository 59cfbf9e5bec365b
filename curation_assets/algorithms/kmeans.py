"""k-means with faiss on an explicit, seeded training sample, and nearest-centroid assignment.

faiss.Kmeans silently trains on at most 256 points per centroid; here the caller picks the
training-sample size, it is drawn with our own seed and recorded, and faiss is told not to
subsample further, so what was trained on is always known.

Backends: "faiss" (CPU), "faiss_gpu" (a faiss GPU build) and "torch" (algorithms.torch_kmeans, on
"cpu" or "cuda": the GPU path when faiss is the PyPI CPU build). All start from the same initial
centroids for a seed (faiss's own choice) and use the same distances, so they differ only by rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from .validation import as_embedding_matrix, check_whole_number


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray  # (k, d) float32
    cost_per_iteration: np.ndarray  # sum of squared distances on the training sample
    training_indices: np.ndarray  # rows of the input that were trained on (sorted)
    n_iter: int
    backend: str = "faiss"  # the backend that ran: faiss, faiss_gpu or torch
    device: str = "cpu"

    @property
    def training_sample_size(self) -> int:
        return int(self.training_indices.size)


Backend = Literal["faiss", "faiss_gpu", "torch"]


def faiss_gpu_count() -> int:
    """GPUs a faiss GPU build sees; 0 for faiss-cpu (which has no get_num_gpus at all in some builds)."""
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_backend(use_gpu: bool = False, backend: Backend | None = None, device: str | None = None) -> tuple[str, str]:
    """(backend, device) that will run. backend=None keeps the old use_gpu switch: faiss's GPU build
    when it sees a GPU, else torch on CUDA when torch sees one, else CPU faiss."""
    if backend is None:
        if not use_gpu:
            return "faiss", "cpu"
        if faiss_gpu_count() > 0:
            return "faiss_gpu", "cuda"
        return ("torch", "cuda") if torch_cuda_available() else ("faiss", "cpu")
    if backend == "faiss":
        if device not in (None, "cpu"):
            raise ValueError(f"backend 'faiss' runs on the CPU only, got device {device!r}; use 'faiss_gpu' or 'torch'")
        return "faiss", "cpu"
    if backend == "faiss_gpu":
        if faiss_gpu_count() == 0:
            raise RuntimeError("backend 'faiss_gpu': this faiss build sees no GPU (faiss-cpu is installed); "
                               "use backend 'torch' with device 'cuda'")
        return "faiss_gpu", "cuda"
    if backend == "torch":
        return "torch", device or ("cuda" if torch_cuda_available() else "cpu")
    raise ValueError(f"backend: expected 'faiss', 'faiss_gpu' or 'torch', got {backend!r}")


MAX_ITER = 10_000


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
    backend: Backend | None = None,
    device: str | None = None,
    init_centroids=None,
) -> KMeansResult:
    """Lloyd k-means on a seeded uniform sample of the rows of `x`.

    training_sample_size=None trains on every row. backend/device: see resolve_backend.
    init_centroids (k, d) replaces the seeded initial rows, for every backend.
    """
    backend, device = resolve_backend(use_gpu, backend, device)
    x = as_embedding_matrix(x)
    n, d = x.shape
    n_clusters = check_whole_number(n_clusters, "n_clusters", 1)
    n_iter = check_whole_number(n_iter, "n_iter", 1)
    if n_iter > MAX_ITER:
        raise ValueError(f"n_iter: must be at most {MAX_ITER:,} (Lloyd's iterations converge long before), got {n_iter}")
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
    if init_centroids is not None:
        init_centroids = as_embedding_matrix(init_centroids, "init_centroids", dim=d)
        if init_centroids.shape[0] != n_clusters:
            raise ValueError(f"init_centroids: expected {n_clusters} rows, got {init_centroids.shape[0]}")
    if backend == "torch":
        from .torch_kmeans import torch_kmeans

        centroids, costs = torch_kmeans(sample, n_clusters, seed=seed, n_iter=n_iter, device=device,
                                        init_centroids=init_centroids)
        return KMeansResult(centroids=centroids, cost_per_iteration=costs, training_indices=idx,
                            n_iter=int(n_iter), backend=backend, device=device)
    km = faiss.Kmeans(
        d,
        n_clusters,
        niter=int(n_iter),
        seed=int(seed) % (2**31),
        verbose=False,
        gpu=backend == "faiss_gpu",
        # Train on exactly the sample we drew: no silent subsampling, no warning spam.
        max_points_per_centroid=int(np.ceil(size / n_clusters)) + 1,
        min_points_per_centroid=1,
    )
    km.train(sample, init_centroids=init_centroids)
    return KMeansResult(
        centroids=np.ascontiguousarray(km.centroids, dtype=np.float32),
        cost_per_iteration=np.asarray(km.obj, dtype=np.float64),
        training_indices=idx,
        n_iter=int(n_iter),
        backend=backend,
        device=device,
    )


def assign_to_centroids(x, centroids, *, batch_size: int = 65536,
                        device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (int64) and squared Euclidean distance to it (float32, >= 0) per row.

    device None/"cpu": faiss on the CPU; "cuda": faiss's GPU build when it sees a GPU, else torch on CUDA
    (an error when torch sees none either).
    """
    if device not in (None, "cpu"):
        if faiss_gpu_count() == 0:
            from .torch_kmeans import torch_assign

            return torch_assign(x, centroids, device=device, batch_size=batch_size)
    centroids = as_embedding_matrix(centroids, "centroids")
    x = as_embedding_matrix(x, dim=centroids.shape[1])
    index = faiss.IndexFlatL2(centroids.shape[1])
    if device not in (None, "cpu"):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
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
