"""The torch k-means path (the GPU route where faiss is CPU-only) agrees with faiss, on the CPU.

Same data, same initial centroids: torch and faiss must find the same assignments and costs, so a
GPU run can be trusted by comparison with these CPU runs (benchmarks/gpu_check.py does so on a GPU).
"""

import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from curation_assets.algorithms.kmeans import assign_to_centroids, fit_kmeans, kmeans_cost
from curation_assets.algorithms.torch_kmeans import faiss_initial_rows, torch_assign, torch_kmeans
from resources import ComputeDevice, SentenceEmbedder
from resources import embedder as embedder_module

ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


def _clustered(seed=0, n=20_000, d=16, m=40, spread=1.5):
    """Overlapping Gaussian blobs (m of them), like embeddings: many near-equal local minima."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(m, d)) * spread
    return (centers[rng.integers(0, m, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _cost(x, centroids):
    return kmeans_cost(assign_to_centroids(x, centroids)[1])


def test_torch_assign_matches_faiss():
    x = _clustered(1)
    centroids = _clustered(2, n=300)
    lab_f, dist_f = assign_to_centroids(x, centroids)
    lab_t, dist_t = torch_assign(x, centroids, device="cpu", batch_size=7_000)  # uneven last chunk
    assert lab_t.dtype == np.int64 and dist_t.dtype == np.float32 and (dist_t >= 0).all()
    assert (lab_t == lab_f).mean() >= 0.999
    assert np.allclose(dist_t, dist_f, rtol=1e-4, atol=1e-3)
    # where they disagree, it is a near-tie: both centroids are (almost) equally close
    diff = lab_t != lab_f
    xd = x[diff].astype(np.float64)
    to_f = ((xd - centroids[lab_f[diff]]) ** 2).sum(1)
    to_t = ((xd - centroids[lab_t[diff]]) ** 2).sum(1)
    assert np.allclose(to_f, to_t, rtol=1e-4)


def test_default_init_is_faiss_own_choice():
    x = _clustered(3, n=3_000)
    km = faiss.Kmeans(x.shape[1], 20, niter=2, seed=7, max_points_per_centroid=1_000, min_points_per_centroid=1)
    km.train(x)
    first_cost = _cost(x, x[faiss_initial_rows(len(x), 20, 7)])
    assert km.obj[0] == pytest.approx(first_cost, rel=1e-5)
    _, costs = torch_kmeans(x, 20, seed=7, n_iter=2)
    assert costs[0] == pytest.approx(first_cost, rel=1e-5)


def test_torch_kmeans_reaches_faiss_cost_from_the_same_init():
    x = _clustered(4)
    init = x[np.random.default_rng(0).choice(len(x), 25, replace=False)]
    km = faiss.Kmeans(x.shape[1], 25, niter=20, seed=0, max_points_per_centroid=len(x), min_points_per_centroid=1)
    km.train(x, init_centroids=init.copy())
    c_t, costs = torch_kmeans(x, 25, n_iter=20, init_centroids=init)
    assert c_t.dtype == np.float32 and c_t.shape == (25, x.shape[1])
    assert np.all(np.diff(costs) <= 1e-6 * costs[0])  # Lloyd never increases the cost
    assert abs(_cost(x, c_t) / _cost(x, km.centroids) - 1) < 0.005


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_kmeans_torch_backend_within_1pct_of_faiss_across_seeds(seed):
    x = _clustered(5)
    f = fit_kmeans(x, 25, seed=seed, n_iter=15, training_sample_size=10_000)
    t = fit_kmeans(x, 25, seed=seed, n_iter=15, training_sample_size=10_000, backend="torch", device="cpu")
    assert (t.backend, t.device, f.backend) == ("torch", "cpu", "faiss")
    assert np.array_equal(t.training_indices, f.training_indices)
    assert t.cost_per_iteration[0] == pytest.approx(f.cost_per_iteration[0], rel=1e-5)  # same start
    assert abs(_cost(x, t.centroids) / _cost(x, f.centroids) - 1) < 0.01


def test_empty_clusters_are_reseeded_without_nan():
    x = np.repeat(np.eye(4, dtype=np.float32) * 3, 10, axis=0)  # 40 rows, 4 distinct points
    c, costs = torch_kmeans(x, 9, seed=0, n_iter=5)
    assert np.isfinite(c).all() and np.isfinite(costs).all()
    labels, dist = torch_assign(x, c)
    assert np.allclose(dist, 0.0, atol=1e-5)  # every distinct point became a centroid
    assert len(np.unique(labels)) == 4
    # a single far outlier takes over an emptied cluster: it is the farthest point
    y = np.vstack([_clustered(6, n=500, m=2, spread=0.1), np.full((1, 16), 50.0, np.float32)])
    init = np.vstack([y[:2], y[:1]])  # the third centroid duplicates the first, so it starts empty
    c, costs = torch_kmeans(y, 3, n_iter=3, init_centroids=init)
    assert np.isfinite(c).all() and np.abs(c - 50.0).max(axis=1).min() < 1e-4


def test_compute_device_cpu_means_cpu_faiss():
    assert ComputeDevice(device="cpu").kmeans_backend() == ("faiss", "cpu")


@no_cuda
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"compute_device\.device"):
        ComputeDevice(device="cuda").kmeans_backend()
    assert ComputeDevice(device="auto").kmeans_backend() == ("faiss", "cpu")  # auto falls back quietly
    x = _clustered(7, n=200)
    with pytest.raises(RuntimeError, match="device 'cuda': torch sees no CUDA GPU"):
        assign_to_centroids(x, x[:5], device="cuda")
    with pytest.raises(RuntimeError, match="device 'cuda'"):
        fit_kmeans(x, 5, backend="torch", device="cuda")
    with pytest.raises(RuntimeError, match="faiss_gpu"):
        fit_kmeans(x, 5, backend="faiss_gpu")


def test_embedding_batch_size_backs_off_on_out_of_memory():
    texts = [("The striker scored twice. " * (1 + i % 7)) + f"Match report {i}." for i in range(24)]
    # max_seq_length=96 gives this test its own (model, device, max_seq_length) key: the backed-off
    # batch size is kept per process and must not slow the other tests down.
    emb = SentenceEmbedder(compute=ComputeDevice(device="cpu"), precision="float32", batch_size=16,
                           max_seq_length=96)
    key = emb._key(emb._load())
    embedder_module._BATCH_LIMITS.pop(key, None)
    embedder_module._BACKOFFS.pop(key, None)
    try:
        reference = emb.encode(texts)
        seen = []

        def device_with_room_for_3(batch_size):  # stands in for a GPU that fits 3 texts at once
            seen.append(batch_size)
            if batch_size > 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

        out = emb.encode(texts, before_forward=device_with_room_for_3)
        assert np.allclose(out, reference, atol=1e-5)
        assert seen[:3] == [16, 8, 4] and set(seen[3:]) == {2}
        report = emb.runtime_report()
        assert report["batch_size_requested"] == 16 and report["batch_size_in_use"] <= 3
        assert report["oom_backoffs"] == 3
        # kept for the process: the next call starts at the smaller size and backs off no more
        seen.clear()
        assert np.allclose(emb.encode(texts[:5], before_forward=device_with_room_for_3), reference[:5], atol=1e-5)
        assert seen == [2]

        def no_memory(batch_size):
            raise RuntimeError("CUDA error: out of memory")

        with pytest.raises(RuntimeError, match=r"embedder\.batch_size"):
            emb.encode(texts[:3], before_forward=no_memory)

        def other_error(batch_size):
            raise RuntimeError("something else")

        with pytest.raises(RuntimeError, match="something else"):
            emb.encode(texts[:3], before_forward=other_error)
    finally:
        embedder_module._BATCH_LIMITS.pop(key, None)
        embedder_module._BACKOFFS.pop(key, None)


def test_gpu_check_cpu_dry_run_exits_0():
    # --no-pipeline: the whole-graph timing alone takes ~40 s here; the comparisons are what can break
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-dry-run",
                           "--no-pipeline"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "PASS" in done.stdout and "FAIL" not in done.stdout
    assert time.perf_counter() - start < 60


def test_auto_device_without_a_gpu_driver_does_not_import_torch():
    """auto on a machine with no GPU driver answers CPU without a ~2 s torch import; with a driver
    present (a GPU machine) it asks torch."""
    from resources.compute_device import no_gpu_driver

    code = ("import sys; from resources.compute_device import ComputeDevice; "
            "print(ComputeDevice().kmeans_backend(), ComputeDevice().torch_device(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1])).stdout.strip()
    if no_gpu_driver():
        assert out == "('faiss', 'cpu') cpu False"
    else:
        assert out.endswith("True")
