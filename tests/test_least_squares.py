"""Least squares by row sampling: leverage scores, weighted solves, sensitivity sampling, errors."""

from __future__ import annotations

import numpy as np
import pytest

from curation_assets.algorithms.least_squares import (
    leverage_probabilities,
    leverage_scores,
    relative_excess_residual,
    sample_rows,
    sensitivity_regression,
    sensitivity_regression_probabilities,
    solve_full,
    solve_weighted,
    uniform_probabilities,
)
from curation_assets.algorithms.sampling import WeightedSample
from curation_assets.algorithms.sensitivity import balanced_lambda


def _hat_diagonal(A):
    """Brute force: diag(A (A^T A)^+ A^T)."""
    return np.diag(A @ np.linalg.pinv(A.T @ A) @ A.T)


def _problem(seed=0, n=400, d=5):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d))
    return A, A @ rng.normal(size=d) + rng.normal(size=n)


def _high_leverage(seed, n=5000, d=10, frac=0.005, scale=50.0):
    """0.5% of the rows scaled by 50: they hold most of A^T A, uniform sampling rarely sees them."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d))
    A[rng.choice(n, size=int(frac * n), replace=False)] *= scale
    return A, A @ rng.normal(size=d) + rng.normal(size=n)


# --------------------------------------------------------------------------------------------
# Leverage scores
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(30, 4), (200, 7), (12, 12)])
def test_leverage_scores_are_the_hat_matrix_diagonal_and_sum_to_the_rank(shape):
    A = np.random.default_rng(1).normal(size=shape)
    h = leverage_scores(A)
    np.testing.assert_allclose(h, _hat_diagonal(A), atol=1e-10)
    assert h.sum() == pytest.approx(shape[1])
    assert ((h >= -1e-12) & (h <= 1 + 1e-12)).all()
    np.testing.assert_allclose(leverage_probabilities(A), h / shape[1])


def test_leverage_scores_of_a_rank_deficient_matrix_sum_to_its_rank():
    rng = np.random.default_rng(2)
    B = rng.normal(size=(50, 3))
    A = np.column_stack([B, B[:, 0] + 2 * B[:, 1], B[:, 2]])  # 5 columns, rank 3
    h = leverage_scores(A)
    assert h.sum() == pytest.approx(3.0)
    np.testing.assert_allclose(h, _hat_diagonal(A), atol=1e-10)


def test_leverage_scores_single_out_the_scaled_rows():
    A, _ = _high_leverage(0)
    h = leverage_scores(A)
    top = np.argsort(h)[-25:]
    assert (np.abs(A[top]).max(axis=1) > 20).all()
    assert h[top].sum() > 0.8 * h.sum()


# --------------------------------------------------------------------------------------------
# Sampling and solving
# --------------------------------------------------------------------------------------------


def test_solve_weighted_with_every_row_and_unit_weights_is_lstsq():
    A, b = _problem()
    n = A.shape[0]
    everything = WeightedSample(np.arange(n), np.ones(n), np.full(n, 1.0 / n), np.ones(n, dtype=np.int64))
    np.testing.assert_allclose(solve_weighted(A, b, everything), np.linalg.lstsq(A, b, rcond=None)[0], atol=1e-10)
    np.testing.assert_allclose(solve_full(A, b), np.linalg.lstsq(A, b, rcond=None)[0], atol=1e-10)


def test_solve_weighted_rescales_rows_by_the_square_root_of_their_weight():
    A, b = _problem(n=60, d=3)
    sample = sample_rows(leverage_probabilities(A), 40, seed=3, n_columns=3)
    # Stacking each draw as its own row scaled by 1/sqrt(m p_i) is the same problem.
    rows = np.repeat(sample.indices, sample.draws)
    scale = 1.0 / np.sqrt(40 * np.repeat(sample.probabilities, sample.draws))
    expected = np.linalg.lstsq(A[rows] * scale[:, None], b[rows] * scale, rcond=None)[0]
    np.testing.assert_allclose(solve_weighted(A, b, sample), expected, atol=1e-10)
    assert sample.draws.sum() == 40


def test_relative_excess_residual_is_zero_at_the_optimum_and_positive_elsewhere():
    A, b = _problem()
    x = solve_full(A, b)
    assert relative_excess_residual(A, b, x, x) == pytest.approx(0.0, abs=1e-12)
    assert relative_excess_residual(A, b, x + 0.1, x) > 0


def test_uniform_probabilities():
    p = uniform_probabilities(7)
    assert p.shape == (7,) and p.sum() == pytest.approx(1.0) and np.ptp(p) == 0


# --------------------------------------------------------------------------------------------
# Sensitivity sampling
# --------------------------------------------------------------------------------------------


def test_sensitivity_regression_computes_what_it_documents():
    A, b = _problem(n=600, d=4)
    r = sensitivity_regression(A, b, 12, seed=5, proxy_size=40)
    k = 12
    # proxy: lstsq on the pilot
    np.testing.assert_allclose(r.proxy_x, np.linalg.lstsq(A[r.pilot_indices], b[r.pilot_indices], rcond=None)[0])
    # v_j: proxy residual^2 at the member nearest each centroid
    reps = r.representatives
    assert reps.shape == (k,) and (reps >= 0).all()
    for j in range(k):
        members = np.flatnonzero(r.cluster_ids == j)
        assert reps[j] in members and r.sq_dist[reps[j]] == r.sq_dist[members].min()
    np.testing.assert_allclose(r.cluster_losses, (A[reps] @ r.proxy_x - b[reps]) ** 2)
    # s = v_a(i) + lambda d_i^2 with the balanced lambda
    assert r.lam == pytest.approx(balanced_lambda(r.cluster_losses, r.cluster_ids, r.sq_dist, 2.0))
    np.testing.assert_allclose(r.sensitivities, r.cluster_losses[r.cluster_ids] + r.lam * r.sq_dist)
    np.testing.assert_allclose(r.probabilities, r.sensitivities / r.sensitivities.sum())
    assert (r.probabilities > 0).all()
    # what it looked at: pilot U representatives
    np.testing.assert_array_equal(r.rows_looked_at, np.union1d(r.pilot_indices, reps))
    assert r.n_inferences <= 40 + k
    # seeded
    np.testing.assert_array_equal(
        sensitivity_regression_probabilities(A, b, 12, 5, proxy_size=40), r.probabilities
    )


def test_sensitivity_regression_on_noiseless_labels_still_gives_probabilities():
    A, _ = _problem(n=300, d=3)
    b = A @ np.array([1.0, -2.0, 0.5])
    p = sensitivity_regression_probabilities(A, b, 10, 0)
    assert (p > 0).all() and p.sum() == pytest.approx(1.0)
    x = solve_weighted(A, b, sample_rows(p, 10, 0, n_columns=3))
    np.testing.assert_allclose(x, [1.0, -2.0, 0.5], atol=1e-8)


@pytest.mark.parametrize("data_seed", [0, 2])
def test_leverage_and_sensitivity_both_beat_uniform_on_a_high_leverage_design(data_seed):
    """The paper's regression claim, on the design where uniform sampling fails.

    Measured with this exact code before fixing the threshold (data seeds 0-9): uniform's median
    excess residual was 6.9-11.8x sensitivity's and 9.2-20.9x leverage's; data seed 2 is the
    closest for sensitivity. Asserted: more than 3x for both.
    """
    A, b = _high_leverage(data_seed)
    n, d = A.shape
    m = 5 * d
    x_star = solve_full(A, b)
    p_lev = leverage_probabilities(A)
    p_uni = uniform_probabilities(n)

    def excess(p, seed):
        return relative_excess_residual(A, b, solve_weighted(A, b, sample_rows(p, m, seed, n_columns=d)), x_star)

    uni = np.median([excess(p_uni, s) for s in range(20)])
    lev = np.median([excess(p_lev, s) for s in range(20)])
    sens = np.median([excess(sensitivity_regression_probabilities(A, b, None, s), s) for s in range(20)])
    assert uni > 3 * lev, (uni, lev)
    assert uni > 3 * sens, (uni, sens)


# --------------------------------------------------------------------------------------------
# Errors name the input
# --------------------------------------------------------------------------------------------


def test_errors_name_the_bad_input():
    A, b = _problem(n=100, d=4)
    x = solve_full(A, b)
    with pytest.raises(ValueError, match=r"^b: has 99 entries but A has 100 rows"):
        sensitivity_regression(A, b[:-1], 5)
    with pytest.raises(ValueError, match=r"^A: expected a 2-d array"):
        leverage_scores(b)
    bad = A.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"^A: 1 row\(s\) contain NaN or infinite values \(first at row 7\)"):
        leverage_scores(bad)
    bad_b = b.copy()
    bad_b[3] = np.inf
    with pytest.raises(ValueError, match=r"^b: 1 entr\(ies\) are NaN or infinite \(first at row 3\)"):
        solve_full(A, bad_b)
    with pytest.raises(ValueError, match=r"^m: 3 rows cannot determine 4 unknowns"):
        sample_rows(uniform_probabilities(100), 3, 0, n_columns=4)
    with pytest.raises(ValueError, match=r"^sample: 3 draw\(s\) cannot determine the 4 unknowns"):
        solve_weighted(A, b, sample_rows(uniform_probabilities(100), 3, 0))
    with pytest.raises(ValueError, match=r"^proxy_size: 3 pilot rows cannot fit the 4 unknowns"):
        sensitivity_regression(A, b, 5, proxy_size=3)
    with pytest.raises(ValueError, match=r"^n_clusters: 101 clusters is more than the 100 rows"):
        sensitivity_regression(A, b, 101)
    with pytest.raises(ValueError, match=r"^features: must be one of"):
        sensitivity_regression(A, b, 5, features="b")
    with pytest.raises(ValueError, match=r"^x_tilde: expected a vector of length 4"):
        relative_excess_residual(A, b, x[:3], x)
    with pytest.raises(ValueError, match=r"^x_star: fits b exactly"):
        relative_excess_residual(A, A @ x, x, x)
    with pytest.raises(ValueError, match=r"^probabilities: must sum to 1"):
        sample_rows(np.ones(100), 10, 0)
    with pytest.raises(ValueError, match=r"^n: must be at least 1"):
        uniform_probabilities(0)


def test_sketched_whitening_gives_leverage_as_row_norms():
    """Exact when the sketch keeps every row; a CountSketch of 4 d^2 rows stays within a factor
    of ~1.5 of every leverage score (an unwhitened A is off by orders of magnitude)."""
    from curation_assets.algorithms.least_squares import leverage_scores, sketched_whitening

    rng = np.random.default_rng(0)
    A = rng.normal(size=(5000, 6)) * np.array([1, 10, 100, 1, 1, 0.01])
    A[:25] *= 30  # a few high-leverage rows
    lev = leverage_scores(A)
    np.testing.assert_allclose((sketched_whitening(A, 0, rows=5000) ** 2).sum(1), lev, rtol=1e-8, atol=1e-12)
    approx = (sketched_whitening(A, 0) ** 2).sum(1)
    assert np.max(np.maximum(approx / lev, lev / approx)) < 1.6
    assert np.max(np.maximum((A ** 2).sum(1) / lev, lev / (A ** 2).sum(1))) > 100
    with pytest.raises(ValueError, match="collinear"):
        sketched_whitening(np.column_stack([A[:, 0], A[:, 0]]), 0)
    r = sensitivity_regression(A, A @ np.ones(6) + rng.normal(size=5000), 20, 0, features="whitened")
    assert r.features == "whitened" and np.isclose(r.probabilities.sum(), 1.0)
