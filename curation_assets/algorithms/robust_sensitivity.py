"""Sensitivity sampling that stays safe where its assumption fails.

Plain sensitivity sampling (sensitivity.py) wins when the loss is smooth in the embedding and can
lose to uniform sampling when it is not (a loss unrelated to the clusters turns p into noise, and
rows with a small p_i get huge weights). Four additions, all pure numpy:

1. `defensive_probabilities`: p = alpha/n + (1 - alpha) s/sum(s), so no row is ever much rarer
   than under uniform sampling.
2. `holder_lambda` / `fraction_bounded`: lambda read off a pilot sample as the smallest constant
   with |l_i - v_a(i)| <= lambda d_i^z for a given fraction of the pilot.
3. `nearest_members_per_cluster` / `representatives_per_cluster`: v_j as the mean loss over the r
   members nearest each centroid when the budget allows r > 1.
4. `adaptive_sensitivity_sample`: a uniform pilot, a model fit on it, then (defensive) sensitivity
   sampling of the rest of the budget from the examples not yet chosen, with lambda and alpha
   read off the pilot (`choose_alpha` falls back to uniform when the sensitivities do not
   predict the pilot's losses) and weights that keep the estimate of any full-data sum exactly
   unbiased.

Measurements behind the defaults: benchmarks/robust_sensitivity.py and
benchmarks/results/robust_sensitivity.txt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .representatives import cluster_sizes as _cluster_sizes
from .representatives import nearest_members_per_cluster
from .sampling import WeightedSample
from .scorers import check_losses
from .sensitivity import balanced_lambda, check_sq_dist, check_z, distance_term
from .validation import check_budget, check_fraction

# Chosen from the sweep in benchmarks/robust_sensitivity.py (results/robust_sensitivity.txt): see
# the note in `defensive_probabilities`.
DEFAULT_ALPHA = 0.5
# alpha="auto" in adaptive_sensitivity_sample picks from this grid on the pilot (1.0 = uniform).
ALPHA_GRID = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
AUTO_ALPHA_CAUTION = 1.0


# --------------------------------------------------------------------------------------------
# 1. Defensive mixture
# --------------------------------------------------------------------------------------------


def defensive_probabilities(sensitivities, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """p_i = alpha/n + (1 - alpha) s_i / sum(s): a mixture of uniform and sensitivity sampling.

    Why it is safe. For m i.i.d. draws weighted 1/(m p_i), the estimate of F = sum_i f_i has
    variance Var_p = (1/m) (sum_i f_i^2/p_i - F^2). Since p_i >= alpha/n for every i,

        sum_i f_i^2 / p_i  <=  (n/alpha) sum_i f_i^2,

    i.e. the second moment is at most 1/alpha times uniform sampling's (n sum f^2; Var_unif here
    is uniform sampling WITH replacement), whatever the sensitivities are and however badly they predict f. In terms of
    the variance this reads Var_p <= Var_unif/alpha + ((1 - alpha)/alpha) F^2/m: not "at most
    1/alpha times uniform's variance" exactly (for a constant f uniform has variance 0 and every
    non-uniform p has some), but bounded, where alpha = 0 is not bounded at all (a row with
    s_i -> 0 and f_i > 0 makes Var_p unbounded). And because 1/x is convex, per row
    1/p_i <= alpha n + (1 - alpha)/q_i (q = s/sum(s)); multiply by f_i^2, sum, subtract F^2:

        Var_p <= alpha Var_unif + (1 - alpha) Var_q,

    the mixture is never worse than the same mixture of the two variances: when sensitivity
    sampling is good (Var_q << Var_unif) the mixture keeps most of the gain.

    The default alpha = 0.5 is measured (benchmarks/results/robust_sensitivity.txt; alpha in
    {0, .1, .2, .3, .4, .5, .7, 1}, median error as a multiple of uniform's). Among the alphas
    that keep at least half of plain sensitivity sampling's gain where the loss follows the
    clusters (BBC topic probe at 5%/10%: 0.77/0.80 at alpha=0, 0.88/0.85 at 0.5; synthetic
    0.21 -> 0.46), it has the smallest worst case where the loss ignores the embedding: 1.24
    (synthetic log-normal losses; plain 1.54-1.76; BBC sentiment-lexicon and random-label
    probes 0.96-1.17, plain 1.07-1.26). alpha = 0.2 keeps all of the BBC gain (0.76/0.81) but
    leaves 1.42 there. No fixed alpha < 1 is within 1.1x of uniform on every such loss: a
    fixed mixture cannot know that its sensitivities are useless. adaptive_sensitivity_sample
    with alpha="auto" measures that on its pilot.

    sensitivities: finite and >= 0, with a positive sum; zeros are allowed when alpha > 0 (those
    rows keep probability alpha/n). alpha: in [0, 1]; 0 is plain sensitivity sampling, 1 uniform.
    """
    alpha = check_fraction(alpha, "alpha", low_open=False, high_open=False)
    s = np.asarray(sensitivities, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"sensitivities: expected a non-empty 1-d array, got shape {s.shape}")
    if not np.isfinite(s).all() or (s < 0).any():
        raise ValueError("sensitivities: every value must be finite and >= 0")
    total = s.sum()
    n = s.size
    if total <= 0:
        if alpha < 1:
            raise ValueError("sensitivities: all zero; use alpha = 1 (uniform) or positive sensitivities")
        return np.full(n, 1.0 / n)
    p = alpha / n + (1.0 - alpha) * (s / total)
    if (p <= 0).any():
        raise ValueError(
            f"sensitivities: {(p <= 0).sum()} example(s) have zero sensitivity and alpha = 0: they "
            "could never be sampled; use alpha > 0"
        )
    return p / p.sum()


# --------------------------------------------------------------------------------------------
# 2. lambda from a pilot
# --------------------------------------------------------------------------------------------


def _pilot_arrays(pilot_losses, pilot_rep_losses, pilot_sq_dist, z):
    l = np.asarray(pilot_losses, dtype=np.float64)
    v = np.asarray(pilot_rep_losses, dtype=np.float64)
    if l.ndim != 1:
        raise ValueError(f"pilot_losses: expected a 1-d array, got shape {l.shape}")
    if v.shape != l.shape:
        raise ValueError(f"pilot_rep_losses: expected shape {l.shape} (one per pilot point), got {v.shape}")
    if not np.isfinite(l).all() or not np.isfinite(v).all():
        raise ValueError("pilot_losses / pilot_rep_losses: must be finite")
    sq = check_sq_dist(pilot_sq_dist, l)
    dz = distance_term(sq, check_z(z))
    return np.abs(l - v), dz


def holder_lambda(pilot_losses, pilot_rep_losses, pilot_sq_dist, z: float = 2.0,
                  quantile: float = 0.9) -> float:
    """The smallest lambda with |l_i - v_a(i)| <= lambda * d_i^z for `quantile` of the pilot.

    The pilot's empirical Holder constant of the loss around its cluster's representative value,
    ignoring the worst (1 - quantile) of the points (one outlier should not flatten p).

    Points with d_i = 0 carry no information about lambda (the distance term is 0 there whatever
    lambda is) and are left out: the fraction is taken over the pilot points with d_i > 0, so
    fraction_bounded (over all points) can be lower when some points sit exactly on their
    centroid with a loss different from v. Among the others, with ratios r_i = |l_i - v_a(i)| /
    d_i^z sorted increasingly, lambda = r_(ceil(quantile * N)), the smallest value that bounds
    at least quantile * N of them.

    Fallbacks: returns 0.0 when every residual (among the needed quantile) is zero, which is the
    right constant (the loss equals the representative's on those points, the distance term is
    not needed), and 0.0 when no pilot point has d > 0 (lambda is not identified; the distance
    term vanishes at every pilot point). Callers that need a positive distance term then fall
    back on their own default (balanced_lambda in sensitivity.py); with alpha > 0 the defensive
    mixture keeps every probability positive anyway.
    """
    quantile = check_fraction(quantile, "quantile", low_open=True, high_open=False)
    res, dz = _pilot_arrays(pilot_losses, pilot_rep_losses, pilot_sq_dist, z)
    keep = dz > 0
    if not keep.any():
        return 0.0
    ratios = np.sort(res[keep] / dz[keep])
    rank = int(np.ceil(quantile * ratios.size - 1e-9))  # 1-based rank of the bounding point
    return float(ratios[max(rank, 1) - 1])


def fraction_bounded(pilot_losses, pilot_rep_losses, pilot_sq_dist, lam: float, z: float = 2.0) -> float:
    """Fraction of the pilot with |l_i - v_a(i)| <= lam * d_i^z (all points, d = 0 included:
    such a point counts as bounded only when its residual is 0). A relative slack of 1e-12
    absorbs the rounding of lam * d^z."""
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam: must be a finite number >= 0, got {lam!r}")
    res, dz = _pilot_arrays(pilot_losses, pilot_rep_losses, pilot_sq_dist, z)
    if res.size == 0:
        return float("nan")
    return float(np.mean(res <= lam * dz * (1.0 + 1e-12)))


# --------------------------------------------------------------------------------------------
# 3. Several representatives per cluster
# --------------------------------------------------------------------------------------------


def representatives_per_cluster(budget_for_representatives: int, n_clusters: int, cluster_sizes) -> int:
    """r = max(1, floor(budget / k)), capped at the largest cluster's size.

    Every cluster j then gets min(r, size_j) representatives (nearest_members_per_cluster), so the
    inferences spent on representatives are at most k * r, and at most the budget whenever the
    budget is at least k (with a budget below k every cluster still gets its one representative:
    the method cannot work with fewer).
    """
    if isinstance(n_clusters, bool) or int(n_clusters) != n_clusters or n_clusters < 1:
        raise ValueError(f"n_clusters: must be a positive whole number, got {n_clusters!r}")
    if (isinstance(budget_for_representatives, bool) or int(budget_for_representatives) != budget_for_representatives
            or budget_for_representatives < 0):
        raise ValueError(
            f"budget_for_representatives: must be a whole number >= 0, got {budget_for_representatives!r}")
    sizes = np.asarray(cluster_sizes, dtype=np.int64)
    if sizes.shape != (int(n_clusters),) or (sizes < 0).any():
        raise ValueError(f"cluster_sizes: expected {int(n_clusters)} counts >= 0, got shape {sizes.shape}")
    r = max(1, int(budget_for_representatives) // int(n_clusters))
    return int(max(1, min(r, int(sizes.max()) if sizes.size else 1)))


def cluster_losses_from_members(members: np.ndarray, loss_of: Callable) -> tuple[np.ndarray, int]:
    """v_j = mean loss over cluster j's representatives (0 for an empty cluster, which no example
    uses); returns (v, number of inferences made)."""
    members = np.asarray(members, dtype=np.int64)
    present = members >= 0
    flat = members[present]
    losses = check_losses(loss_of(flat), flat.size, name="loss_of")
    sums = np.zeros(members.shape[0])
    np.add.at(sums, np.nonzero(present)[0], losses)
    counts = present.sum(axis=1)
    v = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return v, int(flat.size)


def choose_alpha(pilot_losses, pilot_sensitivities, population_sensitivities,
                 grid: Sequence[float] = ALPHA_GRID, caution: float = AUTO_ALPHA_CAUTION) -> float:
    """The alpha in `grid` with the smallest pessimistic estimate of the with-replacement variance.

    m Var_p = sum_i l_i^2/p_i - F^2 over the population of N rows, and F does not depend on
    alpha. For a uniform pilot, t_i(alpha) = l_i^2 / (N p_i(alpha)) averages to (1/N^2) sum
    l^2/p, with p_i(alpha) = alpha/N + (1 - alpha) s_i/sum(population s); alpha = 1 (uniform)
    gives t_i = l_i^2. Each alpha is scored by the pilot mean of d_i = t_i(alpha) - l_i^2 (its
    excess over uniform's) plus `caution` standard errors of that mean, and the lowest score
    wins (uniform scores 0). caution = 0 trusts the pilot's point estimate; the standard error
    keeps a small or unlucky pilot from choosing a small alpha on noise. Ties go to the larger
    alpha.
    """
    s = np.asarray(population_sensitivities, dtype=np.float64)
    return choose_alpha_from_totals(pilot_losses, pilot_sensitivities, s.size, float(s.sum()), grid, caution)


def choose_alpha_from_totals(pilot_losses, pilot_sensitivities, n: int, total: float,
                             grid: Sequence[float] = ALPHA_GRID, caution: float = AUTO_ALPHA_CAUTION) -> float:
    """choose_alpha given only the population's size n and sensitivity total (all it needs of
    the population), so a sharded caller never holds every sensitivity."""
    grid = [check_fraction(a, "grid", low_open=False, high_open=False) for a in grid]
    l = np.asarray(pilot_losses, dtype=np.float64)
    sp = np.asarray(pilot_sensitivities, dtype=np.float64)
    if sp.shape != l.shape:
        raise ValueError(f"pilot_sensitivities: expected shape {l.shape} (one per pilot point), got {sp.shape}")
    big_n = int(n)
    if l.size == 0 or total <= 0:
        return 1.0
    best, best_score = 1.0, 0.0
    for a in sorted(grid, reverse=True):
        if a >= 1.0:
            continue
        p = a / big_n + (1.0 - a) * sp / total
        if (p <= 0).any():
            continue
        d = l * l / (big_n * p) - l * l
        se = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else np.inf
        score = d.mean() + caution * se
        if score < best_score - 1e-15 * max(1.0, abs(best_score)):
            best, best_score = float(a), score
    return best


def pilot_alpha(pilot_indices, pilot_losses, sensitivities, grid: Sequence[float] = ALPHA_GRID,
                caution: float = AUTO_ALPHA_CAUTION) -> float:
    """choose_alpha for a uniform pilot given by its rows: `pilot_losses[j]` is the loss of row
    `pilot_indices[j]` (distinct rows of the population that `sensitivities` covers)."""
    s = np.asarray(sensitivities, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"sensitivities: expected a non-empty 1-d array, got shape {s.shape}")
    if not np.isfinite(s).all() or (s < 0).any():
        raise ValueError("sensitivities: every value must be finite and >= 0")
    idx = np.asarray(pilot_indices)
    if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"pilot_indices: expected a 1-d array of row numbers, got shape {idx.shape}, "
                         f"dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= s.size):
        raise ValueError(f"pilot_indices: rows must lie in [0, {s.size}), got range [{idx.min()}, {idx.max()}]")
    if np.unique(idx).size != idx.size:
        raise ValueError("pilot_indices: rows must be distinct (a uniform pilot without replacement)")
    l = np.asarray(pilot_losses, dtype=np.float64)
    if l.shape != idx.shape:
        raise ValueError(f"pilot_losses: expected shape {idx.shape} (one per pilot row), got {l.shape}")
    if not np.isfinite(l).all() or (l < 0).any():
        raise ValueError("pilot_losses: every loss must be finite and >= 0")
    return choose_alpha(l, s[idx.astype(np.int64)], s, grid=grid, caution=caution)


# --------------------------------------------------------------------------------------------
# 4. Adaptive rounds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdaptiveInfo:
    lam: float  # lambda used in the last round
    lambdas: tuple[float, ...]  # lambda per sensitivity round (rounds 1..R-1)
    lambda_source: str  # "holder" (from the pilot), "given", or "balanced" (holder gave 0)
    fraction_bounded: float  # pilot fraction within the Holder bound at the last lambda
    alpha: float  # alpha used in the last round
    alphas: tuple[float, ...]  # alpha per sensitivity round
    round_sizes: tuple[int, ...]  # draws per round (round 0 = the uniform pilot)
    reps_per_cluster: int
    pilot_indices: np.ndarray  # the uniform pilot (sorted)
    round_of: np.ndarray  # per row of the returned sample, the round that chose it
    model_inferences: int  # loss_of evaluations made here (pilot and representatives)
    pilot_share: float


def _split_budget(m: int, rounds: int, pilot_fraction: float) -> list[int]:
    m0 = min(max(1, int(round(pilot_fraction * m))), m - (rounds - 1))
    rest = m - m0
    per, extra = divmod(rest, rounds - 1)
    sizes = [m0] + [per] * (rounds - 1)
    sizes[-1] += extra
    return sizes


def adaptive_sensitivity_sample(
    cluster_ids,
    sq_dist,
    m: int,
    seed: int,
    fit_scorer: Callable[[np.ndarray], Callable[[np.ndarray], Sequence[float]]],
    *,
    rounds: int = 2,
    pilot_fraction: float = 0.2,
    alpha: float | str = "auto",
    lam: float | str | None = None,
    z: float = 2.0,
    reps_per_cluster: int | None = None,
    quantile: float = 0.9,
    pilot_share: float = 0.5,
    auto_caution: float = AUTO_ALPHA_CAUTION,
) -> tuple[WeightedSample, AdaptiveInfo]:
    """Sensitivity sampling in a few adaptive rounds; the estimate of any full-data sum is
    exactly unbiased.

    Round 0 draws a uniform pilot P of m0 = round(pilot_fraction * m) examples without
    replacement. Each later round t = 1..R-1 calls fit_scorer(all chosen so far) for a callable
    loss_of(indices) -> losses (e.g. a probe fit on the chosen examples), recomputes the
    representatives' losses v_j with it (the mean over the r members nearest each centroid,
    r = reps_per_cluster or representatives_per_cluster(m0, k, sizes)), sets lambda (`lam`: None
    = holder_lambda(quantile) on the pilot, falling back on balanced_lambda when that is 0;
    "balanced"; or a number), alpha (`alpha`: a number, or "auto" = choose_alpha on the pilot,
    which can fall back all the way to uniform, alpha = 1, when the sensitivities do not
    predict the pilot's losses), and draws its share of the budget from the examples C not
    chosen yet with p = defensive_probabilities(s_C, alpha), s_i = v_a(i) + lambda d_i^z. Rounds
    1..R-2 draw without replacement and join the chosen set; the last round draws m_last times
    with replacement over C, repeated rows merged as in sampling.sample_with_replacement.

    Weights (c = pilot_share * m0 / m):
        earlier-round rows  (1 - c) * 1          (+ c * n / m0 for pilot rows)
        last-round rows     (1 - c) * count / (m_last p_i),   p over the complement C
    pilot_share = 0 is the plain "complement" estimator T_C: rows chosen earlier are known
    exactly (weight 1) and the last round estimates the sum over C. pilot_share = 1 pools the
    pilot's own uniform estimate T_P = (n/m0) sum_P f with weight m0/m, as if every draw counted
    alike.

    Unbiased for any fixed f. Conditional on the earlier rounds the last round is importance
    sampling over C, so E[T_C | earlier] = sum_chosen f + sum_C f = sum_all f, hence E[T_C] =
    sum_all f; and E[T_P] = sum_all f (uniform pilot), so c T_P + (1 - c) T_C is unbiased for
    any fixed c. (T_P and T_C are even uncorrelated: E[T_C | P] is the constant sum_all f.)

    Why pooling by default (pilot_share = 0.5, measured in benchmarks/robust_sensitivity.py):
    with pilot_share = 0, the m - m0 later draws estimate nearly all of the sum, so where the
    loss ignores the embedding the variance is about m/(m - m0) = 1.25 times uniform's (1.12x
    the error) whatever alpha is; pooling with c = m0/(2m) brings that to about 1.05 while
    costing little where sensitivities help (a share of T_P's variance, c^2 n^2 sigma^2 / m0).
    Measured, error as a multiple of uniform's, share 0.5 vs 0: synthetic losses independent of
    the embedding 1.00-1.03 vs 1.10; synthetic losses following the clusters 0.30 vs 0.22; all
    12 rows on the BBC store 0.88-1.13 vs 0.97-1.27.

    Model inferences: loss_of runs on the pilot (which is part of the m) and on at most k * r
    representatives per round; the other chosen examples need a loss only to form the
    estimate. With rounds=2 the total is at most m + k * r; with R rounds at most
    m + (R-1) k r + (R-2) m0 (each refit model rescores the pilot).

    Returns the WeightedSample (probabilities: the last round's per-draw p_i for its rows, 1.0
    for rows chosen in earlier rounds, which T_C includes with certainty) and an AdaptiveInfo.
    """
    pilot_share = check_fraction(pilot_share, "pilot_share", low_open=False, high_open=False)
    ids = np.asarray(cluster_ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"cluster_ids: expected a non-empty 1-d array, got shape {ids.shape}")
    if ids.min() < 0:
        raise ValueError("cluster_ids: values must be >= 0")
    sq = check_sq_dist(sq_dist, ids)
    z = check_z(z)
    n = ids.size
    k = int(ids.max()) + 1
    m = check_budget(m, n)
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 2:
        raise ValueError(f"rounds: must be a whole number >= 2, got {rounds!r}")
    rounds = int(rounds)
    if m < rounds:
        raise ValueError(f"budget: {m} is less than one draw per round (rounds={rounds})")
    pilot_fraction = check_fraction(pilot_fraction, "pilot_fraction", low_open=True, high_open=True)
    if alpha != "auto":
        alpha = check_fraction(alpha, "alpha", low_open=False, high_open=False)
    if lam is not None and lam != "balanced" and (
            isinstance(lam, (str, bool)) or not np.isfinite(lam) or lam < 0):
        raise ValueError(f"lam: must be a finite number >= 0, 'balanced' or None, got {lam!r}")
    if not callable(fit_scorer):
        raise ValueError("fit_scorer: must be callable (chosen indices -> loss_of)")

    sizes = _split_budget(m, rounds, pilot_fraction)
    counts = _cluster_sizes(ids, k)
    r = (int(reps_per_cluster) if reps_per_cluster is not None
         else representatives_per_cluster(sizes[0], k, counts))
    if r < 1:
        raise ValueError(f"reps_per_cluster: must be >= 1, got {reps_per_cluster!r}")
    members = nearest_members_per_cluster(ids, sq, k, r)
    dz = distance_term(sq, z)

    rng = np.random.default_rng(seed)
    pilot = np.sort(rng.choice(n, size=sizes[0], replace=False)).astype(np.int64)
    chosen = [pilot]
    round_tags = [np.zeros(pilot.size, dtype=np.int64)]
    is_chosen = np.zeros(n, dtype=bool)
    is_chosen[pilot] = True
    lambdas: list[float] = []
    alphas: list[float] = []
    inferences = 0
    source = "holder" if lam is None else ("balanced" if lam == "balanced" else "given")
    frac = float("nan")
    last = None
    for t in range(1, rounds):
        so_far = np.sort(np.concatenate(chosen))
        loss_of = fit_scorer(so_far)
        if not callable(loss_of):
            raise ValueError("fit_scorer: must return a callable loss_of(indices)")
        v, used = cluster_losses_from_members(members, loss_of)
        inferences += used
        pilot_losses = check_losses(loss_of(pilot), pilot.size, name="loss_of")
        inferences += pilot.size
        if lam is None:
            lam_t = holder_lambda(pilot_losses, v[ids[pilot]], sq[pilot], z, quantile)
        elif lam == "balanced":
            lam_t = balanced_lambda(v, ids, sq, z)
        else:
            lam_t = float(lam)
        if lam is None and lam_t == 0.0:
            lam_t, source = balanced_lambda(v, ids, sq, z), "balanced"
        frac = fraction_bounded(pilot_losses, v[ids[pilot]], sq[pilot], lam_t, z)
        lambdas.append(lam_t)
        comp = np.flatnonzero(~is_chosen)
        s_comp = v[ids[comp]] + lam_t * dz[comp]
        if alpha == "auto":
            alpha_t = choose_alpha(pilot_losses, v[ids[pilot]] + lam_t * dz[pilot], s_comp,
                                   caution=auto_caution)
        else:
            alpha_t = alpha
        alphas.append(alpha_t)
        p = defensive_probabilities(s_comp, alpha_t)
        if t < rounds - 1:
            picked = np.sort(comp[rng.choice(comp.size, size=sizes[t], replace=False, p=p)])
            chosen.append(picked)
            round_tags.append(np.full(picked.size, t, dtype=np.int64))
            is_chosen[picked] = True
        else:
            drawn = rng.choice(comp.size, size=sizes[t], replace=True, p=p)
            pos, cnt = np.unique(drawn, return_counts=True)
            last = (comp[pos], cnt, p[pos])

    earlier = np.concatenate(chosen)
    earlier_tags = np.concatenate(round_tags)
    last_idx, last_cnt, last_p = last
    m_last = sizes[-1]
    w_last = last_cnt / (m_last * last_p)
    w_earlier = np.ones(earlier.size)
    if pilot_share > 0:
        c = pilot_share * sizes[0] / m
        w_last = (1.0 - c) * w_last
        w_earlier = (1.0 - c) * w_earlier
        w_earlier[earlier_tags == 0] += c * n / sizes[0]
    idx = np.concatenate([earlier, last_idx])
    order = np.argsort(idx, kind="stable")
    sample = WeightedSample(
        indices=idx[order].astype(np.int64),
        weights=np.concatenate([w_earlier, w_last])[order],
        probabilities=np.concatenate([np.ones(earlier.size), last_p])[order],
        draws=np.concatenate([np.ones(earlier.size, dtype=np.int64), last_cnt.astype(np.int64)])[order],
    )
    info = AdaptiveInfo(
        lam=lambdas[-1], lambdas=tuple(lambdas), lambda_source=source, fraction_bounded=frac,
        alpha=alphas[-1], alphas=tuple(alphas), round_sizes=tuple(sizes), reps_per_cluster=r, pilot_indices=pilot,
        round_of=np.concatenate([earlier_tags, np.full(last_idx.size, rounds - 1)])[order],
        model_inferences=inferences, pilot_share=pilot_share,
    )
    return sample, info
