"""Evaluate selection methods on held-out data: train on each subset, test on data no selector saw.

A `Pool` is the selection side of a split: its own k-means, its own probe pilot, its own
sensitivities, built with the pipeline's parameters, so the test side never leaks into a
selection. Every selector maps (pool, m, seed) to a WeightedSample of the pool's rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .balanced_sampling import hierarchical_balanced_selector
from .baselines import BASELINES
from .downstream import fit_predict_logreg, fit_predict_mlp, scores
from .estimation import relative_error, weighted_mean
from .kmeans import assign_to_centroids, default_n_clusters, fit_kmeans
from .representatives import nearest_members
from .robust_sensitivity import DEFAULT_ALPHA, adaptive_sensitivity_sample, defensive_probabilities, pilot_alpha
from .sampling import WeightedSample, sample_uniform, sample_with_replacement
from .scorers import LinearProbeScorer, probe_fit_scorer, seeded_holdout
from .sensitivity import balanced_lambda, sampling_probabilities, sensitivity_scores
from .stratified_sampling import (
    CLUSTERS,
    PROBE,
    choose_stratified_design,
    strata_of,
    stratified_sensitivity_sample,
)


@dataclass(frozen=True)
class Pool:
    x: np.ndarray  # (n, d) embeddings of the selection side
    labels: np.ndarray  # (n,) labels
    cluster_ids: np.ndarray
    sq_dist: np.ndarray
    n_clusters: int
    losses: np.ndarray  # per-example loss of the fixed model (the probe): what estimates target
    sensitivities: np.ndarray  # s_i with the balanced lambda
    pilot: np.ndarray  # rows the probe was fit on
    holdout: np.ndarray  # rows outside the pilot whose probe losses choose the automatic alpha
    centroids: np.ndarray  # (k, d) of the pool's k-means
    expected_losses: np.ndarray  # the probe's expected loss at each row (no label needed)

    @property
    def n(self) -> int:
        return self.x.shape[0]


Selector = Callable[[Pool, int, int], WeightedSample]


def holdout_mask(example_ids, test_fraction: float) -> np.ndarray:
    """True for test rows: a stable md5 split, so every run and method sees the same test set."""
    import hashlib

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: must be in (0, 1), got {test_fraction!r}")
    h = np.array([int.from_bytes(hashlib.md5(str(i).encode()).digest()[:4], "little") for i in example_ids])
    return h < test_fraction * 2**32


def build_pool(x, labels, *, n_clusters: int | None = None, seed: int = 0, pilot_size: int | None = None,
               z: float = 2.0) -> Pool:
    """k-means, representatives, a probe on a uniform pilot and balanced sensitivities, on `x` only."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=object)
    n = x.shape[0]
    k = n_clusters or default_n_clusters(n)
    km = fit_kmeans(x, k, seed=seed)
    cluster_ids, sq_dist = assign_to_centroids(x, km.centroids)
    reps = nearest_members(cluster_ids, sq_dist, k)
    pilot_size = pilot_size or min(n, max(100, int(np.ceil(0.05 * n))))
    pilot = np.sort(np.random.default_rng(seed).choice(n, size=pilot_size, replace=False))
    probe = LinearProbeScorer().fit(x[pilot], labels[pilot])
    losses = probe.losses(x, labels)  # evaluation only: the method itself needs the k below
    v = np.zeros(k)
    present = reps >= 0
    v[present] = losses[reps[present]]
    lam = balanced_lambda(v, cluster_ids, sq_dist, z)
    s = sensitivity_scores(v, cluster_ids, sq_dist, lam, z)
    return Pool(x, labels, cluster_ids, sq_dist, k, losses, s, pilot, seeded_holdout(n, pilot, seed), km.centroids,
                probe.expected_losses(x))


def _adaptive(pool: Pool, m: int, seed: int, rounds: int = 2) -> WeightedSample:
    """Two rounds (a uniform pilot, then sensitivity); a budget below one draw per round is uniform."""
    if m < rounds:
        return sample_uniform(pool.n, m, seed)
    sample, _ = adaptive_sensitivity_sample(pool.cluster_ids, pool.sq_dist, m, seed, probe_fit_scorer(pool.x, pool.labels),
                                            rounds=rounds)
    return sample


def _auto_alpha(pool: Pool, m: int, seed: int) -> WeightedSample:
    """The pipeline's non-stratified automatic alpha: chosen on the probe's held-out losses;
    uniform (without replacement) when that choice is alpha = 1."""
    alpha = pilot_alpha(pool.holdout, pool.losses[pool.holdout], pool.sensitivities)
    if alpha == 1.0:
        return sample_uniform(pool.n, m, seed)
    return sample_with_replacement(defensive_probabilities(pool.sensitivities, alpha), m, seed)


def _stratified_auto(pool: Pool, m: int, seed: int) -> WeightedSample:
    """The pipeline's default: systematic along the clusters; the sensitivity (the clusters' or
    the probe's expected loss) and alpha chosen on the probe's losses at the held-out rows."""
    strata = strata_of(pool.cluster_ids, m, seed, pool.centroids)
    candidates = {CLUSTERS: pool.sensitivities, PROBE: pool.expected_losses}
    source, alpha = choose_stratified_design(pool.holdout, pool.losses[pool.holdout], candidates, strata, m, seed)
    return stratified_sensitivity_sample(candidates[source or CLUSTERS], pool.cluster_ids, m, seed, alpha=alpha,
                                         centroids=pool.centroids)


def _baseline(fn) -> Selector:
    return lambda pool, m, seed: fn(pool.x, pool.cluster_ids, m, seed)


def selectors() -> dict[str, Selector]:
    """Every selection method the evaluation knows, by name."""
    out = {
        "uniform": lambda pool, m, seed: sample_uniform(pool.n, m, seed),
        "sensitivity": lambda pool, m, seed: sample_with_replacement(
            sampling_probabilities(pool.sensitivities), m, seed),
        "sensitivity_defensive": lambda pool, m, seed: sample_with_replacement(
            defensive_probabilities(pool.sensitivities, DEFAULT_ALPHA), m, seed),
        "sensitivity_auto": _auto_alpha,
        "sensitivity_stratified": _stratified_auto,
        "cluster_stratified": lambda pool, m, seed: stratified_sensitivity_sample(
            pool.sensitivities, pool.cluster_ids, m, seed, alpha=1.0, centroids=pool.centroids),
        "sensitivity_adaptive": _adaptive,
    }
    out.update({name: _baseline(fn) for name, fn in BASELINES.items() if name != "uniform"})
    out["hierarchical_balanced"] = hierarchical_balanced_selector()  # trained on unweighted, as meant
    return out


def budgets_to_counts(n: int, fractions) -> list[tuple[float, int]]:
    out = []
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"budgets: every fraction must be in (0, 1], got {f!r}")
        out.append((float(f), max(1, int(round(f * n)))))
    return out


def estimate_errors(pool: Pool, selectors: dict[str, Selector], budgets, seeds) -> list[dict]:
    """|weighted subset mean loss - full mean loss| / full mean, per method, budget and seed."""
    truth = float(pool.losses.mean())
    rows = []
    for frac, m in budgets_to_counts(pool.n, budgets):
        for name, select in selectors.items():
            for seed in seeds:
                smp = select(pool, m, seed)
                est = weighted_mean(pool.losses, smp.indices, smp.weights, pool.n)
                rows.append({"method": name, "budget_fraction": frac, "m": m, "seed": int(seed),
                             "metric": "estimate_rel_error", "model": "probe",
                             "value": relative_error(est, truth)})
    return rows


def training_scores(pool: Pool, x_test, y_test, selectors: dict[str, Selector], budgets, seeds,
                    models=("logreg", "mlp"), mlp_epochs: int = 200) -> list[dict]:
    """Accuracy and macro-F1 on the test side of models trained on each weighted subset, and on
    the whole pool (method 'full', the ceiling)."""
    classes = np.unique(np.concatenate([pool.labels, np.asarray(y_test, dtype=object)]))
    x_test = np.asarray(x_test, dtype=np.float32)

    def run(model, idx, w, seed):
        if model == "logreg":
            pred = fit_predict_logreg(pool.x[idx], pool.labels[idx], w, x_test, seed=seed)
        else:
            pred = fit_predict_mlp(pool.x[idx], pool.labels[idx], w, x_test, classes=classes, seed=seed,
                                   epochs=mlp_epochs)
        return scores(np.asarray(y_test, dtype=object), pred)

    rows = []
    everything = np.arange(pool.n)
    for model in models:
        sc = run(model, everything, None, 0)
        for metric in ("accuracy", "macro_f1"):
            rows.append({"method": "full", "budget_fraction": 1.0, "m": pool.n, "seed": 0, "metric": metric,
                         "model": model, "value": getattr(sc, metric)})
    for frac, m in budgets_to_counts(pool.n, budgets):
        for name, select in selectors.items():
            for seed in seeds:
                smp = select(pool, m, seed)
                for model in models:
                    sc = run(model, smp.indices, smp.weights, seed)
                    for metric in ("accuracy", "macro_f1"):
                        rows.append({"method": name, "budget_fraction": frac, "m": m, "seed": int(seed),
                                     "metric": metric, "model": model, "value": getattr(sc, metric)})
    return rows
