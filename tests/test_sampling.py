"""Statistical tests of the weighted samplers and the budget checks.

The seeds are fixed, so every test is deterministic; the bounds are nevertheless chosen as if the
draws were fresh (4 standard errors: a false alarm about once in 16,000 runs), and each
unbiasedness test also computes a plausible *wrong* weighting from the same draws and asserts it
lands far outside the same tolerance, so the check has power against that mistake.
"""

from __future__ import annotations

import numpy as np
import pytest

from curation_assets.algorithms import sampling
from curation_assets.algorithms.estimation import relative_error, weighted_mean
from curation_assets.algorithms.sampling import (
    inclusion_probabilities,
    sample_by_sensitivity,
    sample_poisson,
    sample_uniform,
    sample_with_replacement,
)
from curation_assets.algorithms.validation import check_budget, resolve_budget

N_DRAWS = 2000
SEEDS = range(N_DRAWS)


def _design(seed: int = 12345, n: int = 2000):
    """Skewed probabilities with five heavy rows (m * p_i from ~1 to ~15 at m = 100) and a value f
    correlated with p but not proportional to it (so no weighting is accidentally exact)."""
    rng = np.random.default_rng(seed)
    s = rng.lognormal(0.0, 1.0, n)
    s[:5] *= 200.0
    f = s * rng.uniform(0.5, 1.5, n) + 0.5
    return s / s.sum(), f


@pytest.fixture(scope="module")
def design():
    return _design()


@pytest.fixture(scope="module")
def wr_draws(design):
    p, _ = design
    return [sample_with_replacement(p, 100, seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def poisson_draws(design):
    p, _ = design
    return {m: [sample_poisson(p, m, seed, weighting="hajek") for seed in SEEDS] for m in (100, 400)}


def _mean_se(x):
    x = np.asarray(x, dtype=np.float64)
    return x.mean(), x.std(ddof=1) / np.sqrt(x.size)


# --------------------------------------------------------------------------------------------
# With replacement: exactly unbiased, variance (1/m) (sum f^2/p - F^2)
# --------------------------------------------------------------------------------------------


def test_with_replacement_structure(design, wr_draws):
    p, _ = design
    heavy_repeats = 0
    for smp in wr_draws[:200]:
        assert smp.draws.sum() == 100
        assert np.all(np.diff(smp.indices) > 0)  # sorted, distinct
        assert smp.indices.dtype == np.int64
        np.testing.assert_allclose(smp.probabilities, p[smp.indices], rtol=1e-12)
        assert np.all(smp.weights > 0)
        heavy_repeats += int((smp.draws > 1).any())
    # Row 1 has m p ~ 15: repeated draws must be merged into counts, and they do occur.
    assert heavy_repeats == 200


def test_with_replacement_is_unbiased_and_wrong_weightings_are_not(design, wr_draws):
    p, f = design
    m, truth = 100, f.sum()
    est = np.array([smp.estimate_sum(f) for smp in wr_draws])
    mean, se = _mean_se(est)
    tol = 4 * se
    assert abs(mean - truth) < tol, (mean, truth, se)

    # Power: the same draws under mistaken weightings.
    no_m = np.array([np.dot(smp.draws / smp.probabilities, f[smp.indices]) for smp in wr_draws])
    no_counts = np.array([np.dot(1 / (m * smp.probabilities), f[smp.indices]) for smp in wr_draws])
    assert abs(no_m.mean() - truth) > 50 * tol  # 1/p without the m: off by a factor m
    assert abs(no_counts.mean() - truth) > 10 * tol  # repeats counted once: heavy rows lost

    # 1/(m p) weights applied to a uniform sample of the same size: biased because f ~ p.
    unif_wrong = []
    for seed in range(500):
        u = sample_uniform(p.size, m, seed)
        unif_wrong.append(np.dot(1 / (m * p[u.indices]), f[u.indices]))
    assert abs(np.mean(unif_wrong) - truth) > 10 * tol


def test_with_replacement_variance_matches_formula(design, wr_draws):
    p, f = design
    m, truth = 100, f.sum()
    est = np.array([smp.estimate_sum(f) for smp in wr_draws])
    var_formula = (np.sum(f**2 / p) - truth**2) / m
    ratio = est.var(ddof=1) / var_formula
    # The sample variance of 2000 draws of this (mildly heavy-tailed) estimator has a relative
    # standard error of ~5-6% (measured over disjoint seed blocks: ratios 0.91-1.10), so [0.8, 1.25]
    # is a ~4 SE band. Forgetting the 1/m, or the counts, moves the ratio by far more.
    assert 0.8 < ratio < 1.25, ratio


def test_with_replacement_weights_sum_to_n_on_average(design, wr_draws):
    p, _ = design
    n = p.size
    sums = np.array([smp.weights.sum() for smp in wr_draws])
    mean, se = _mean_se(sums)
    assert abs(mean - n) < 4 * se, (mean, n, se)
    # The predicted spread of sum(w) (the f = 1 case of the variance formula) matches too.
    sd_formula = np.sqrt((np.sum(1 / p) - n**2) / 100)
    assert 0.8 < sums.std(ddof=1) / sd_formula < 1.25


# --------------------------------------------------------------------------------------------
# Poisson: inclusion probabilities, E|S| = m, Hajek weights sum to n, bias O(1/m)
# --------------------------------------------------------------------------------------------


def test_poisson_expected_size_and_capped_rows(design, poisson_draws):
    p, _ = design
    for m, draws in poisson_draws.items():
        pi = inclusion_probabilities(p, m)
        sizes = np.array([smp.indices.size for smp in draws])
        se = np.sqrt(np.sum(pi * (1 - pi)) / len(draws))  # exact for independent inclusions
        assert abs(sizes.mean() - m) < 4 * se, (m, sizes.mean())
        capped = np.flatnonzero(pi == 1.0)
        assert capped.size >= 1  # the design makes the heaviest rows certain at m = 100
        for smp in draws[:200]:
            assert np.isin(capped, smp.indices).all()
            np.testing.assert_allclose(smp.probabilities, pi[smp.indices], rtol=1e-12)
            assert np.all(np.diff(smp.indices) > 0)
            assert np.all(smp.draws == 1)


def test_poisson_weights_sum_to_n_exactly(design, poisson_draws):
    n = design[0].size
    for draws in poisson_draws.values():
        sums = np.array([smp.weights.sum() for smp in draws])
        np.testing.assert_allclose(sums, n, rtol=1e-12)


def test_poisson_horvitz_thompson_from_reported_probabilities_is_unbiased(design, poisson_draws):
    """1/pi weights built from `probabilities` are exactly unbiased iff they are the true inclusion
    probabilities of the draw: this checks the draw and the reported pi together."""
    _, f = design
    truth = f.sum()
    for draws in poisson_draws.values():
        ht = np.array([np.dot(1 / smp.probabilities, f[smp.indices]) for smp in draws])
        mean, se = _mean_se(ht)
        assert abs(mean - truth) < 4 * se, (mean, truth, se)


@pytest.mark.parametrize("m", [100, 400])
def test_poisson_hajek_is_nearly_unbiased_and_wrong_weightings_are_not(design, poisson_draws, m):
    p, f = design
    n, truth = p.size, f.sum()
    draws = poisson_draws[m]
    est = np.array([smp.estimate_sum(f) for smp in draws])
    mean, se = _mean_se(est)

    # Hajek's estimate n * sum_S(f/pi) / sum_S(1/pi) is a ratio, biased at order 1/m. Its
    # first-order (delta-method) bias under independent inclusions is
    #   B1 = (1/n) * sum_i (1 - pi_i) / pi_i * (mean(f) - f_i).
    # Here B1 is ~1.8% of the total at m = 100 (about 7 standard errors of the mean of 2000
    # draws, so "|mean - truth| < 4 SE" would be false), and ~4x smaller at m = 400. We allow
    # 4 SE of noise plus B1, plus 25% of B1 for the neglected second-order terms (relative size
    # O(1/m)). This is tight enough to see that the bias is the Hajek one and O(1/m).
    pi = inclusion_probabilities(p, m)
    b1 = np.sum((1 - pi) / pi * (f.mean() - f)) / n
    assert abs(b1) < 3.0 / m * truth  # the bias really is O(1/m) on this design
    tol = 4 * se + 0.25 * abs(b1)
    assert abs(mean - truth - b1) < tol, (mean, truth, b1, se)
    assert abs(mean - truth) < 4 * se + 1.25 * abs(b1)

    # Power. (a) 1/(m p) instead of 1/pi, Hajek-normalised: the capped rows are under-weighted.
    wrong_mp = []
    # (b) every kept row weighted n/|S|: ignores that heavy rows were more likely to be kept.
    wrong_flat = []
    for smp in draws:
        w = 1 / (m * p[smp.indices])
        wrong_mp.append(n * np.dot(w, f[smp.indices]) / w.sum())
        wrong_flat.append(n * f[smp.indices].mean())
    assert abs(np.mean(wrong_mp) - truth) > 5 * tol
    assert abs(np.mean(wrong_flat) - truth) > 5 * tol


@pytest.mark.parametrize("m", [100, 400])
def test_poisson_ratio_weights_are_calibrated_nearly_unbiased_and_beat_hajek(design, poisson_draws, m):
    p, f = design
    truth = f.sum()
    ratio = [sample_poisson(p, m, seed, weighting="ratio") for seed in SEEDS]
    for smp, hajek in zip(ratio[:50], poisson_draws[m][:50]):
        np.testing.assert_array_equal(smp.indices, hajek.indices)  # same draws, other weights
        assert np.dot(smp.weights, p[smp.indices]) == pytest.approx(1.0, rel=1e-12)  # calibrated on p
    est = np.array([smp.estimate_sum(f) for smp in ratio])
    mean, se = _mean_se(est)
    # Ratio estimator F_hat = sum_S(f/pi) / sum_S(p/pi) (sum p = 1); delta-method bias
    #   B1 = sum_i (1 - pi_i)/pi_i * p_i * (F p_i - f_i),  O(1/m).
    pi = inclusion_probabilities(p, m)
    b1 = np.sum((1 - pi) / pi * p * (truth * p - f))
    assert abs(b1) < 3.0 / m * truth
    assert abs(mean - truth - b1) < 4 * se + 0.25 * abs(b1), (mean, truth, b1, se)
    # The point of it: f follows p here, so dividing out sum_S p/pi (not sum_S 1/pi) removes
    # most of the variance that the random subset size brings.
    hajek = np.array([smp.estimate_sum(f) for smp in poisson_draws[m]])
    assert est.var() < 0.5 * hajek.var(), (est.var(), hajek.var())
    # Power: 1/(m p) weights with no calibration ignore the capped rows' pi = 1 and are far off.
    wrong = [np.dot(1 / (m * p[smp.indices]), f[smp.indices]) for smp in ratio]
    assert abs(np.mean(wrong) - truth) > 5 * (4 * se + abs(b1))


# --------------------------------------------------------------------------------------------
# inclusion_probabilities against brute force
# --------------------------------------------------------------------------------------------


def _bisect_inclusion(p, m):
    """pi = min(1, c p) with sum(pi) = m, c found by plain bisection (sum is monotone in c)."""
    lo, hi = 0.0, m / p[p > 0].min()  # at hi every positive row is capped: sum >= m
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.minimum(1.0, mid * p).sum() < m:
            lo = mid
        else:
            hi = mid
    return np.minimum(1.0, hi * p)


def _random_p(rng, n):
    p = rng.lognormal(0.0, 1.5, n)
    heavy = rng.choice(n, size=rng.integers(0, max(1, n // 10) + 1), replace=False)
    p[heavy] *= rng.uniform(10, 1000, heavy.size)
    if rng.random() < 0.3:  # some rows with probability zero
        p[rng.choice(n, size=n // 5, replace=False)] = 0.0
    return p / p.sum()


@pytest.mark.parametrize("passes", [sampling.MAX_CAPPING_PASSES, 0], ids=["fixed-point", "water-filling fallback"])
def test_inclusion_probabilities_match_bisection_and_invariants(passes, monkeypatch):
    monkeypatch.setattr(sampling, "MAX_CAPPING_PASSES", passes)
    rng = np.random.default_rng(7)
    checked_capped = 0
    for _ in range(300):
        n = int(rng.integers(2, 400))
        p = _random_p(rng, n)
        m = int(rng.integers(1, np.count_nonzero(p) + 1))
        pi = inclusion_probabilities(p, m)
        assert pi.shape == p.shape
        assert abs(pi.sum() - m) < 1e-9 * max(1, m)
        pos = p > 0
        assert np.all(pi[~pos] == 0.0)
        assert np.all((pi[pos] > 0) & (pi[pos] <= 1.0))
        capped = pi == 1.0
        unc = pos & ~capped
        if unc.any():
            # Uncapped rows are proportional to p: one common ratio c.
            ratios = pi[unc] / p[unc]
            np.testing.assert_allclose(ratios, ratios[0], rtol=1e-10)
            # Every capped row is at least as heavy as every uncapped one, and c p >= 1 there.
            if capped.any():
                assert p[capped].min() >= p[unc].max()
                assert np.all(ratios[0] * p[capped] >= 1.0 - 1e-9)
        checked_capped += int(capped.any() and unc.any())
        np.testing.assert_allclose(pi, _bisect_inclusion(p, m), rtol=0, atol=1e-9)
    assert checked_capped > 50  # the random cases really exercised the capping


def test_inclusion_probabilities_edge_cases():
    n = 50
    u = np.full(n, 1.0 / n)
    np.testing.assert_allclose(inclusion_probabilities(u, n), 1.0)
    np.testing.assert_allclose(inclusion_probabilities(u, 10), 10 / n)
    # One row holding 90% of the mass at m = 5: capped, the rest share 4 in proportion.
    p = np.full(n, 0.1 / (n - 1))
    p[3] = 0.9
    pi = inclusion_probabilities(p, 5)
    assert pi[3] == 1.0
    np.testing.assert_allclose(np.delete(pi, 3), 4 / (n - 1))
    # min(1, m p) would lose expected size here; the water-filling keeps it.
    assert np.minimum(1.0, 5 * p).sum() < 4.9
    # Too few rows with non-zero probability for the budget.
    p0 = np.zeros(n)
    p0[:3] = 1 / 3
    with pytest.raises(ValueError, match="budget"):
        inclusion_probabilities(p0, 4)


# --------------------------------------------------------------------------------------------
# Seeds, uniform baseline, dispatch, input errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["with_replacement", "poisson", "poisson_hajek", "uniform"])
def test_same_seed_same_sample_different_seed_different_sample(design, method):
    p, _ = design

    def draw(seed):
        if method == "uniform":
            return sample_uniform(p.size, 100, seed)
        return sample_by_sensitivity(p, 100, seed, method)

    a, b, c = draw(11), draw(11), draw(12)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert not (a.indices.shape == c.indices.shape and np.array_equal(a.indices, c.indices))
    # Ten different seeds give ten different index sets.
    sets = {tuple(draw(s).indices) for s in range(100, 110)}
    assert len(sets) == 10


def test_dispatch_matches_direct_calls_and_rejects_unknown_method(design):
    p, _ = design
    for method, fn in [("with_replacement", sample_with_replacement),
                       ("poisson", lambda *a: sample_poisson(*a, weighting="ratio")),
                       ("poisson_hajek", lambda *a: sample_poisson(*a, weighting="hajek"))]:
        a, b = sample_by_sensitivity(p, 50, 3, method), fn(p, 50, 3)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.weights, b.weights)
    with pytest.raises(ValueError, match="sampling"):
        sample_by_sensitivity(p, 50, 3, "stratified")


def test_uniform_sample_is_unbiased_with_n_over_m_weights(design):
    _, f = design
    n, m = f.size, 100
    est = []
    for seed in range(N_DRAWS):
        u = sample_uniform(n, m, seed)
        assert u.indices.size == m and np.unique(u.indices).size == m
        est.append(u.estimate_sum(f))
    np.testing.assert_allclose(u.weights, n / m)
    mean, se = _mean_se(est)
    assert abs(mean - f.sum()) < 4 * se
    # Finite-population variance of a simple random sample: n^2 (1 - m/n) S^2 / m.
    var_formula = n**2 * (1 - m / n) * f.var(ddof=1) / m
    assert 0.8 < np.var(est, ddof=1) / var_formula < 1.25


def test_weighted_mean_and_relative_error(design, wr_draws):
    p, f = design
    smp = wr_draws[0]
    assert weighted_mean(f, smp.indices, smp.weights, p.size) == pytest.approx(
        smp.estimate_sum(f) / p.size, rel=1e-12
    )
    assert relative_error(110.0, 100.0) == pytest.approx(0.1)
    assert relative_error(90.0, -100.0) == pytest.approx(1.9)
    assert relative_error(0.25, 0.0) == 0.25


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([0.5, 0.6]), "probabilities"),  # does not sum to 1
        (np.array([1.5, -0.5]), "probabilities"),  # negative entry
        (np.array([np.nan, 1.0]), "probabilities"),
        (np.array([]), "probabilities"),
        (np.ones((2, 2)) / 4, "probabilities"),
    ],
)
def test_samplers_reject_bad_probabilities(bad, match):
    for fn in (sample_with_replacement, sample_poisson, inclusion_probabilities):
        with pytest.raises(ValueError, match=match):
            fn(bad, 1, 0) if fn is not inclusion_probabilities else fn(bad, 1)


def test_samplers_reject_bad_budgets(design):
    p, _ = design
    for m in (0, -3, p.size + 1, 2.5):
        with pytest.raises(ValueError, match="budget"):
            sample_with_replacement(p, m, 0)
        with pytest.raises(ValueError, match="budget"):
            sample_poisson(p, m, 0)
        with pytest.raises(ValueError, match="budget"):
            sample_uniform(p.size, m, 0)
    with pytest.raises(ValueError, match="n"):
        sample_uniform(0, 1, 0)


# --------------------------------------------------------------------------------------------
# validation.check_budget / resolve_budget
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "budget", [0, -1, 11, 2.5, True, float("nan"), float("inf"), "5", "abc", None]
)
def test_check_budget_rejects_with_the_name(budget):
    with pytest.raises(ValueError, match=r"^my_budget: "):
        check_budget(budget, 10, name="my_budget")


def test_check_budget_accepts_whole_numbers():
    assert check_budget(1, 10) == 1
    assert check_budget(10, 10) == 10
    assert check_budget(3.0, 10) == 3
    assert check_budget(np.int64(4), 10) == 4
    assert type(check_budget(np.int64(4), 10)) is int


@pytest.mark.parametrize(
    "fraction", [0.0, -0.1, 1.5, float("nan"), float("inf"), "0.5", True]
)
def test_resolve_budget_rejects_bad_fractions_with_the_name(fraction):
    with pytest.raises(ValueError, match=r"^budget_fraction: "):
        resolve_budget(100, None, fraction)


def test_resolve_budget_rules():
    assert resolve_budget(100, 7, 0.5) == 7  # an explicit count wins
    assert resolve_budget(100, None, 0.25) == 25
    assert resolve_budget(1000, None, 0.0333) == 33  # round, not floor or ceil
    assert resolve_budget(1000, None, 0.0337) == 34
    assert resolve_budget(100, None, 1e-6) == 1  # at least one example
    assert resolve_budget(100, None, 1.0) == 100
    with pytest.raises(ValueError, match=r"^budget: "):
        resolve_budget(100, None, None)
    with pytest.raises(ValueError, match=r"^budget: "):
        resolve_budget(100, 101, None)
    with pytest.raises(ValueError, match=r"^budget: "):
        resolve_budget(100, 0, 0.5)
