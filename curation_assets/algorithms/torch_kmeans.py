"""Lloyd k-means and nearest-centroid assignment in torch: the GPU path where faiss has no GPU build.

PyPI's faiss-cpu has no GPU code, but torch usually does; both steps are one large matrix product
per chunk, which a GPU runs far faster than a CPU. Same conventions as algorithms.kmeans (faiss),
so the two can be swapped and compared:

- squared distances are ||x||^2 - 2 x.c + ||c||^2 in float32, clamped at 0 (as faiss's
  IndexFlatL2, rounding can make them slightly negative);
- cost_per_iteration[i] is the cost of iteration i's assignment, before its update (faiss's km.obj);
- the default initial centroids are faiss's own: rows perm[:k] of faiss.rand_perm(n, seed + 1),
  the permutation faiss.Kmeans(seed=seed) draws (checked against km.obj[0] in the tests), so the
  two backends start from the same centroids and differ only by float rounding;
- empty clusters are re-seeded with the training points farthest from their centroids (distinct
  points, farthest first). faiss instead splits a large cluster, chosen at random, into two copies
  nudged apart by 1/1024; ours is deterministic. With k above the number of distinct points, copies
  of a point stay as centroids of empty clusters: no division by zero, no NaN.

On CUDA the centroid sums use index_add_ (atomic adds), so repeated runs can differ in the last bits.
torch's TF32 matmul switch (torch.backends.cuda.matmul.allow_tf32) must stay off (its default):
TF32 keeps 10 mantissa bits and would move assignments.
"""

from __future__ import annotations

import numpy as np

from .validation import as_embedding_matrix, check_whole_number

# Elements in one (rows, k) block of distances: 2^24 float32 = 64 MiB of device memory.
_BLOCK_ELEMENTS = 1 << 24


def _device(device: str):
    """A torch.device; an error naming the device when CUDA was asked for and torch has none."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r}: torch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda is not None}); use device 'cpu'"
        )
    return dev


def _nearest(x, x_sq, c, rows: int):
    """(labels int64, squared distances float32) of every row of device tensor x to centroids c."""
    import torch

    n = x.shape[0]
    c_sq = (c * c).sum(1)
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    ct = c.T.contiguous()
    for s in range(0, n, rows):
        # ||c||^2 - 2 x.c: the argmin does not need ||x||^2, which is added to the minimum only.
        block = torch.addmm(c_sq.unsqueeze(0), x[s : s + rows], ct, beta=1.0, alpha=-2.0)
        best, idx = block.min(1)
        dist[s : s + rows] = (best + x_sq[s : s + rows]).clamp_min_(0.0)
        labels[s : s + rows] = idx
    return labels, dist


def torch_assign(x, centroids, device: str = "cpu", batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (int64) and squared distance to it (float32, >= 0) per row, computed on
    `device` in chunks of `batch_size` rows (only one chunk of x is on the device at a time)."""
    import torch

    centroids = as_embedding_matrix(centroids, "centroids")
    x = as_embedding_matrix(x, dim=centroids.shape[1])
    batch_size = check_whole_number(batch_size, "batch_size", 1)
    dev = _device(device)
    k = centroids.shape[0]
    rows = max(1, min(batch_size, _BLOCK_ELEMENTS // k))
    c = torch.from_numpy(centroids).to(dev)
    labels = np.empty(x.shape[0], dtype=np.int64)
    sq_dist = np.empty(x.shape[0], dtype=np.float32)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(x[start : start + batch_size]).to(dev, non_blocking=True)
            lab, dist = _nearest(xb, (xb * xb).sum(1), c, rows)
            labels[start : start + xb.shape[0]] = lab.cpu().numpy()
            sq_dist[start : start + xb.shape[0]] = dist.cpu().numpy()
    return labels, sq_dist


def faiss_initial_rows(n: int, k: int, seed: int) -> np.ndarray:
    """The k distinct rows faiss.Kmeans(seed=seed) starts from: faiss.rand_perm(n, seed + 1)[:k]."""
    import faiss

    perm = np.empty(n, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(perm), n, int(seed) + 1)
    return perm[:k].astype(np.int64)


def torch_kmeans(x, k: int, seed: int = 0, n_iter: int = 25, device: str = "cpu",
                 init_centroids=None) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd k-means on `device` over all rows of x; returns (centroids (k, d) float32,
    cost_per_iteration float64). x must fit on the device (the callers pass a training sample)."""
    import torch

    x = as_embedding_matrix(x)
    n, d = x.shape
    k = check_whole_number(k, "n_clusters", 1)
    n_iter = check_whole_number(n_iter, "n_iter", 1)
    if k > n:
        raise ValueError(f"n_clusters: {k} clusters is more than the {n} examples to train on")
    if init_centroids is None:
        init = x[faiss_initial_rows(n, k, int(seed) % (2**31))]
    else:
        init = as_embedding_matrix(init_centroids, "init_centroids", dim=d)
        if init.shape[0] != k:
            raise ValueError(f"init_centroids: expected {k} rows (one per cluster), got {init.shape[0]}")
    dev = _device(device)
    rows = max(1, _BLOCK_ELEMENTS // k)
    costs = np.empty(n_iter, dtype=np.float64)
    with torch.no_grad():
        xd = torch.from_numpy(x).to(dev)
        x_sq = (xd * xd).sum(1)
        c = torch.from_numpy(np.ascontiguousarray(init, dtype=np.float32)).to(dev)
        for it in range(n_iter):
            labels, dist = _nearest(xd, x_sq, c, rows)
            costs[it] = float(dist.double().sum())
            sums = torch.zeros((k, d), dtype=torch.float32, device=dev).index_add_(0, labels, xd)
            counts = torch.bincount(labels, minlength=k)
            new = sums / counts.clamp_min(1).to(torch.float32).unsqueeze(1)
            empty = torch.nonzero(counts == 0).flatten()
            if empty.numel():
                far = torch.topk(dist, int(empty.numel())).indices  # k <= n, so enough points
                new[empty] = xd[far]
            c = new
        return c.cpu().numpy().astype(np.float32, copy=False), costs
