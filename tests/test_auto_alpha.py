"""alpha chosen on the labelled pilot: the statistical claim behind replacing the fixed alpha.

The procedure under test, as the pipeline runs it: a uniform pilot of default_pilot_size(n) =
max(100, 5% of n) rows, labelled outside the budget; alpha = pilot_alpha on the pilot's losses
(choose_alpha: uniform, alpha = 1, unless the pilot shows the sensitivities help); then m draws
with replacement from defensive_probabilities(s, alpha), each weighing 1/(m p_i).

Data: the synthetic design of test_robust_sensitivity.py (n = 3000 Gaussian blobs with a log-normal
radius, k = 20 from fit_kmeans; the loss follows the clusters, or is log-normal and independent of
the embedding), sensitivities from the known loss at each cluster's nearest member and the balanced
lambda, m = 100 (as there). Error: median over replicates of |estimate - sum| / sum, as a multiple
of uniform sampling's (sample_uniform, without replacement: the pipeline's uniform_subset).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from test_robust_sensitivity import _synthetic

from curation_assets.algorithms.representatives import nearest_members
from curation_assets.algorithms.robust_sensitivity import (
    DEFAULT_ALPHA,
    choose_alpha,
    defensive_probabilities,
    pilot_alpha,
)
from curation_assets.algorithms.sampling import sample_uniform, sample_with_replacement
from curation_assets.algorithms.sensitivity import balanced_lambda, sensitivity_scores
from curation_assets.algorithms.scorers import default_pilot_size

M = 100


@lru_cache(maxsize=None)
def _data(data_seed: int, kind: str):
    """(loss, sensitivities) for one synthetic data set; cached across the tests of this file."""
    ids, sq, loss = _synthetic(data_seed, kind)
    v = loss[nearest_members(ids, sq, int(ids.max()) + 1)]
    return loss, sensitivity_scores(v, ids, sq, balanced_lambda(v, ids, sq))


def _exact(loss):
    """The pilot sees the losses themselves (a known model)."""
    return lambda idx, rng: loss[idx]


def _noisy(loss):
    """Out-of-fold-like pilot losses: loss + N(0, sd of the pilot's losses), folded at 0."""
    return lambda idx, rng: np.abs(loss[idx] + rng.normal(0.0, loss[idx].std(), idx.size))


def _pilot(n: int, seed: int):
    rng = np.random.default_rng([seed, 1])  # its own stream: independent of the draws (seed)
    return rng.choice(n, default_pilot_size(n), replace=False), rng


def _auto_alpha_sample(s, observe, m: int, seed: int):
    """One run of the procedure: uniform pilot -> alpha on its observed losses -> m draws."""
    pilot, rng = _pilot(s.size, seed)
    alpha = pilot_alpha(pilot, observe(pilot, rng), s)
    return sample_with_replacement(defensive_probabilities(s, alpha), m, seed), alpha


def _ratios(kind: str, data_seeds, draws: int, noisy: bool = False):
    """Per data set, median relative error / uniform's for: the auto-alpha procedure (exact pilot
    losses, and noisy ones when asked) and plain sensitivity sampling (fixed alpha = 0)."""
    out = {"auto": [], "plain": [], "auto_noisy": []}
    for ds in data_seeds:
        loss, s = _data(ds, kind)
        truth = loss.sum()

        def med(draw):
            return np.median([abs(draw(seed).estimate_sum(loss) - truth) / truth for seed in range(draws)])

        unif = med(lambda seed: sample_uniform(loss.size, M, seed))
        p_plain = defensive_probabilities(s, 0.0)
        out["plain"].append(med(lambda seed: sample_with_replacement(p_plain, M, seed)) / unif)
        out["auto"].append(med(lambda seed: _auto_alpha_sample(s, _exact(loss), M, seed)[0]) / unif)
        if noisy:
            out["auto_noisy"].append(med(lambda seed: _auto_alpha_sample(s, _noisy(loss), M, seed)[0]) / unif)
    return {name: np.array(r) for name, r in out.items() if r}


# --------------------------------------------------------------------------------------------
# pilot_alpha
# --------------------------------------------------------------------------------------------


def test_pilot_alpha_is_choose_alpha_on_the_pilot_rows():
    loss, s = _data(0, "follows")
    for seed in range(5):
        pilot, _ = _pilot(s.size, seed)
        assert pilot_alpha(pilot, loss[pilot], s) == choose_alpha(loss[pilot], s[pilot], s)
    assert pilot_alpha(pilot, loss[pilot], s, grid=(0.5,), caution=0.0) == 0.5
    assert pilot_alpha(np.array([], dtype=np.int64), np.array([]), s) == 1.0  # no pilot: uniform


@pytest.mark.parametrize(
    "idx, losses, s, match",
    [
        (np.array([0, 1]), np.ones(2), np.ones((2, 2)), r"^sensitivities: "),
        (np.array([0, 1]), np.ones(2), np.array([1.0, np.nan, 1.0]), r"^sensitivities: "),
        (np.array([0, 1]), np.ones(2), np.array([1.0, -1.0, 1.0]), r"^sensitivities: "),
        (np.array([0.0, 1.0]), np.ones(2), np.ones(3), r"^pilot_indices: "),
        (np.array([0, 3]), np.ones(2), np.ones(3), r"^pilot_indices: "),
        (np.array([-1, 0]), np.ones(2), np.ones(3), r"^pilot_indices: "),
        (np.array([1, 1]), np.ones(2), np.ones(3), r"^pilot_indices: "),
        (np.array([0, 1]), np.ones(3), np.ones(3), r"^pilot_losses: "),
        (np.array([0, 1]), np.array([1.0, np.inf]), np.ones(3), r"^pilot_losses: "),
        (np.array([0, 1]), np.array([1.0, -0.5]), np.ones(3), r"^pilot_losses: "),
    ],
)
def test_pilot_alpha_errors_name_the_input(idx, losses, s, match):
    with pytest.raises(ValueError, match=match):
        pilot_alpha(idx, losses, s)


# --------------------------------------------------------------------------------------------
# The claim
# --------------------------------------------------------------------------------------------


def test_auto_alpha_is_no_worse_than_uniform_where_the_loss_ignores_the_embedding():
    """Measured with this helper on data seeds 0-49 (1000 draws each), as multiples of uniform's
    median error: per data set auto 0.91-1.13 (median 1.03), noisy pilot 0.91-1.13, plain
    (alpha = 0) 1.29-1.99; the mean over each of 10 disjoint 5-seed sets: auto 0.99-1.06, noisy
    pilot 0.99-1.06, plain 1.50-1.75. The pilot picks alpha = 1 (uniform) in ~95% of runs.
    Part of auto's excess over 1 is drawing with replacement: uniform WITH replacement is
    sqrt((n-1)/(n-m)) = 1.017x uniform's here (1.054x at m = 10% of n, where auto measures
    1.01-1.09 per 5-seed set, and 0.98-1.03 per data set against uniform with replacement)."""
    r = _ratios("independent", range(5), draws=1000, noisy=True)
    assert r["auto"].mean() <= 1.10 and r["auto"].max() <= 1.25, r
    assert r["auto_noisy"].mean() <= 1.10 and r["auto_noisy"].max() <= 1.25, r
    # Power: the same harness sees plain sensitivity sampling's excess error.
    assert r["plain"].mean() >= 1.3 and r["plain"].min() >= 1.1, r


def test_auto_alpha_keeps_the_gain_where_the_loss_follows_the_clusters():
    """Measured on data seeds 0-49 (300 draws each): per data set auto 0.19-0.32x uniform's
    median error (plain 0.15-0.31x), per 5-seed set 0.23-0.28 (plain 0.21-0.25); the pilot
    picks 0.1, the smallest alpha on the grid, every time."""
    r = _ratios("follows", range(5), draws=300)
    assert r["auto"].max() <= 0.45 and r["auto"].mean() <= 0.35, r
    assert r["plain"].max() <= 0.45, r


# --------------------------------------------------------------------------------------------
# Unbiased given the pilot
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["independent", "follows"])
def test_auto_alpha_estimate_is_unbiased_given_the_pilot(kind):
    """The pilot is drawn from its own stream, so given the pilot (hence alpha) the m draws are
    plain importance sampling from a fixed p: exactly unbiased. Checked for a pilot that chose
    alpha < 1 and over fresh pilots; weights from the wrong alpha are caught (the test's power)."""
    loss, s = _data(0, kind)
    truth, seeds = loss.sum(), 4000
    # A pilot whose choice is not uniform (for "independent" about 1 in 20 pilots).
    pilot_seed = next(ps for ps in range(200) if _auto_alpha_sample(s, _exact(loss), M, ps)[1] < 1.0)
    _, alpha = _auto_alpha_sample(s, _exact(loss), M, pilot_seed)
    p = defensive_probabilities(s, alpha)
    est = np.array([sample_with_replacement(p, M, 10_000 + seed).estimate_sum(loss) for seed in range(seeds)])
    se = est.std(ddof=1) / np.sqrt(seeds)
    assert abs(est.mean() - truth) < 4 * se, (alpha, est.mean(), truth, se)
    fresh = np.array([_auto_alpha_sample(s, _exact(loss), M, seed)[0].estimate_sum(loss) for seed in range(seeds)])
    se_fresh = fresh.std(ddof=1) / np.sqrt(seeds)
    assert abs(fresh.mean() - truth) < 4 * se_fresh, (fresh.mean(), truth, se_fresh)
    if kind == "follows":  # drawn with the chosen alpha, weighted as if alpha were DEFAULT_ALPHA
        assert alpha < DEFAULT_ALPHA
        q = defensive_probabilities(s, DEFAULT_ALPHA)
        wrong = np.empty(seeds)
        for seed in range(seeds):
            smp = sample_with_replacement(p, M, 10_000 + seed)
            wrong[seed] = np.dot(smp.draws / (M * q[smp.indices]), loss[smp.indices])
        assert abs(wrong.mean() - truth) > 10 * wrong.std(ddof=1) / np.sqrt(seeds), (wrong.mean(), truth)
