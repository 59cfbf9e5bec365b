"""Robust sensitivity sampling: defensive mixture, lambda from a pilot, several representatives,
adaptive rounds; and the claim that matters (never much worse than uniform, still better where
the loss follows the clusters)."""

from __future__ import annotations

import numpy as np
import pytest

from curation_assets.algorithms.kmeans import assign_to_centroids, fit_kmeans
from curation_assets.algorithms.representatives import nearest_members
from curation_assets.algorithms.robust_sensitivity import (
    DEFAULT_ALPHA,
    adaptive_sensitivity_sample,
    choose_alpha,
    defensive_probabilities,
    fraction_bounded,
    holder_lambda,
    nearest_members_per_cluster,
    representatives_per_cluster,
)
from curation_assets.algorithms.sampling import sample_uniform, sample_with_replacement
from curation_assets.algorithms.sensitivity import balanced_lambda, sampling_probabilities, sensitivity_scores

# --------------------------------------------------------------------------------------------
# (a) defensive_probabilities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.05, DEFAULT_ALPHA, 0.5, 1.0])
def test_defensive_probabilities_are_bounded_below_and_sum_to_one(alpha):
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 500))
        s = rng.lognormal(0, 3, n) * (rng.random(n) < 0.9)  # heavy tails, some exact zeros
        if alpha == 0.0:
            s = s + 1e-3
        if s.sum() == 0:
            s[0] = 1.0
        p = defensive_probabilities(s, alpha)
        assert abs(p.sum() - 1.0) < 1e-12
        assert np.all(p >= alpha / n * (1 - 1e-12))
        np.testing.assert_allclose(p, alpha / n + (1 - alpha) * s / s.sum(), rtol=1e-10, atol=1e-15)
    s = rng.lognormal(0, 3, 100)
    np.testing.assert_allclose(defensive_probabilities(s, 0.0), sampling_probabilities(s), rtol=1e-12)
    np.testing.assert_allclose(defensive_probabilities(s, 1.0), np.full(s.size, 1 / s.size), rtol=1e-12)


def test_defensive_variance_bounds_hold_exactly():
    """sum f^2/p <= (n/alpha) sum f^2 (the 1/alpha bound on the second moment) and, by convexity of
    1/p, Var_p <= alpha Var_unif + (1 - alpha) Var_q, for any f and any sensitivities."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 300))
        s = rng.lognormal(0, 2.5, n)
        f = rng.lognormal(0, 1.5, n) * (rng.random(n) < 0.8)
        alpha = float(rng.uniform(0.01, 1.0))
        p, q = defensive_probabilities(s, alpha), s / s.sum()
        second = np.sum(f**2 / p)
        assert second <= (n / alpha) * np.sum(f**2) * (1 + 1e-12)
        var = lambda prob: np.sum(f**2 / prob) - f.sum() ** 2  # noqa: E731  (m * variance)
        assert var(p) <= alpha * var(np.full(n, 1 / n)) + (1 - alpha) * var(q) + 1e-9 * second


@pytest.mark.parametrize("alpha", [-0.1, 1.5, np.nan, np.inf, "0.2", None, True])
def test_defensive_probabilities_reject_a_bad_alpha_by_name(alpha):
    with pytest.raises(ValueError, match=r"^alpha: "):
        defensive_probabilities(np.ones(3), alpha)


@pytest.mark.parametrize("s", [np.array([1.0, np.nan]), np.array([1.0, -1.0]), np.array([]), np.ones((2, 2))])
def test_defensive_probabilities_reject_bad_sensitivities_by_name(s):
    with pytest.raises(ValueError, match=r"^sensitivities: "):
        defensive_probabilities(s, 0.2)


def test_zero_sensitivities_need_a_positive_alpha():
    s = np.array([1.0, 0.0, 2.0])
    assert defensive_probabilities(s, 0.3)[1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"^sensitivities: 1 example"):
        defensive_probabilities(s, 0.0)
    np.testing.assert_allclose(defensive_probabilities(np.zeros(4), 1.0), 0.25)
    with pytest.raises(ValueError, match=r"^sensitivities: all zero"):
        defensive_probabilities(np.zeros(4), 0.5)


# --------------------------------------------------------------------------------------------
# (b) holder_lambda / fraction_bounded
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("z", [1.0, 2.0])
@pytest.mark.parametrize("quantile", [0.5, 0.9, 1.0])
def test_holder_lambda_is_the_smallest_constant_bounding_the_quantile(z, quantile):
    rng = np.random.default_rng(2)
    for trial in range(30):
        size = int(rng.integers(5, 300))
        sq = rng.gamma(2.0, 0.5, size)
        v = rng.uniform(0.2, 2.0, size)
        l = np.maximum(0.0, v + rng.normal(0, 1, size) * np.sqrt(sq) ** z * rng.lognormal(0, 1, size))
        lam = holder_lambda(l, v, sq, z, quantile)
        assert fraction_bounded(l, v, sq, lam, z) >= quantile - 1e-12
        assert fraction_bounded(l, v, sq, lam * (1 - 1e-7), z) < quantile  # a smaller lambda fails
        # It is the ceil(q N)-th smallest ratio |l - v| / d^z.
        ratios = np.sort(np.abs(l - v) / np.sqrt(sq) ** z)
        assert lam == pytest.approx(ratios[int(np.ceil(quantile * size)) - 1], rel=1e-12)


def test_holder_lambda_recovers_the_constant_of_a_holder_loss():
    rng = np.random.default_rng(3)
    sq = rng.gamma(2.0, 0.5, 400)
    v = rng.uniform(0.5, 2.0, 400)
    for b in (0.01, 0.3, 7.0):
        l = v + b * sq * rng.choice([-1.0, 1.0], 400)  # |l - v| = b d^2 exactly
        assert holder_lambda(l, v, sq, 2.0, 0.9) == pytest.approx(b, rel=1e-9)
        l_in = v + b * sq * rng.uniform(-1, 1, 400)  # inside the bound: lambda <= b, all bounded
        lam = holder_lambda(l_in, v, sq, 2.0, 1.0)
        assert lam <= b * (1 + 1e-12) and fraction_bounded(l_in, v, sq, b) == 1.0


def test_holder_lambda_ignores_points_on_their_centroid_and_documents_its_fallbacks():
    rng = np.random.default_rng(4)
    sq = rng.gamma(2.0, 0.5, 100)
    v = np.ones(100)
    l = v + rng.uniform(0, 1, 100) * sq
    lam = holder_lambda(l, v, sq)
    # 20 more points at d = 0 with a residual no lambda can bound: left out of the quantile...
    l2, v2, sq2 = np.r_[l, np.full(20, 3.0)], np.r_[v, np.ones(20)], np.r_[sq, np.zeros(20)]
    assert holder_lambda(l2, v2, sq2) == lam
    # ...but fraction_bounded counts them as unbounded.
    assert fraction_bounded(l2, v2, sq2, lam) == pytest.approx(fraction_bounded(l, v, sq, lam) * 100 / 120)
    # All residuals zero: 0 (the distance term is not needed). No positive distance: 0.
    assert holder_lambda(v, v, sq) == 0.0
    assert holder_lambda(l[:5], v[:5], np.zeros(5)) == 0.0
    assert fraction_bounded(v, v, np.zeros(100), 0.0) == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(quantile=0.0), r"^quantile: "),
        (dict(quantile=1.1), r"^quantile: "),
        (dict(quantile=np.nan), r"^quantile: "),
        (dict(z=0.0), r"^z: "),
        (dict(pilot_rep_losses=np.ones(4)), r"^pilot_rep_losses: "),
        (dict(pilot_sq_dist=np.array([1.0, -1.0, 1.0])), r"^sq_dist: "),
        (dict(pilot_losses=np.array([1.0, np.nan, 1.0])), r"^pilot_losses"),
    ],
)
def test_holder_lambda_errors_name_the_input(kwargs, match):
    args = dict(pilot_losses=np.ones(3), pilot_rep_losses=np.ones(3), pilot_sq_dist=np.ones(3), z=2.0,
                quantile=0.9)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        holder_lambda(**args)


# --------------------------------------------------------------------------------------------
# (3) several representatives per cluster
# --------------------------------------------------------------------------------------------


def test_nearest_members_per_cluster_matches_brute_force_with_ties_and_empty_clusters():
    rng = np.random.default_rng(5)
    for trial in range(200):
        k = int(rng.integers(1, 12))
        n = int(rng.integers(1, 80))
        r = int(rng.integers(1, 6))
        present = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
        ids = rng.choice(present, size=n)
        dist = (rng.integers(0, 4, n) if trial % 2 else rng.random(n)).astype(np.float32)
        got = nearest_members_per_cluster(ids, dist, k, r)
        assert got.shape == (k, r)
        for j in range(k):
            rows = np.flatnonzero(ids == j)
            want = rows[np.lexsort((rows, dist[rows]))][:r]  # by distance, ties to the lowest row
            np.testing.assert_array_equal(got[j, : want.size], want)
            assert np.all(got[j, want.size:] == -1)
        np.testing.assert_array_equal(got[:, 0], nearest_members(ids, dist, k))


def test_representatives_per_cluster():
    sizes = np.array([50, 3, 0, 20])
    assert representatives_per_cluster(0, 4, sizes) == 1  # always one per cluster
    assert representatives_per_cluster(7, 4, sizes) == 1
    assert representatives_per_cluster(12, 4, sizes) == 3  # floor(12 / 4)
    assert representatives_per_cluster(10_000, 4, sizes) == 50  # capped by the largest cluster
    with pytest.raises(ValueError, match=r"^budget_for_representatives: "):
        representatives_per_cluster(-1, 4, sizes)
    with pytest.raises(ValueError, match=r"^n_clusters: "):
        representatives_per_cluster(5, 0, sizes)
    with pytest.raises(ValueError, match=r"^cluster_sizes: "):
        representatives_per_cluster(5, 3, sizes)


def test_choose_alpha_trusts_useful_sensitivities_and_falls_back_to_uniform_otherwise():
    """40-point pilots. Measured over seeds 0-2 and 6: with losses proportional to s, alpha <= 0.3
    in 43-46 of 50 pilots (the one-standard-error caution keeps some at 0.5-1); with losses
    unrelated to s, alpha = 1 (uniform) in 48-49 of 50 and never below 0.7."""
    rng = np.random.default_rng(6)
    n = 2000
    s = rng.lognormal(0, 1, n)
    useful, useless = [], []
    for trial in range(50):
        pilot = rng.choice(n, 40, replace=False)
        useful.append(choose_alpha(s[pilot] * rng.uniform(0.9, 1.1, 40), s[pilot], s))
        useless.append(choose_alpha(rng.lognormal(0, 1, 40), s[pilot], s))
    useful, useless = np.array(useful), np.array(useless)
    assert np.sum(useful <= 0.3) >= 38 and np.median(useful) <= 0.2, useful
    assert np.sum(useless == 1.0) >= 45 and useless.min() >= 0.5, useless
    assert choose_alpha(np.ones(1), s[:1], s) == 1.0  # one pilot point: no standard error, no trust
    with pytest.raises(ValueError, match=r"^grid: "):
        choose_alpha(np.ones(3), s[:3], s, grid=(0.5, 2.0))
    with pytest.raises(ValueError, match=r"^pilot_sensitivities: "):
        choose_alpha(np.ones(3), s[:2], s)


# --------------------------------------------------------------------------------------------
# (c) adaptive rounds: exactly unbiased, and the plausible wrong weightings are not
# --------------------------------------------------------------------------------------------


def _small_clustered(seed=0, n=400, d=4, k=8):
    rng = np.random.default_rng(seed)
    x = (rng.normal(scale=6.0, size=(k, d))[rng.integers(k, size=n)]
         + rng.lognormal(0, 0.5, n)[:, None] * rng.normal(size=(n, d))).astype(np.float32)
    ids, sq = assign_to_centroids(x, fit_kmeans(x, k, seed=seed).centroids)
    f = (rng.uniform(0.5, 3.0, k)[ids] + 0.3 * sq) * rng.lognormal(0, 0.3, n)  # the fixed value
    return ids, sq.astype(np.float64), f


def _imperfect_model(f):
    """fit_scorer whose model is related to f but not f (as a probe is to the model trained)."""
    return lambda chosen: (lambda idx: 0.5 * f[np.asarray(idx)] + 0.3)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(pilot_share=0.0), dict(pilot_share=1.0, alpha=0.0), dict(rounds=3, reps_per_cluster=3),
     dict(rounds=3, pilot_share=0.0, lam="balanced", alpha=0.2)],
    ids=["default", "complement", "pooled-plain", "3-rounds", "3-rounds-complement"],
)
def test_adaptive_sample_is_unbiased(kwargs):
    ids, sq, f = _small_clustered()
    m, seeds = 80, 1000
    est = np.empty(seeds)
    for seed in range(seeds):
        smp, info = adaptive_sensitivity_sample(ids, sq, m, seed, _imperfect_model(f), **kwargs)
        est[seed] = smp.estimate_sum(f)
        assert np.all(np.diff(smp.indices) > 0) and np.all(smp.weights > 0)
        assert int(smp.draws.sum()) == m
    se = est.std(ddof=1) / np.sqrt(seeds)
    assert abs(est.mean() - f.sum()) < 4 * se, (est.mean(), f.sum(), se)


def test_plausible_wrong_weightings_are_far_off():
    """The same draws (complement estimator), weighted three plausible wrong ways."""
    ids, sq, f = _small_clustered()
    n, m, seeds = f.size, 80, 1000
    right, wrong = np.empty(seeds), {"pilot also 1/pi": [], "1/(m p), m total": [], "last round = whole sum": []}
    for seed in range(seeds):
        smp, info = adaptive_sensitivity_sample(ids, sq, m, seed, _imperfect_model(f), pilot_share=0.0)
        fi, w = f[smp.indices], smp.weights
        early, m0, m_last = info.round_of == 0, info.round_sizes[0], info.round_sizes[-1]
        right[seed] = np.dot(w, fi)
        wrong["pilot also 1/pi"].append(np.dot(np.where(early, n / m0, w), fi))  # importance weights for the pilot too
        wrong["1/(m p), m total"].append(np.dot(np.where(early, 1.0, w * m_last / m), fi))
        wrong["last round = whole sum"].append(np.dot(w[~early], fi[~early]))  # IS over all n, pilot dropped
    truth = f.sum()
    se = right.std(ddof=1) / np.sqrt(seeds)
    assert abs(right.mean() - truth) < 4 * se
    for name, values in wrong.items():
        values = np.asarray(values)
        assert abs(values.mean() - truth) > 10 * max(se, values.std(ddof=1) / np.sqrt(seeds)), name


def test_adaptive_sample_reports_what_it_did():
    ids, sq, f = _small_clustered(seed=1)
    k = int(ids.max()) + 1
    calls = []

    def fit_scorer(chosen):
        calls.append(np.asarray(chosen).copy())
        return lambda idx: f[np.asarray(idx)]

    smp, info = adaptive_sensitivity_sample(ids, sq, 100, 7, fit_scorer, reps_per_cluster=2)
    assert info.round_sizes == (20, 80) and info.reps_per_cluster == 2
    np.testing.assert_array_equal(calls[0], info.pilot_indices)  # round 1 is fit on the pilot
    assert info.model_inferences <= 100 + k * 2  # pilot (part of m) + k * r representatives
    assert info.lambda_source == "holder" and info.lam == pytest.approx(holder_lambda(
        f[info.pilot_indices], _rep_means(ids, sq, f, k, 2)[ids[info.pilot_indices]], sq[info.pilot_indices]))
    assert info.fraction_bounded >= 0.9 and 0.1 <= info.alpha <= 1.0
    assert set(np.flatnonzero(info.round_of == 0)) == set(np.searchsorted(smp.indices, info.pilot_indices))
    # Same inputs and seed, same sample.
    again, _ = adaptive_sensitivity_sample(ids, sq, 100, 7, fit_scorer, reps_per_cluster=2)
    np.testing.assert_array_equal(again.indices, smp.indices)
    np.testing.assert_array_equal(again.weights, smp.weights)


def _rep_means(ids, sq, f, k, r):
    members = nearest_members_per_cluster(ids, sq, k, r)
    return np.array([f[row[row >= 0]].mean() for row in members])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha=1.5), r"^alpha: "),
        (dict(alpha="sometimes"), r"^alpha: "),
        (dict(pilot_fraction=0.0), r"^pilot_fraction: "),
        (dict(pilot_fraction=1.0), r"^pilot_fraction: "),
        (dict(pilot_share=-0.5), r"^pilot_share: "),
        (dict(rounds=1), r"^rounds: "),
        (dict(m=0), r"^budget: "),
        (dict(m=2, rounds=3), r"^budget: "),
        (dict(lam=-1.0), r"^lam: "),
        (dict(lam="holder"), r"^lam: "),
        (dict(z=0.0), r"^z: "),
        (dict(fit_scorer=None), r"^fit_scorer: "),
        (dict(fit_scorer=lambda chosen: 3.0), r"^fit_scorer: "),
        (dict(fit_scorer=lambda chosen: (lambda idx: np.ones(len(idx) + 1))), r"^loss_of: "),
        (dict(fit_scorer=lambda chosen: (lambda idx: -np.ones(len(idx)))), r"^loss_of: "),
    ],
)
def test_adaptive_sample_errors_name_the_input(kwargs, match):
    ids, sq, f = _small_clustered()
    args = dict(m=50, fit_scorer=_imperfect_model(f))
    args.update(kwargs)
    m, fit_scorer = args.pop("m"), args.pop("fit_scorer")
    with pytest.raises(ValueError, match=match):
        adaptive_sensitivity_sample(ids, sq, m, 0, fit_scorer, **args)


# --------------------------------------------------------------------------------------------
# (d) The claim: never much worse than uniform where the loss ignores the embedding, still
# clearly better where it follows the clusters
# --------------------------------------------------------------------------------------------


def _synthetic(data_seed: int, kind: str, n=3000, d=8, k=20):
    """As benchmarks/robust_sensitivity.py: Gaussian blobs with a log-normal radius (so the
    sensitivities are far from uniform); the loss either follows the clusters (per-blob level +
    0.2 d^2, +-20% noise) or is log-normal(0, 1) per example, independent of the embedding."""
    rng = np.random.default_rng(data_seed)
    centers = rng.normal(scale=10.0, size=(k, d))
    blob = rng.integers(k, size=n)
    radius = rng.lognormal(0.0, 0.75, size=n)
    x = (centers[blob] + radius[:, None] * rng.normal(size=(n, d))).astype(np.float32)
    ids, sq = assign_to_centroids(x, fit_kmeans(x, k, seed=data_seed).centroids)
    sq = sq.astype(np.float64)
    if kind == "follows":
        loss = (rng.uniform(0.5, 3.0, size=k)[blob] + 0.2 * sq) * rng.uniform(0.8, 1.2, n)
    else:
        loss = rng.lognormal(0.0, 1.0, size=n)
    return ids, sq, loss


def _ratios_to_uniform(kind, data_seeds=range(5), m=100, draws=300):
    """Per method, the mean over data sets of (median relative error / uniform's)."""
    out = {"plain": [], "defensive": [], "adaptive": []}
    for ds in data_seeds:
        ids, sq, loss = _synthetic(ds, kind)
        n, truth = loss.size, loss.sum()
        v = loss[nearest_members(ids, sq, int(ids.max()) + 1)]
        s = sensitivity_scores(v, ids, sq, balanced_lambda(v, ids, sq))
        p_plain, p_def = defensive_probabilities(s, 0.0), defensive_probabilities(s, DEFAULT_ALPHA)
        known = lambda chosen: (lambda idx: loss[np.asarray(idx)])  # noqa: E731  (the fixed model)

        def med(draw):
            return np.median([abs(draw(seed).estimate_sum(loss) - truth) / truth for seed in range(draws)])

        unif = med(lambda seed: sample_uniform(n, m, seed))
        out["plain"].append(med(lambda seed: sample_with_replacement(p_plain, m, seed)) / unif)
        out["defensive"].append(med(lambda seed: sample_with_replacement(p_def, m, seed)) / unif)
        out["adaptive"].append(med(lambda seed: adaptive_sensitivity_sample(ids, sq, m, seed, known)[0]) / unif)
    return {name: float(np.mean(r)) for name, r in out.items()}


def test_robust_sampling_is_not_worse_than_uniform_when_the_loss_ignores_the_embedding():
    # Measured with this helper (600 draws, 6 disjoint sets of 5 data seeds, 0-29): plain
    # sensitivity sampling 1.44-1.78x uniform's median error, the defensive mixture at
    # DEFAULT_ALPHA 1.07-1.17x, the adaptive sampler (defaults) 1.02-1.10x (max 1.095: the 1.1
    # bound holds on every set, narrowly). Per data set (10 seeds, 400 draws, the benchmark):
    # plain 1.33-2.16, defensive 0.96-1.26, adaptive 0.94-1.29.
    r = _ratios_to_uniform("independent", draws=600)
    assert r["plain"] > 1.3, r  # power: plain sensitivity sampling is measurably worse here
    assert r["adaptive"] < 1.1, r  # the adaptive sampler is within noise of uniform
    # The fixed mixture alone is NOT reliably within 1.1x here (these sensitivities are far from
    # uniform, and nothing tells it they are useless): it is bounded and removes most of plain's
    # excess error.
    assert r["defensive"] < 1.25, r
    assert r["defensive"] - 1 < 0.6 * (r["plain"] - 1), r


def test_robust_sampling_keeps_the_gain_when_the_loss_follows_the_clusters():
    # Measured (5 disjoint sets of 5 data seeds, 300 draws): plain 0.21-0.25x uniform's error,
    # defensive at DEFAULT_ALPHA 0.45-0.51x, adaptive 0.28-0.30x.
    r = _ratios_to_uniform("follows")
    assert r["plain"] < 0.35, r
    assert r["defensive"] < 0.65, r
    assert r["adaptive"] < 0.4, r
