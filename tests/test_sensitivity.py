"""Sensitivity scores, the balanced lambda, and the end-to-end variance claim."""

from __future__ import annotations

import numpy as np
import pytest

from curation_assets.algorithms.estimation import relative_error, weighted_mean
from curation_assets.algorithms.kmeans import assign_to_centroids, fit_kmeans
from curation_assets.algorithms.representatives import nearest_members
from curation_assets.algorithms.sampling import sample_poisson, sample_uniform, sample_with_replacement
from curation_assets.algorithms.sensitivity import (
    balanced_lambda,
    distance_term,
    sampling_probabilities,
    sensitivity_scores,
)


def _clustered(seed=0, n=3000, d=6, k=8):
    rng = np.random.default_rng(seed)
    centroids = rng.normal(scale=5.0, size=(k, d)).astype(np.float32)
    x = (centroids[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)
    v = rng.uniform(0.1, 4.0, size=k)
    return x, centroids, v


# --------------------------------------------------------------------------------------------
# Scores and probabilities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("z", [0.5, 1.0, 2.0, 3.0])
def test_scores_follow_the_formula(z):
    rng = np.random.default_rng(1)
    n, k = 500, 7
    ids = rng.integers(k, size=n)
    dist = rng.exponential(2.0, size=n)  # plain (not squared) distances
    v = rng.uniform(0.0, 3.0, size=k)
    lam = 0.37
    s = sensitivity_scores(v, ids, dist**2, lam, z)
    np.testing.assert_allclose(s, v[ids] + lam * dist**z, rtol=1e-12)
    np.testing.assert_allclose(distance_term(dist**2, z), dist**z, rtol=1e-12)
    assert s.dtype == np.float64 and np.all(s > 0)


def test_sampling_probabilities_are_positive_normalised_and_proportional():
    rng = np.random.default_rng(2)
    s = rng.lognormal(0, 2, size=1000)
    p = sampling_probabilities(s)
    assert np.all(p > 0)
    assert abs(p.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(p / s, (p / s)[0], rtol=1e-12)
    for bad in (np.array([1.0, 0.0]), np.array([1.0, -1.0]), np.array([1.0, np.nan]), np.array([]),
                np.ones((2, 2))):
        with pytest.raises(ValueError, match="sensitivities"):
            sampling_probabilities(bad)


# --------------------------------------------------------------------------------------------
# balanced_lambda
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("z", [1.0, 2.0])
def test_balanced_lambda_equalises_the_two_terms(z):
    x, centroids, v = _clustered()
    ids, sq = assign_to_centroids(x, centroids)
    lam = balanced_lambda(v, ids, sq, z)
    loss_total = v[ids].sum()
    dist_total = (np.sqrt(sq.astype(np.float64)) ** z).sum()
    assert lam > 0
    assert loss_total == pytest.approx(lam * dist_total, rel=1e-9)
    # So p is a half/half mixture: the loss term carries exactly half the probability mass.
    s = sensitivity_scores(v, ids, sq, lam, z)
    p = sampling_probabilities(s)
    assert np.sum(p * v[ids] / s) == pytest.approx(0.5, rel=1e-9)


@pytest.mark.parametrize("z, factor", [(2.0, 1 / 100), (1.0, 1 / 10)])
def test_balanced_lambda_is_scale_free(z, factor):
    x, centroids, v = _clustered(seed=3)
    ids, sq = assign_to_centroids(x, centroids)
    ids10, sq10 = assign_to_centroids(10 * x, 10 * centroids)  # the same data in other units
    np.testing.assert_array_equal(ids10, ids)
    np.testing.assert_allclose(sq10, 100 * sq, rtol=1e-4, atol=1e-3)
    lam, lam10 = balanced_lambda(v, ids, sq, z), balanced_lambda(v, ids10, sq10, z)
    assert lam10 == pytest.approx(lam * factor, rel=1e-5)
    p = sampling_probabilities(sensitivity_scores(v, ids, sq, lam, z))
    p10 = sampling_probabilities(sensitivity_scores(v, ids10, sq10, lam10, z))
    np.testing.assert_allclose(p10, p, rtol=1e-4)
    # Loss units: multiplying every loss by 7 multiplies lambda by 7 and leaves p unchanged.
    lam7 = balanced_lambda(7 * v, ids, sq, z)
    assert lam7 == pytest.approx(7 * lam, rel=1e-12)
    p7 = sampling_probabilities(sensitivity_scores(7 * v, ids, sq, lam7, z))
    np.testing.assert_allclose(p7, p, rtol=1e-10)


def test_balanced_lambda_is_zero_when_every_point_is_on_its_centroid():
    assert balanced_lambda(np.array([1.0, 2.0]), np.array([0, 1, 1]), np.zeros(3)) == 0.0


# --------------------------------------------------------------------------------------------
# Input errors name the input
# --------------------------------------------------------------------------------------------

V = np.array([1.0, 2.0, 0.5])
IDS = np.array([0, 1, 2, 1])
SQ = np.array([0.5, 1.0, 2.0, 0.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lam=-0.1), r"^lambda_: "),
        (dict(lam=np.nan), r"^lambda_: "),
        (dict(lam=np.inf), r"^lambda_: "),
        (dict(z=0.0), r"^z: "),
        (dict(z=-2.0), r"^z: "),
        (dict(z=np.nan), r"^z: "),
        (dict(cluster_losses=np.array([1.0, np.nan, 0.5])), r"^cluster_losses: "),
        (dict(cluster_losses=np.array([1.0, -1.0, 0.5])), r"^cluster_losses: "),
        (dict(cluster_losses=np.ones((3, 1))), r"^cluster_losses: "),
        (dict(cluster_ids=np.array([0, 1, 3, 1])), r"^cluster_ids: "),
        (dict(cluster_ids=np.array([0, -1, 2, 1])), r"^cluster_ids: "),
        (dict(sq_dist=np.array([0.5, np.nan, 2.0, 0.0])), r"^sq_dist: "),
        (dict(sq_dist=np.array([0.5, -1.0, 2.0, 0.0])), r"^sq_dist: "),
        (dict(sq_dist=np.array([0.5, 1.0, 2.0])), r"^sq_dist: "),
        (dict(sq_dist=np.float64(1.0)), r"^sq_dist: "),
        # Zero loss at the representative and zero distance: that row could never be drawn.
        (dict(cluster_losses=np.array([1.0, 2.0, 0.0]), sq_dist=np.array([0.5, 1.0, 0.0, 0.0])),
         r"^sensitivities: 1 example"),
        (dict(cluster_losses=np.array([0.0, 0.0, 0.0])), r"^sensitivities: "),
        (dict(lam=0.0, cluster_losses=np.array([1.0, 0.0, 0.5])), r"^sensitivities: 2 example"),
    ],
)
def test_sensitivity_scores_errors_name_the_input(kwargs, match):
    args = dict(cluster_losses=V, cluster_ids=IDS, sq_dist=SQ, lam=0.3, z=2.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sensitivity_scores(args["cluster_losses"], args["cluster_ids"], args["sq_dist"], args["lam"],
                           args["z"])


def test_balanced_lambda_errors_name_the_input():
    with pytest.raises(ValueError, match=r"^cluster_losses: "):
        balanced_lambda(np.array([1.0, np.nan, 0.5]), IDS, SQ)
    with pytest.raises(ValueError, match=r"^z: "):
        balanced_lambda(V, IDS, SQ, z=0.0)
    with pytest.raises(ValueError, match=r"^sq_dist: "):
        balanced_lambda(V, IDS, np.array([0.5, np.nan, 2.0, 0.0]))


# --------------------------------------------------------------------------------------------
# The point of it all: lower error than uniform sampling when the loss follows the clusters
# --------------------------------------------------------------------------------------------


def _pipeline(data_seed: int, n=4000, d=8, k=10):
    """Gaussian blobs with a heavy-tailed (log-normal) radius. The loss is a per-blob base level
    plus 0.2 * squared distance to the fitted centroid, times +-20% noise: the smooth-in-the-
    embedding structure the method assumes, but not exactly its score (lambda is the balanced one,
    not 0.2; k-means sometimes merges blobs, so the base level varies inside a cluster)."""
    rng = np.random.default_rng(data_seed)
    centers = rng.normal(scale=10.0, size=(k, d))
    blob = rng.integers(k, size=n)
    radius = rng.lognormal(0.0, 0.75, size=n)
    x = (centers[blob] + radius[:, None] * rng.normal(size=(n, d))).astype(np.float32)
    base = rng.uniform(0.5, 3.0, size=k)
    km = fit_kmeans(x, k, seed=data_seed)
    ids, sq = assign_to_centroids(x, km.centroids)
    loss = (base[blob] + 0.2 * sq) * rng.uniform(0.8, 1.2, n)
    reps = nearest_members(ids, sq, k)
    assert (reps >= 0).all()
    v = loss[reps]  # the only k losses the method is allowed to look at
    lam = balanced_lambda(v, ids, sq)
    p = sampling_probabilities(sensitivity_scores(v, ids, sq, lam))
    return loss, p


def _median_errors(loss, p, sampler, m=100, n_seeds=300):
    n, truth = loss.size, loss.mean()
    errs = []
    for seed in range(n_seeds):
        smp = sampler(p, m, seed) if sampler is not sample_uniform else sample_uniform(n, m, seed)
        errs.append(relative_error(weighted_mean(loss, smp.indices, smp.weights, n), truth))
    return float(np.median(errs))


def test_sensitivity_sampling_beats_uniform_when_loss_follows_clusters():
    # Over data seeds 0-19 (300 sampling seeds each, m = 100 of 4000) the ratio of median relative
    # errors, with replacement / uniform, was 0.18-0.28; we assert < 0.5.
    loss, p = _pipeline(data_seed=0)
    sens = _median_errors(loss, p, sample_with_replacement)
    unif = _median_errors(loss, p, sample_uniform)
    assert sens < 0.5 * unif, (sens, unif)
    # Power: the same estimator with p replaced by a random permutation of itself (same weights
    # distribution, no relation to the loss) must lose its advantage.
    shuffled = np.random.default_rng(1).permutation(p)
    assert _median_errors(loss, shuffled, sample_with_replacement) > unif


@pytest.mark.xfail(
    strict=True,
    reason="Known: Poisson sampling with Hajek (sum-to-n) weights loses the advantage. Over data "
    "seeds 0-19 its median error was 0.72-2.35x uniform's (with replacement: 0.18-0.28x), because "
    "normalising by sum_S 1/pi is dominated by the few low-probability rows drawn. Normalising by "
    "sum_S p/pi instead (weighting='ratio', the default) keeps the with-replacement accuracy.",
)
def test_poisson_hajek_sensitivity_sampling_beats_uniform_when_loss_follows_clusters():
    loss, p = _pipeline(data_seed=0)
    sens = _median_errors(loss, p, lambda *a: sample_poisson(*a, weighting="hajek"))
    unif = _median_errors(loss, p, sample_uniform)
    assert sens < 0.7 * unif, (sens, unif)


def test_poisson_ratio_sensitivity_sampling_beats_uniform_when_loss_follows_clusters():
    """The default Poisson weighting keeps the advantage the Hajek weighting loses (above)."""
    loss, p = _pipeline(data_seed=0)
    sens = _median_errors(loss, p, lambda *a: sample_poisson(*a, weighting="ratio"))
    unif = _median_errors(loss, p, sample_uniform)
    assert sens < 0.5 * unif, (sens, unif)
    hajek = _median_errors(loss, p, lambda *a: sample_poisson(*a, weighting="hajek"))
    assert sens < 0.7 * hajek, (sens, hajek)


def test_scores_upper_bound_a_holder_loss():
    """If l_i = a_j + b d_i^2 and lambda = b, then l_i <= s_i for every example (the premise of
    the paper's variance bound), because v_j = l(representative) >= a_j. A distance term built
    from d instead of d^2, or the wrong cluster's loss, breaks this."""
    x, centroids, _ = _clustered(seed=4)
    k = centroids.shape[0]
    ids, sq = assign_to_centroids(x, centroids)
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0.5, 2.0, size=k), 0.3
    loss = a[ids] + b * sq.astype(np.float64)
    v = loss[nearest_members(ids, sq, k)]
    s = sensitivity_scores(v, ids, sq, b)
    assert np.all(loss <= s + 1e-9)
    # and not trivially: the bound is tight at each representative.
    reps = nearest_members(ids, sq, k)
    assert np.all(s[reps] - loss[reps] <= b * sq[reps] + 1e-9)
    assert np.mean(s / loss) < 2.0


def test_balanced_lambda_from_cluster_sums_equals_the_full_scan():
    from curation_assets.algorithms.sensitivity import balanced_lambda_from_cluster_sums

    rng = np.random.default_rng(4)
    k, n = 7, 500
    v = rng.uniform(0.1, 2.0, k)
    ids = rng.integers(0, k - 1, n)  # the last cluster is empty
    d2 = rng.gamma(2.0, 0.3, n)
    for z in (1.0, 2.0, 3.0):
        dz = d2 ** (z / 2)
        fast = balanced_lambda_from_cluster_sums(v, np.bincount(ids, minlength=k),
                                                 np.bincount(ids, weights=dz, minlength=k))
        assert fast == pytest.approx(balanced_lambda(v, ids, d2, z), rel=1e-12)
        assert fast == pytest.approx(v[ids].sum() / dz.sum(), rel=1e-12)
