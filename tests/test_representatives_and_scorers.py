"""Cluster representatives (nearest member, ties to the lowest row) and the loss scorers."""

from __future__ import annotations

import numpy as np
import pytest

from curation_assets.algorithms.representatives import cluster_sizes, nearest_members
from curation_assets.algorithms.scorers import ConstantScorer, LinearProbeScorer

# --------------------------------------------------------------------------------------------
# nearest_members
# --------------------------------------------------------------------------------------------


def _brute_nearest(ids, dist, k):
    reps = np.full(k, -1, dtype=np.int64)
    for j in range(k):
        rows = np.flatnonzero(ids == j)  # ascending row order
        if rows.size:
            reps[j] = rows[np.argmin(dist[rows])]  # argmin returns the first minimum
    return reps


def test_nearest_members_matches_brute_force_with_ties_and_empty_clusters():
    rng = np.random.default_rng(0)
    saw_tie = saw_empty = 0
    for trial in range(200):
        k = int(rng.integers(1, 15))
        n = int(rng.integers(1, 80))
        present = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
        ids = rng.choice(present, size=n)
        if trial % 2:
            dist = rng.integers(0, 4, size=n).astype(np.float32)  # many exact ties
        else:
            dist = rng.random(n).astype(np.float32)
        reps = nearest_members(ids, dist, k)
        np.testing.assert_array_equal(reps, _brute_nearest(ids, dist, k))
        saw_empty += int((reps == -1).any())
        for j in np.unique(ids):
            rows = np.flatnonzero(ids == j)
            saw_tie += int(np.sum(dist[rows] == dist[rows].min()) > 1)
    assert saw_tie > 50 and saw_empty > 50  # the random cases did exercise both


def test_nearest_members_tie_goes_to_lowest_row_not_to_position_in_sort():
    ids = np.array([2, 0, 2, 0, 2, 1])
    dist = np.array([5.0, 1.0, 0.5, 1.0, 0.5, 9.0])
    np.testing.assert_array_equal(nearest_members(ids, dist, 4), [1, 5, 2, -1])
    # Reversing the row order flips which tied row is lowest.
    np.testing.assert_array_equal(nearest_members(ids[::-1], dist[::-1], 4), [2, 0, 1, -1])


def test_nearest_members_errors_name_the_input():
    with pytest.raises(ValueError, match=r"^cluster_ids and sq_dist: "):
        nearest_members(np.array([0, 1]), np.array([0.1, 0.2, 0.3]), 2)
    with pytest.raises(ValueError, match=r"^cluster_ids: "):
        nearest_members(np.array([0, 2]), np.array([0.1, 0.2]), 2)
    with pytest.raises(ValueError, match=r"^cluster_ids: "):
        nearest_members(np.array([0, -1]), np.array([0.1, 0.2]), 2)
    np.testing.assert_array_equal(nearest_members(np.array([], int), np.array([]), 3), [-1, -1, -1])


def test_cluster_sizes_counts_members_including_empty_clusters():
    rng = np.random.default_rng(1)
    ids = rng.choice([0, 1, 3, 6], size=500)
    sizes = cluster_sizes(ids, 8)
    np.testing.assert_array_equal(sizes, [(ids == j).sum() for j in range(8)])


# --------------------------------------------------------------------------------------------
# LinearProbeScorer
# --------------------------------------------------------------------------------------------


def _three_classes(seed=0, n=1500, d=5):
    rng = np.random.default_rng(seed)
    centers = np.eye(3, d) * 8.0
    y = rng.integers(3, size=n)
    x = centers[y] + rng.normal(size=(n, d))
    return x, y


def test_probe_losses_small_when_right_large_when_mislabeled():
    x, y = _three_classes()
    rng = np.random.default_rng(1)
    pilot = rng.choice(x.shape[0], size=150, replace=False)
    scorer = LinearProbeScorer().fit(x[pilot], y[pilot])

    flipped = rng.choice(x.shape[0], size=60, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 3, size=60)) % 3  # a different class
    loss = scorer.losses(x, noisy)
    right = np.ones(x.shape[0], bool)
    right[flipped] = False

    assert loss.shape == (x.shape[0],) and np.all(loss >= 0)
    assert np.median(loss[right]) < 0.1
    assert np.median(loss[~right]) > 3.0
    # Mislabeled points are the highest-loss points (classes are ~5.7 sd apart).
    assert loss[~right].min() > np.quantile(loss[right], 0.99)
    # The losses are -log p(label | x): over the three possible labels, exp(-loss) sums to 1.
    total = sum(np.exp(-scorer.losses(x, np.full(x.shape[0], c))) for c in range(3))
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)  # float32 embeddings, float32 proba


def test_probe_handles_string_labels_and_caps_unseen_labels():
    x, y = _three_classes(seed=2, n=300)
    names = np.array(["ant", "bee", "cat"])[y]
    scorer = LinearProbeScorer().fit(x, names)
    loss = scorer.losses(x[:5], np.array(["ant", "bee", "cat", "dog", "dog"]))
    assert np.all(np.isfinite(loss))
    # A label the pilot never saw has probability 0: loss capped at -log(1e-12), not inf.
    np.testing.assert_allclose(loss[3:], -np.log(1e-12))
    assert np.all(loss[:3] < loss[3])


def test_probe_errors_name_the_pilot():
    x, y = _three_classes(n=100)
    with pytest.raises(ValueError, match=r"^pilot sample: holds 1 class"):
        LinearProbeScorer().fit(x, np.zeros(100, dtype=int))
    with pytest.raises(ValueError, match=r"^pilot labels: "):
        LinearProbeScorer().fit(x, y[:-1])
    bad = x.copy()
    bad[4, 0] = np.nan
    with pytest.raises(ValueError, match=r"^pilot embeddings: "):
        LinearProbeScorer().fit(bad, y)
    with pytest.raises(RuntimeError, match="before fit"):
        LinearProbeScorer().losses(x, y)


# --------------------------------------------------------------------------------------------
# ConstantScorer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, -1.0, np.nan, np.inf])
def test_constant_scorer_rejects_non_positive_or_non_finite(value):
    with pytest.raises(ValueError, match=r"^constant_loss: "):
        ConstantScorer(value)


def test_constant_scorer_gives_its_value_to_every_row():
    np.testing.assert_array_equal(ConstantScorer(2.5).losses(np.zeros((7, 3))), np.full(7, 2.5))
    np.testing.assert_array_equal(ConstantScorer().losses(np.zeros((4, 3)), labels=[0, 1, 2, 3]),
                                  np.ones(4))


def test_holdout_losses_are_the_probes_own_losses_on_rows_it_was_not_fit_on():
    from curation_assets.algorithms.scorers import HOLDOUT_PER_PILOT, LinearProbeScorer, seeded_holdout, seeded_pilot

    rng = np.random.default_rng(7)
    n = 600
    y = rng.integers(0, 3, n)
    x = (np.eye(3)[y] * 1.0 + rng.normal(size=(n, 3)) * 0.9).astype(np.float32)
    x = np.hstack([x, rng.normal(size=(n, 20)).astype(np.float32)])  # noise features to overfit on
    labels = np.array(["a", "b", "c"], dtype=object)[y]
    pilot = seeded_pilot(n, 100, seed=1)
    holdout = seeded_holdout(n, pilot, seed=1)
    assert holdout.size == HOLDOUT_PER_PILOT * pilot.size and np.all(np.diff(holdout) > 0)
    assert not np.intersect1d(holdout, pilot).size
    assert np.array_equal(holdout, seeded_holdout(n, pilot, seed=1))
    assert not np.array_equal(holdout, seeded_holdout(n, pilot, seed=2))
    assert np.array_equal(seeded_holdout(150, pilot, seed=1), np.setdiff1d(np.arange(150), pilot))  # all that is left

    probe = LinearProbeScorer().fit(x[pilot], labels[pilot])
    held_out, in_sample = probe.losses(x[holdout], labels[holdout]), probe.losses(x[pilot], labels[pilot])
    assert held_out.mean() > 1.2 * in_sample.mean()  # its own training rows look too good


@pytest.mark.parametrize("classes", [2, 4])
def test_probe_losses_are_the_probes_own_from_one_product(classes):
    """What the assignments' pass stores per row equals the fitted probe's own loss at the label and
    expected loss, for binary and multiclass probes, with unlabelled and unseen labels handled."""
    import pyarrow as pa

    from curation_assets.algorithms.scorers import LOSS_CAP, expected_losses, probe_losses, softmax_coefficients
    from curation_assets.stored_inputs import StoredProbe

    rng = np.random.default_rng(classes)
    n = 300
    y = rng.integers(0, classes, n)
    x = (np.eye(5)[y] * 1.5 + rng.normal(size=(n, 5))).astype(np.float32)
    names = np.array([f"c{i}" for i in range(classes)], dtype=object)
    labels = names[y]
    model = LinearProbeScorer().fit(x[:150], labels[:150])
    classes_, w, b = softmax_coefficients(model.model)
    stored = StoredProbe([str(c) for c in classes_], w, b, "v1")
    seen = labels.tolist()
    seen[3], seen[4] = None, "never-seen"
    index = stored.label_index(pa.array(seen, pa.string()))
    assert index[3] == -1 and index[4] == -2
    expected, at = probe_losses(x, w, b, index)
    keep = np.setdiff1d(np.arange(n), [3, 4])
    np.testing.assert_allclose(at[keep], model.losses(x[keep], labels[keep]), rtol=1e-4, atol=1e-6)
    assert np.isnan(at[3]) and at[4] == LOSS_CAP
    np.testing.assert_allclose(expected, expected_losses(x, w, b), rtol=1e-5, atol=1e-7)  # float32 products
    p = model.model.predict_proba(x)
    np.testing.assert_allclose(expected, -(p * np.log(p)).sum(axis=1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("classes", [2, 3])
def test_expected_losses_are_the_probes_expected_cross_entropy_from_its_stored_coefficients(classes):
    """E over y ~ p(.|x) of -log p(y|x), from the coefficients as stored (binary models included),
    equals the mean of the probe's own losses over every label weighted by its probabilities."""
    from curation_assets.algorithms.scorers import expected_losses, softmax_coefficients

    rng = np.random.default_rng(classes)
    x = rng.normal(size=(300, 5))
    y = np.array([f"c{i}" for i in rng.integers(0, classes, 300)], dtype=object)
    probe = LinearProbeScorer().fit(x[:200], y[:200])
    names, w, b = softmax_coefficients(probe.model)
    assert w.shape == (classes, 5) and list(names) == sorted(set(y))
    p = probe.model.predict_proba(x[200:])
    by_label = np.stack([probe.losses(x[200:], np.full(100, c, dtype=object)) for c in names], axis=1)
    np.testing.assert_allclose(expected_losses(x[200:], w, b), (p * by_label).sum(axis=1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(probe.expected_losses(x[200:]), (p * by_label).sum(axis=1), rtol=1e-6, atol=1e-9)
