"""fit_kmeans trains on exactly the seeded sample it records; assign_to_centroids is exact."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from curation_assets.algorithms.kmeans import (
    assign_to_centroids,
    default_n_clusters,
    fit_kmeans,
    kmeans_cost,
)


def _blobs(seed=0, n=5000, d=8, k=10, sep=6.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=sep, size=(k, d))
    return (centers[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def _means_of_assigned(sample, centroids):
    labels, sq = assign_to_centroids(sample, centroids)
    k = centroids.shape[0]
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, sample.shape[1]))
    np.add.at(sums, labels, sample.astype(np.float64))
    return sums / np.maximum(counts, 1)[:, None], counts, sq


def _check_trained_on_whole_sample(sample, centroids, cost_per_iteration):
    """Lloyd's fixed point on `sample`: each centroid is the mean of the sample points nearest
    to it, and the recorded objective is the sample's cost. A fit on a subsample of `sample`
    fails both (its centroids are means of fewer points, its cost is a fraction of the total)."""
    means, counts, sq = _means_of_assigned(sample, centroids)
    assert (counts > 0).all()
    # faiss stops once its float32 objective stalls, sometimes with a boundary point or two still
    # switching: centroids then sit up to ~0.01 from the means (unit-variance blobs). A fit on a
    # 1024-point subsample is ~0.3 off, and its cost a quarter of the sample's.
    np.testing.assert_allclose(centroids, means, atol=0.02)
    recomputed = kmeans_cost(sq)
    assert recomputed == pytest.approx(cost_per_iteration[-1], rel=1e-4)


def test_fit_records_the_training_sample_and_uses_all_of_it():
    x = _blobs()
    res = fit_kmeans(x, 10, seed=3, training_sample_size=1200, n_iter=100)
    assert res.training_sample_size == 1200
    idx = res.training_indices
    assert idx.shape == (1200,)
    assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < x.shape[0]
    assert res.centroids.shape == (10, 8) and res.centroids.dtype == np.float32
    cost = res.cost_per_iteration
    assert 1 <= cost.size <= res.n_iter  # faiss may stop early once the objective stalls
    # Lloyd never increases the objective; faiss sums it in float32 (wobbles of ~1e-6 relative
    # seen), so allow 1e-5 relative.
    assert np.all(np.diff(cost) <= 1e-5 * cost[:-1])
    assert cost[-1] < 0.5 * cost[0]
    _check_trained_on_whole_sample(x[idx], res.centroids, cost)


def test_no_silent_subsampling_beyond_256_points_per_centroid():
    # 4000 training points for 4 centroids: faiss's default cap (256 per centroid) would train on
    # 1024 of them. fit_kmeans must not.
    x = _blobs(seed=1, k=4)
    res = fit_kmeans(x, 4, seed=1, training_sample_size=4000, n_iter=100)
    sample = x[res.training_indices]
    _check_trained_on_whole_sample(sample, res.centroids, res.cost_per_iteration)

    # Power: faiss with its defaults on the same sample fails the same check.
    km = faiss.Kmeans(8, 4, niter=100, seed=1, verbose=False)
    km.train(sample)
    with pytest.raises(AssertionError):
        _check_trained_on_whole_sample(sample, km.centroids, km.obj)


def test_fit_is_seeded():
    x = _blobs(seed=2)
    a = fit_kmeans(x, 10, seed=5, training_sample_size=2000)
    b = fit_kmeans(x, 10, seed=5, training_sample_size=2000)
    c = fit_kmeans(x, 10, seed=6, training_sample_size=2000)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.training_indices, b.training_indices)
    np.testing.assert_array_equal(a.cost_per_iteration, b.cost_per_iteration)
    assert not np.array_equal(a.training_indices, c.training_indices)
    assert not np.array_equal(a.centroids, c.centroids)


def test_fit_on_all_rows_by_default_and_sample_size_capped_at_n():
    x = _blobs(seed=3, n=800)
    full = fit_kmeans(x, 5, seed=0)
    np.testing.assert_array_equal(full.training_indices, np.arange(800))
    big = fit_kmeans(x, 5, seed=0, training_sample_size=10_000)
    assert big.training_sample_size == 800
    np.testing.assert_array_equal(big.centroids, full.centroids)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_clusters=201), r"^n_clusters: "),  # more clusters than rows (n = 200)
        (dict(n_clusters=60, training_sample_size=50), r"^n_clusters: "),  # than sampled rows
        (dict(n_clusters=0), r"^n_clusters: "),
        (dict(n_clusters=2.5), r"^n_clusters: "),
        (dict(n_clusters=True), r"^n_clusters: "),
        (dict(n_clusters=3, n_iter=0), r"^n_iter: "),
        (dict(n_clusters=3, training_sample_size=0), r"^training_sample_size: "),
    ],
)
def test_fit_argument_errors_name_the_argument(kwargs, match):
    x = _blobs(n=200)
    with pytest.raises(ValueError, match=match):
        fit_kmeans(x, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_are_rejected_with_the_row(bad):
    x = _blobs(n=300)
    x[17, 3] = bad
    with pytest.raises(ValueError, match=r"^embeddings: 1 row\(s\).*first at row 17"):
        fit_kmeans(x, 3)
    with pytest.raises(ValueError, match=r"^embeddings: "):
        assign_to_centroids(x, x[:3])
    with pytest.raises(ValueError, match=r"^centroids: "):
        assign_to_centroids(x[:10], x[15:18])


def test_malformed_embeddings_are_rejected():
    with pytest.raises(ValueError, match=r"^embeddings: expected a 2-d"):
        fit_kmeans(np.zeros(10), 2)
    with pytest.raises(ValueError, match=r"^embeddings: is empty"):
        fit_kmeans(np.zeros((0, 4)), 2)
    with pytest.raises(ValueError, match=r"^embeddings: expected dimension 4"):
        assign_to_centroids(np.zeros((5, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"^embeddings: expected numbers"):
        fit_kmeans(np.array([["a", "b"], ["c", "d"]]), 1)


def test_assign_matches_brute_force():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    c = rng.normal(size=(50, 16)).astype(np.float32)
    labels, sq = assign_to_centroids(x, c)
    assert labels.dtype == np.int64 and sq.dtype == np.float32
    assert np.all(sq >= 0)

    d2 = ((x[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(-1)
    best = d2.argmin(1)
    d_sorted = np.sort(d2, axis=1)
    gap = d_sorted[:, 1] - d_sorted[:, 0]
    # faiss uses ||x||^2 + ||c||^2 - 2<x, c> in float32: near-ties (gap below its rounding) may
    # go either way, but the chosen centroid is always within rounding of the nearest.
    clear = gap > 1e-3
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], best[clear])
    chosen = d2[np.arange(x.shape[0]), labels]
    np.testing.assert_allclose(chosen, d_sorted[:, 0], atol=1e-3)
    np.testing.assert_allclose(sq, d_sorted[:, 0], rtol=1e-4, atol=1e-4)

    # Batching changes nothing.
    labels_b, sq_b = assign_to_centroids(x, c, batch_size=701)  # 5 batches, ragged tail
    np.testing.assert_array_equal(labels_b, labels)
    np.testing.assert_array_equal(sq_b, sq)


def test_assign_distance_of_a_point_on_its_centroid_is_zero_not_negative():
    rng = np.random.default_rng(12)
    c = (rng.normal(size=(20, 32)) * 100).astype(np.float32)  # large norms: cancellation
    labels, sq = assign_to_centroids(c, c)
    np.testing.assert_array_equal(labels, np.arange(20))
    assert np.all(sq >= 0)
    assert np.all(sq <= 1e-2 * (c.astype(np.float64) ** 2).sum(1).min())


def test_kmeans_cost_and_default_n_clusters():
    # One far point and many near ones: a float32 sum gives 30000988, a float64 one 30001000.
    sq = np.concatenate([[3e7], np.ones(1000)]).astype(np.float32)
    assert kmeans_cost(sq) == 30_001_000.0
    assert default_n_clusters(5000) == 50
    assert default_n_clusters(1) == 1
    assert default_n_clusters(1_000_000) == 707
