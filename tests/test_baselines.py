"""The baseline selectors, each checked against its definition by an independent brute force.

Statistical checks use fixed seeds but bounds chosen as if the draws were fresh (4 standard
errors), and each is paired with a plausible wrong implementation computed from the same draws
that must land outside the same tolerance, so the check has power against that mistake.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from curation_assets.algorithms import baselines as bl
from curation_assets.algorithms.baselines import (
    BASELINES,
    k_center_greedy,
    k_center_greedy_order,
    k_center_objective,
    kmeans_centroid_sample,
    largest_remainder_allocation,
    semantic_dedup_keep,
    semantic_dedup_sample,
    stratified_sample,
)
from curation_assets.algorithms.kmeans import fit_kmeans


def _blobs(seed=0, n=300, d=8, k=6, sep=6.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=sep, size=(k, d))
    labels = rng.integers(k, size=n)
    return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def _check_structure(smp, n):
    assert smp.indices.dtype == np.int64
    assert smp.weights.dtype == np.float64 and smp.probabilities.dtype == np.float64
    assert smp.draws.dtype == np.int64 and np.all(smp.draws == 1)
    assert np.all(np.diff(smp.indices) > 0)  # sorted, distinct
    assert smp.indices[0] >= 0 and smp.indices[-1] < n
    assert smp.weights.shape == smp.probabilities.shape == smp.indices.shape
    assert np.all(smp.weights > 0) and np.all((smp.probabilities > 0) & (smp.probabilities <= 1))


def _mean_se(x):
    x = np.asarray(x, dtype=np.float64)
    return x.mean(), x.std(ddof=1) / np.sqrt(x.size)


# --------------------------------------------------------------------------------------------
# Stratified sampling
# --------------------------------------------------------------------------------------------


def _brute_force_allocation(sizes, m):
    """Hamilton's method with exact fractions: floors, then one each to the largest remainders,
    ties to the stratum listed first."""
    n = sum(sizes)
    quotas = [Fraction(m * s, n) for s in sizes]
    alloc = [math.floor(q) for q in quotas]
    leftover = m - sum(alloc)
    ranked = sorted(range(len(sizes)), key=lambda h: (-(quotas[h] - alloc[h]), h))
    for h in ranked[:leftover]:
        alloc[h] += 1
    return alloc


def test_largest_remainder_allocation_matches_brute_force_on_random_sizes():
    rng = np.random.default_rng(0)
    for _ in range(400):
        h = int(rng.integers(1, 13))
        # Small sizes make equal remainders (ties) common.
        sizes = rng.integers(1, rng.choice([4, 50]), size=h)
        n = int(sizes.sum())
        m = int(rng.integers(1, n + 1))
        alloc = largest_remainder_allocation(sizes, m)
        assert alloc.sum() == m
        assert alloc.tolist() == _brute_force_allocation(sizes.tolist(), m)
        quotas = m * sizes / n
        assert np.all(np.abs(alloc - quotas) < 1) and np.all(alloc <= sizes)


def test_largest_remainder_hand_examples():
    # Equal remainders: the leftover units go to the strata listed first.
    assert largest_remainder_allocation([1, 1, 1], 2).tolist() == [1, 1, 0]
    assert largest_remainder_allocation([5, 5, 5, 5], 2).tolist() == [1, 1, 0, 0]
    # Quotas 2.6, 5.6, 0.8 -> floors 2, 5, 0 and the two leftovers to remainders .8 and .6 (first).
    assert largest_remainder_allocation([13, 28, 4], 9).tolist() == [3, 5, 1]
    # Plain rounding would give 1 + 1 + 1 = 3 != 2; truncation 0 + 0 + 0.
    assert largest_remainder_allocation([10, 10, 10], 2).sum() == 2


# Labels are arbitrary integers; strata are ordered by label: -2, 0, 3, 5, 7, 11.
_STRATA_LABELS = np.array([7, 3, 11, -2, 0, 5])
_STRATA_SIZES = np.array([120, 75, 13, 48, 200, 44])  # n = 500
_STRATA_MEANS = np.array([1.0, 2.0, 60.0, 0.5, 1.5, 3.0])


@pytest.fixture(scope="module")
def strata():
    rng = np.random.default_rng(5)
    ids = np.repeat(_STRATA_LABELS, _STRATA_SIZES)
    # f rises with the row's position inside its stratum, so a sampler that takes the first
    # rows of each stratum is biased low.
    pos = np.concatenate([np.arange(s) / s for s in _STRATA_SIZES])
    f = np.repeat(_STRATA_MEANS, _STRATA_SIZES) * (0.2 + 1.6 * pos) + rng.normal(0, 0.1, ids.size)
    perm = rng.permutation(ids.size)
    return ids[perm], f[perm]


def test_stratified_totals_and_allocation(strata):
    ids, _ = strata
    n = ids.size
    order = np.argsort(_STRATA_LABELS)  # strata are ordered by label
    for m in (1, 6, 37, 50, 333, n):
        expected = largest_remainder_allocation(_STRATA_SIZES[order], m)
        smp = stratified_sample(ids, m, seed=m)
        _check_structure(smp, n)
        assert smp.indices.size == m
        got = [int(np.sum(ids[smp.indices] == lab)) for lab in _STRATA_LABELS[order]]
        assert got == expected.tolist()
        for lab, size, mh in zip(_STRATA_LABELS[order], _STRATA_SIZES[order], expected):
            if mh == 0:
                continue
            rows = ids[smp.indices] == lab
            np.testing.assert_allclose(smp.weights[rows], size / mh)
            np.testing.assert_allclose(smp.probabilities[rows], mh / size)
        represented = _STRATA_SIZES[order][expected > 0].sum()
        assert smp.weights.sum() == pytest.approx(represented)


def test_stratified_is_unbiased_and_wrong_implementations_are_not(strata):
    ids, f = strata
    n, m = ids.size, 50  # allocation [12, 8, 1, 5, 20, 4] in label order: every stratum drawn
    truth = f.sum()
    est, est_flat = [], []
    for seed in range(2000):
        smp = stratified_sample(ids, m, seed)
        est.append(smp.estimate_sum(f))
        est_flat.append(n / m * f[smp.indices].sum())  # ignores the rounding of the allocation
    mean, se = _mean_se(est)
    assert abs(mean - truth) < 4 * se, (mean, truth, se)
    # Wrong weighting n/m: the 13-row stratum with mean 60 gets 1 row weighing 10 instead of 13.
    mean_flat, se_flat = _mean_se(est_flat)
    assert abs(mean_flat - truth) > 4 * max(se, se_flat)
    # Not uniform within strata: the lowest-index m_h rows of each stratum (the rows are
    # shuffled, so take the lowest positions before the shuffle, which have the smallest f).
    smp0 = stratified_sample(ids, m, 0)
    est_first = 0.0
    for lab in _STRATA_LABELS:
        rows = np.flatnonzero(ids == lab)
        mh = int(np.isin(smp0.indices, rows).sum())
        est_first += rows.size / mh * np.sort(f[rows])[:mh].sum()
    assert abs(est_first - truth) > 4 * se


def test_stratified_unrepresented_stratum_is_missed_as_documented():
    # n = 100, m = 10: the 4-row stratum has quota 0.4 and remainder below the leftover cut-off.
    sizes = np.array([48, 48, 4])
    ids = np.repeat([0, 1, 2], sizes)
    alloc = largest_remainder_allocation(sizes, 10)
    assert alloc.tolist() == [5, 5, 0]  # quotas 4.8, 4.8, 0.4: the leftovers go to .8, .8
    f = np.arange(100, dtype=np.float64)
    ests = []
    for seed in range(300):
        smp = stratified_sample(ids, 10, seed)
        assert not np.isin(smp.indices, np.flatnonzero(ids == 2)).any()
        assert smp.weights.sum() == pytest.approx(96)
        ests.append(smp.estimate_sum(f))
    mean, se = _mean_se(ests)
    assert abs(mean - f[ids != 2].sum()) < 4 * se  # what the estimate targets
    assert abs(mean - f.sum()) > 4 * se  # so the full sum is missed by stratum 2's total


# --------------------------------------------------------------------------------------------
# k-means centroids
# --------------------------------------------------------------------------------------------


def test_kmeans_centroid_sample_takes_the_member_nearest_each_centroid():
    x, _ = _blobs(seed=1)
    m, seed = 12, 3
    smp = kmeans_centroid_sample(x, m, seed)
    _check_structure(smp, x.shape[0])
    assert smp.indices.size == m
    # Brute force from the same (seeded, deterministic) clustering.
    cents = fit_kmeans(x, m, seed=seed).centroids.astype(np.float64)
    d2 = ((x.astype(np.float64)[:, None, :] - cents[None]) ** 2).sum(-1)
    labels = d2.argmin(1)
    expected, sizes = [], []
    for j in range(m):
        members = np.flatnonzero(labels == j)
        assert members.size  # not the empty-cluster case
        expected.append(members[np.argmin(d2[members, j])])
        sizes.append(members.size)
    order = np.argsort(expected)
    assert smp.indices.tolist() == np.asarray(expected)[order].tolist()
    assert smp.weights.tolist() == np.asarray(sizes, dtype=float)[order].tolist()
    assert smp.weights.sum() == x.shape[0]
    np.testing.assert_allclose(smp.probabilities, 1 / smp.weights)


def test_kmeans_centroid_sample_with_duplicates_returns_min_m_distinct():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(5, 4)).astype(np.float32)
    x = base[rng.permutation(np.repeat(np.arange(5), [3, 8, 1, 6, 2]))]
    smp = kmeans_centroid_sample(x, 8, seed=0)
    assert smp.indices.size == 5  # only 5 distinct rows exist
    # One row per distinct vector (its lowest index), weighing its multiplicity.
    _, first, inv, counts = np.unique(x, axis=0, return_index=True, return_inverse=True,
                                      return_counts=True)
    assert sorted(smp.indices.tolist()) == sorted(first.tolist())
    assert smp.weights.tolist() == counts[inv.reshape(-1)[smp.indices]].astype(float).tolist()
    # m = n on distinct rows: every row, each standing for itself.
    y = rng.normal(size=(40, 3)).astype(np.float32)
    all_rows = kmeans_centroid_sample(y, 40, seed=1)
    assert all_rows.indices.tolist() == list(range(40))
    assert np.all(all_rows.weights == 1)


def test_nearest_member_selection_fills_empty_clusters_with_farthest_rows():
    # Rows on a line; centroid 1 is far away, so its cluster is empty after assignment.
    x = np.array([[0, 0], [1, 0], [2, 0], [6, 0], [8, 0], [10, 0]], dtype=np.float32)
    cents = np.array([[0, 0], [100, 100]], dtype=np.float32)
    smp = bl.nearest_member_selection(x, cents, 2)
    # Representative: row 0 (on centroid 0). Filler: row 5, farthest from its centroid. The
    # cluster is split by nearest selected row: {0, 1, 2} vs {6, 8, 10} (row 3: 6 vs 4).
    assert smp.indices.tolist() == [0, 5]
    assert smp.weights.tolist() == [3.0, 3.0]


# --------------------------------------------------------------------------------------------
# k-center greedy
# --------------------------------------------------------------------------------------------


def _brute_force_farthest_point(x, m, seed):
    x = x.astype(np.float64)
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    seq = [int(np.random.default_rng(seed).integers(len(x)))]
    while len(seq) < m:
        nearest = dist[:, seq].min(1)
        seq.append(int(np.argmax(nearest)))
    return seq, dist


def test_k_center_sequence_matches_brute_force_and_is_a_2_approximation():
    for trial in range(40):
        rng = np.random.default_rng(100 + trial)
        if trial % 2:
            x = rng.normal(size=(12, 3)).astype(np.float32)
        else:  # a small integer grid: equal distances (ties) and repeated rows are common
            x = rng.integers(0, 4, size=(12, 2)).astype(np.float32)
            assert len({tuple(r) for r in x}) >= 3
        seed = trial
        seq, dist = _brute_force_farthest_point(x, 3, seed)
        assert k_center_greedy_order(x, 3, seed).tolist() == seq
        smp = k_center_greedy(x, 3, seed)
        _check_structure(smp, 12)
        assert smp.indices.tolist() == sorted(seq)
        # Weight = how many rows have this centre as their nearest (ties to the earlier one).
        owner = np.asarray(seq)[np.argmin(dist[:, seq], axis=1)]
        assert smp.weights.tolist() == [float(np.sum(owner == s)) for s in sorted(seq)]
        # Objective: the greedy radius, and the optimum over all 220 subsets of size 3.
        greedy = dist[:, seq].min(1).max()
        assert k_center_objective(x, smp.indices) == pytest.approx(greedy, rel=1e-6)
        opt = min(dist[:, list(c)].min(1).max() for c in itertools.combinations(range(12), 3))
        assert opt - 1e-9 <= greedy <= 2 * opt + 1e-9


def test_k_center_chunking_and_seed():
    x, _ = _blobs(seed=4, n=200)
    ref = k_center_greedy_order(x, 15, seed=9)
    for rows in (1, 7, 64):
        assert k_center_greedy_order(x, 15, seed=9, chunk_rows=rows).tolist() == ref.tolist()
        assert k_center_objective(x, ref, chunk_rows=rows) == k_center_objective(x, ref)
    # The seed picks the start; the rest follows from it.
    starts = {int(k_center_greedy_order(x, 2, seed=s)[0]) for s in range(5)}
    assert len(starts) > 1
    assert int(ref[0]) == int(np.random.default_rng(9).integers(200))


def test_k_center_stops_at_the_number_of_distinct_rows():
    base = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32)
    x = np.repeat(base, [5, 1, 3, 2], axis=0)
    smp = k_center_greedy(x, 7, seed=0)
    assert smp.indices.size == 4
    assert len({tuple(r) for r in x[smp.indices]}) == 4
    assert sorted(smp.weights.tolist()) == [1.0, 2.0, 3.0, 5.0]
    assert k_center_objective(x, smp.indices) == 0.0


# --------------------------------------------------------------------------------------------
# SemDeDup
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted():
    """30 distinct base points, each with 0-3 jittered copies (cosine ~ 1 - 1e-6); the rows
    shuffled; cluster = base % 4, so each duplicate group lies within one cluster."""
    rng = np.random.default_rng(11)
    base = rng.normal(size=(30, 16))
    copies = rng.integers(0, 4, size=30)
    group = np.repeat(np.arange(30), 1 + copies)
    x = base[group] + 1e-3 * rng.normal(size=(group.size, 16))
    perm = rng.permutation(group.size)
    return x[perm].astype(np.float32), group[perm], group[perm] % 4


def test_semdedup_removes_planted_duplicates(planted):
    x, group, clusters = planted
    n = x.shape[0]
    # Sanity of the plant: distinct bases are far below the threshold.
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    assert cos[group[:, None] != group[None, :]].max() < 0.9
    kept, sizes = semantic_dedup_keep(x, clusters, threshold=0.95)
    assert kept.dtype == np.int64 and np.all(np.diff(kept) > 0)
    # Exactly one row of each group (so every distinct point) survives: the group's first row.
    assert sorted(group[kept].tolist()) == list(range(30))
    first_of_group = [int(np.flatnonzero(group == g)[0]) for g in range(30)]
    assert sorted(kept.tolist()) == sorted(first_of_group)
    assert sizes.tolist() == [int(np.sum(group == g)) for g in group[kept]]
    assert sizes.sum() == n
    # Without the cluster ids in common, copies are never compared: nothing is removed.
    kept_sep, sizes_sep = semantic_dedup_keep(x, np.arange(n), threshold=0.95)
    assert kept_sep.tolist() == list(range(n)) and np.all(sizes_sep == 1)


def test_semdedup_threshold_and_kept_only_comparison():
    def unit(deg):
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]

    two = np.array([unit(0), unit(math.degrees(math.acos(0.9)))], dtype=np.float32)
    same = np.zeros(2, dtype=np.int64)
    cos = float(two[0].astype(float) @ two[1] / np.linalg.norm(two.astype(float), axis=1).prod())
    assert cos == pytest.approx(0.9, abs=1e-6)
    assert semantic_dedup_keep(two, same, 0.95)[0].tolist() == [0, 1]
    assert semantic_dedup_keep(two, same, cos + 1e-7)[0].tolist() == [0, 1]
    assert semantic_dedup_keep(two, same, cos)[0].tolist() == [0]  # cos >= threshold drops
    assert semantic_dedup_keep(two, same, 0.85)[1].tolist() == [2]
    # Exact copies (different norms, same direction) go at threshold 1.
    copies = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [3.0, 2.0, 1.0]])
    kept, sizes = semantic_dedup_keep(copies, np.zeros(3, dtype=np.int64), 1.0)
    assert kept.tolist() == [0, 2] and sizes.tolist() == [2, 1]
    # A chain A(0 deg) - B(18) - C(40) at cos(25 deg): B is dropped by A; C is compared with the
    # kept A only (cos 40 < cos 25), so it stays, although it is close to the dropped B.
    chain = np.array([unit(0), unit(18), unit(40)])
    kept, sizes = semantic_dedup_keep(chain, np.zeros(3, dtype=np.int64),
                                      math.cos(math.radians(25)))
    assert kept.tolist() == [0, 2] and sizes.tolist() == [2, 1]


def test_semdedup_sample_weights_and_unbiasedness(planted):
    x, group, clusters = planted
    n = x.shape[0]
    kept, sizes = semantic_dedup_keep(x, clusters)
    k, m = kept.size, 10
    # f equal within a duplicate group: the weighted sum then estimates the full sum.
    f = np.random.default_rng(1).lognormal(size=30)[group]
    truth = f.sum()
    ests, ests_flat = [], []
    for seed in range(1500):
        smp = semantic_dedup_sample(x, clusters, m, seed)
        pos = np.searchsorted(kept, smp.indices)
        assert np.all(kept[pos] == smp.indices)
        np.testing.assert_allclose(smp.weights, sizes[pos] * k / m)
        np.testing.assert_allclose(smp.probabilities, m / k)
        ests.append(smp.estimate_sum(f))
        ests_flat.append(n / m * f[smp.indices].sum())  # ignores the group sizes
    _check_structure(smp, n)
    mean, se = _mean_se(ests)
    assert abs(mean - truth) < 4 * se
    mean_flat, se_flat = _mean_se(ests_flat)
    assert abs(mean_flat - truth) > 4 * max(se, se_flat)
    # Budget at least the kept pool: all of it, each weighing its group size.
    full = semantic_dedup_sample(x, clusters, k + 3, seed=0)
    assert full.indices.tolist() == kept.tolist()
    assert full.weights.tolist() == sizes.astype(float).tolist() and full.weights.sum() == n


# --------------------------------------------------------------------------------------------
# Registry, seeds, errors
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    # Blobs near the origin: directions differ, so cosine dedup keeps most rows.
    x, labels = _blobs(seed=7, n=240, sep=1.5)
    return x, labels


def test_registry_common_signature_and_weights(data):
    x, labels = data
    n = x.shape[0]
    assert set(BASELINES) == {"uniform", "stratified", "kmeans_centroids", "k_center", "semdedup"}
    for name, fn in BASELINES.items():
        smp = fn(x, labels, 24, 5)
        _check_structure(smp, n)
        assert smp.indices.size == 24, name
        if name == "semdedup":  # random total, exactly n in expectation
            assert 0.5 * n < smp.weights.sum() < 1.5 * n
        else:
            assert smp.weights.sum() == pytest.approx(n), name
        if name != "semdedup":
            np.testing.assert_allclose(smp.probabilities * smp.weights, 1.0, err_msg=name)


def test_same_seed_same_selection(data):
    x, labels = data
    for name, fn in BASELINES.items():
        a, b = fn(x, labels, 20, 42), fn(x, labels, 20, 42)
        assert a.indices.tolist() == b.indices.tolist(), name
        assert a.weights.tolist() == b.weights.tolist(), name
        if name != "kmeans_centroids":  # faiss k-means on blobs may converge to the same answer
            others = [fn(x, labels, 20, s).indices.tolist() for s in (1, 2, 3)]
            assert any(o != a.indices.tolist() for o in others), name


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("m", [0, -3, 241, 2.5, True])
def test_bad_budget_is_named(data, name, m):
    x, labels = data
    with pytest.raises(ValueError, match="budget"):
        BASELINES[name](x, labels, m, 0)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_nan_embeddings_and_bad_cluster_ids_are_named(data, name):
    x, labels = data
    bad = x.copy()
    bad[17, 2] = np.nan
    with pytest.raises(ValueError, match=r"embeddings: .*row 17"):
        BASELINES[name](bad, labels, 5, 0)
    with pytest.raises(ValueError, match="cluster_ids"):
        BASELINES[name](x, labels[:-1], 5, 0)
    if name in ("stratified", "semdedup"):
        with pytest.raises(ValueError, match="cluster_ids"):
            BASELINES[name](x, None, 5, 0)
        with pytest.raises(ValueError, match="cluster_ids"):
            BASELINES[name](x, labels + 0.5, 5, 0)


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, float("nan"), "high", None])
def test_bad_threshold_is_named(planted, threshold):
    x, _, clusters = planted
    with pytest.raises(ValueError, match="threshold"):
        semantic_dedup_keep(x, clusters, threshold)
    with pytest.raises(ValueError, match="threshold"):
        semantic_dedup_sample(x, clusters, 5, 0, threshold=threshold)


def test_other_bad_inputs_are_named():
    x = np.ones((4, 2), dtype=np.float32)
    x[2] = 0
    with pytest.raises(ValueError, match=r"embeddings: .*zero norm.*row 2"):
        semantic_dedup_keep(x, np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="indices"):
        k_center_objective(x, [0, 4])
    with pytest.raises(ValueError, match="indices"):
        k_center_objective(x, [])
    with pytest.raises(ValueError, match="sizes"):
        largest_remainder_allocation([3, 0, 2], 2)
    with pytest.raises(ValueError, match="budget"):
        largest_remainder_allocation([3, 1, 2], 7)
    with pytest.raises(ValueError, match="chunk_rows"):
        k_center_greedy(x, 2, 0, chunk_rows=0)
    with pytest.raises(ValueError, match="training_sample_size"):
        kmeans_centroid_sample(np.random.default_rng(0).normal(size=(50, 2)), 10, 0,
                               training_sample_size=5)
