"""A subset drawn from one pass over the sensitivities, a shard at a time (ShardTotals keeps what
the samplers need, never the embeddings); plus the rows and summary every stored subset shares."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import MetadataValue

from resources.storage import CurationStore

from .algorithms.baselines import BASELINES
from .algorithms.robust_sensitivity import (
    DEFAULT_ALPHA,
    adaptive_sensitivity_sample,
    choose_alpha_from_totals,
    defensive_probabilities,
)
from .algorithms.sampling import WeightedSample, sample_by_sensitivity
from .algorithms.scorers import probe_fit_scorer
from .algorithms.sharded_sampling import allocate_draws, allocate_uniform, draws_within_shard, uniform_within_shard
from .algorithms.stratified_sampling import (
    CLUSTERS,
    PROBE,
    choose_stratified_design,
    strata_of,
    stratified_sensitivity_sample,
)
from .arrays import embedding_matrix
from .progress import Progress
from .stored_inputs import load_centroids, read_shards

BASELINE_ASSETS = {name: f"{name}_subset" for name in BASELINES if name != "uniform"}  # uniform: uniform_subset


class ShardTotals:
    """One pass over the sensitivities, a shard at a time, keeping what every sampler needs: per
    shard its sensitivities, cluster ids and (where the probe scored it) expected losses, their
    counts and sums, ids, and where each labelled holdout example is. Two floats and two ids per
    example (not the embeddings): the samplers draw from these and read nothing again."""

    def __init__(self, store: CurationStore, keys: list[str], losses_version: str, k: int, holdout_ids: set,
                 log=lambda _: None):
        self.keys, self.example_id, self.sensitivity, self.cluster_id, self.expected_loss = keys, [], [], [], []
        self.holdout_row: dict[str, int] = {}  # a held-out example's row number over all shards
        stale, params, start = [], {"lambda_": set(), "z": set()}, 0
        wanted = pa.array(sorted(holdout_ids), pa.string())
        progress = Progress(len(keys), "subsets: summing sensitivities", log, unit="shards")
        for key in keys:
            columns = ["example_id", "cluster_id", "sensitivity", "lambda_", "z", "losses_version"]
            columns += ["expected_loss"] if "expected_loss" in store.schema("sensitivities", key).names else []
            t = store.read("sensitivities", [key], columns=columns)  # older stores: no expected_loss
            if set(t.column("losses_version").unique().to_pylist()) != {losses_version}:
                stale.append(key)
            for col in params:
                params[col].update(t.column(col).unique().to_pylist())
            self.example_id.append(t.column("example_id").combine_chunks())
            self.sensitivity.append(t.column("sensitivity").to_numpy())
            self.cluster_id.append(t.column("cluster_id").to_numpy())
            e = t.column("expected_loss") if "expected_loss" in t.column_names else None
            self.expected_loss.append(e.to_numpy() if e is not None and e.null_count == 0 else None)
            if holdout_ids:
                ids = self.example_id[-1]
                hit = np.flatnonzero(pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False))
                self.holdout_row.update(zip(ids.take(pa.array(hit)).to_pylist(), (hit + start).tolist()))
            start += t.num_rows
            progress.update(1)
        if stale:
            raise ValueError(f"sensitivities: shard(s) {stale[:10]} were computed from an older "
                             "representative_losses; re-materialize sensitivities for them")
        for col, values in params.items():
            if len(values) != 1:
                raise ValueError(
                    f"sensitivities: shards were computed with different {col} values {sorted(values)}; "
                    "re-materialize every shard of sensitivities with one configuration"
                )
        self.lam, self.z = params["lambda_"].pop(), params["z"].pop()
        self.counts = np.array([s.size for s in self.sensitivity], dtype=np.int64)
        self.sums = np.array([float(s.sum()) for s in self.sensitivity])
        self.cluster_counts = np.bincount(np.concatenate(self.cluster_id), minlength=k) if keys else np.zeros(k, int)
        self.n, self.total = int(self.counts.sum()), float(self.sums.sum())
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    def holdout_rows(self, holdout: pa.Table) -> np.ndarray:
        """The row number of each holdout example, in the holdout's order; raises if one is missing."""
        ids = holdout.column("example_id").to_pylist()
        missing = [i for i in ids if i not in self.holdout_row]
        if missing:
            raise ValueError(f"holdout_losses: example(s) {missing[:5]} are not in sensitivities; "
                             "re-materialize representative_losses")
        return np.array([self.holdout_row[i] for i in ids], dtype=np.int64)


def choose_alpha(configured: float | None, holdout: pa.Table | None, holdout_rule: str, totals: ShardTotals) -> tuple[float, str]:
    """The configured alpha, else one chosen on the labelled holdout, else the fixed default."""
    if configured is not None:
        return float(configured), "configured"
    if holdout is None:
        return DEFAULT_ALPHA, holdout_rule
    sp = np.concatenate(totals.sensitivity)[totals.holdout_rows(holdout)]
    return choose_alpha_from_totals(holdout.column("loss").to_numpy(), sp, totals.n, totals.total), holdout_rule


class Picked:
    """A subset assembled shard by shard: global row numbers, ids and clusters of the rows."""

    def __init__(self, parts: list[tuple[int, WeightedSample, pa.Table]], offsets: np.ndarray):
        parts = [(i, smp, t) for i, smp, t in parts if smp.indices.size]
        cat = lambda f: np.concatenate([f(i, smp) for i, smp, _ in parts])  # noqa: E731
        self.sample = WeightedSample(
            cat(lambda i, smp: smp.indices + offsets[i]), cat(lambda i, smp: smp.weights),
            cat(lambda i, smp: smp.probabilities), cat(lambda i, smp: smp.draws))
        self.ids = pa.concat_arrays([t.column("example_id").combine_chunks() for _, _, t in parts])
        self.clusters = np.concatenate([t.column("cluster_id").to_numpy() for _, _, t in parts]).astype(np.int64)


def picked_from_arrays(sample: WeightedSample, ids: pa.Array, cluster_ids: np.ndarray) -> "Picked":
    picked = Picked.__new__(Picked)
    picked.sample = sample
    picked.ids = ids.take(pa.array(sample.indices))
    picked.ids = picked.ids.combine_chunks() if isinstance(picked.ids, pa.ChunkedArray) else picked.ids
    picked.clusters = np.asarray(cluster_ids)[sample.indices].astype(np.int64)
    return picked


def _picked_rows(totals: ShardTotals, i: int, smp: WeightedSample) -> pa.Table:
    return pa.table({"example_id": totals.example_id[i].take(pa.array(smp.indices)),
                     "cluster_id": totals.cluster_id[i][smp.indices]})


def sharded_sensitivity_sample(totals: ShardTotals, m: int, alpha: float, seed: int) -> Picked:
    """m i.i.d. draws from p = alpha/n + (1 - alpha) s/sum(s), a shard at a time."""
    masses = alpha * totals.counts / totals.n + (1.0 - alpha) * totals.sums / totals.total
    draws = allocate_draws(masses, m, seed)
    parts = []
    for i in range(len(totals.keys)):
        if draws[i] == 0:
            continue
        p = alpha / totals.n + (1.0 - alpha) * totals.sensitivity[i] / totals.total
        smp = draws_within_shard(p, int(draws[i]), m, seed, i)
        parts.append((i, smp, _picked_rows(totals, i, smp)))
    return Picked(parts, totals.offsets)


def sharded_uniform_sample(totals: ShardTotals, m: int, seed: int) -> Picked:
    """A simple random sample of m of all n rows, a shard at a time."""
    rows = allocate_uniform(totals.counts, m, seed)
    parts = []
    for i in range(len(totals.keys)):
        smp = uniform_within_shard(int(totals.counts[i]), int(rows[i]), totals.n, m, seed, i)
        if smp.indices.size:
            parts.append((i, smp, _picked_rows(totals, i, smp)))
    return Picked(parts, totals.offsets)


def global_sample(totals: ShardTotals, m: int, alpha: float, seed: int, method: str) -> Picked:
    """Poisson sampling needs one scale c over all rows: drawn over every row's sensitivity, then
    split back into shards."""
    sample = sample_by_sensitivity(defensive_probabilities(np.concatenate(totals.sensitivity), alpha), m, seed,
                                   method)
    return _split_global(totals, sample)


def stratified_sample(store, totals: ShardTotals, m: int, configured: float | None, holdout: pa.Table | None,
                      holdout_rule: str, seed: int) -> tuple[Picked, float, str, str]:
    """Systematic sampling along the clusters over all rows: holds two floats and one cluster id
    per example (not the embeddings), and the centroids to group clusters when m < k. The
    sensitivity (the clusters', or the probe's expected loss where one was stored) and alpha:
    configured (the clusters'), else chosen on the labelled holdout, else alpha = 1
    (proportional: never worse than uniform). Returns (rows, alpha, rule, source)."""
    e = totals.expected_loss
    candidates = {CLUSTERS: np.concatenate(totals.sensitivity),
                  PROBE: np.concatenate(e) if all(x is not None for x in e) else None}
    c = np.concatenate(totals.cluster_id).astype(np.int64)
    centroids, _ = load_centroids(store)
    source = None
    if configured is not None:
        alpha, rule = float(configured), "configured"
    elif holdout is None:
        alpha, rule = 1.0, "proportional (no labelled holdout)"
    else:
        strata = strata_of(c, m, seed, centroids)
        source, alpha = choose_stratified_design(totals.holdout_rows(holdout), holdout.column("loss").to_numpy(),
                                                 candidates, strata, m, seed)
        rule = holdout_rule
    source = source or CLUSTERS
    sample = stratified_sensitivity_sample(candidates[source], c, m, seed, alpha=alpha, centroids=centroids)
    return _split_global(totals, sample), alpha, rule, source


def _split_global(totals: ShardTotals, sample: WeightedSample) -> Picked:
    parts = []
    for i in range(len(totals.keys)):
        lo, hi = totals.offsets[i], totals.offsets[i] + totals.counts[i]
        sel = (sample.indices >= lo) & (sample.indices < hi)
        if sel.any():
            smp = WeightedSample(sample.indices[sel] - lo, sample.weights[sel], sample.probabilities[sel],
                                 sample.draws[sel])
            parts.append((i, smp, _picked_rows(totals, i, smp)))
    return Picked(parts, totals.offsets)


def adaptive_sample(store, keys: list[str], m: int, seed: int, rounds: int, alpha: float | None
                    ) -> tuple[Picked, dict]:
    """The adaptive sampler needs every embedding and label in memory (a probe per round)."""
    sens = read_shards(store, "sensitivities", keys, columns=["example_id", "cluster_id"])
    ids, cluster_ids = sens.column("example_id"), sens.column("cluster_id").to_numpy().astype(np.int64)
    assign = read_shards(store, "cluster_assignments", keys, columns=["example_id", "sq_distance"])
    raw = read_shards(store, "raw_examples", keys, columns=["example_id", "label"])
    if raw.column("label").null_count:
        raise ValueError("subsets.sampling='adaptive': every example needs a label (the probe is fit on the pilot)")
    emb = read_shards(store, "embeddings", keys, columns=["example_id", "embedding"])
    if not (assign.column("example_id").equals(ids) and emb.column("example_id").equals(ids)):
        raise ValueError("subsets.sampling='adaptive': embeddings and assignments do not cover the same examples")
    fit = probe_fit_scorer(embedding_matrix(emb.column("embedding")), raw.column("label").to_pylist())
    sample, info = adaptive_sensitivity_sample(
        cluster_ids, assign.column("sq_distance").to_numpy(), m, seed, fit, rounds=rounds,
        alpha="auto" if alpha is None else alpha)
    return picked_from_arrays(sample, ids, cluster_ids), {
        "alpha": info.alpha, "rounds": rounds, "round_sizes": MetadataValue.json(list(info.round_sizes)),
        "lambda_adaptive": info.lam, "lambda_source": info.lambda_source, "model_inferences": info.model_inferences}


def draw_sensitivity_subset(store, totals: ShardTotals, m: int, sampling: str, configured_alpha: float | None,
                            holdout: pa.Table | None, holdout_rule: str, seed: int, rounds: int
                            ) -> tuple[Picked, float, str, dict]:
    """The sensitivity subset by the chosen sampler: (picked rows, alpha, how alpha was chosen, metadata)."""
    if sampling == "adaptive":
        picked, meta = adaptive_sample(store, totals.keys, m, seed, rounds, configured_alpha)
        return picked, meta.pop("alpha"), "auto (adaptive pilot)", meta
    if sampling == "stratified":
        picked, alpha, rule, source = stratified_sample(store, totals, m, configured_alpha, holdout, holdout_rule,
                                                        seed)
        return picked, alpha, rule, {"sensitivity_source": source}
    alpha, rule = choose_alpha(configured_alpha, holdout, holdout_rule, totals)
    defensive_probabilities(np.ones(1), alpha)  # validates alpha before any draw or write
    if alpha == 1.0 and sampling == "with_replacement":
        # Uniform after all: draw without replacement, which beats i.i.d. draws by sqrt((n-1)/(n-m)).
        return sharded_uniform_sample(totals, m, seed), alpha, rule, {}
    if sampling == "with_replacement":
        return sharded_sensitivity_sample(totals, m, alpha, seed), alpha, rule, {}
    return global_sample(totals, m, alpha, seed, sampling), alpha, rule, {}


def subset_rows(picked: Picked, m: int, seed: int, method: str, run: str) -> pa.Table:
    sample = picked.sample
    k = sample.indices.size
    return pa.table({
        "example_id": picked.ids,
        "weight": pa.array(sample.weights),
        "probability": pa.array(sample.probabilities),
        "draws": pa.array(sample.draws),
        "cluster_id": pa.array(picked.clusters.astype(np.int32)),
        "budget": pa.array(np.full(k, m, dtype=np.int64)),
        "seed": pa.array(np.full(k, seed, dtype=np.int64)),
        "sampling": pa.array([method] * k, pa.string()),
        "run": pa.array([run] * k, pa.string()),
    })


def subset_summary(picked: Picked, clusters_present: int) -> dict:
    sample = picked.sample
    w = sample.weights
    covered = np.unique(picked.clusters).size
    return {
        "rows": int(sample.indices.size),
        "draws": int(sample.draws.sum()),
        "weight_sum": float(w.sum()),
        "effective_sample_size": float(w.sum() ** 2 / np.sum(w**2 / np.maximum(sample.draws, 1))),
        "clusters_covered": f"{covered}/{clusters_present}",
        "max_weight": float(w.max()),
    }
