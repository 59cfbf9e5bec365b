"""Asset checks on what feeds training: they run with the materialisation and show in the UI."""


from math import exp, lgamma

import numpy as np
import pyarrow as pa
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from resources.drift_policy import DriftPolicy
from resources.storage import CurationStore

from . import lineage
from .arrays import embedding_matrix
from .plots import markdown_table


@asset_check(asset="centroids", description="Every cluster keeps at least one example.")
def centroids_have_no_empty_clusters(store: CurationStore) -> AssetCheckResult:
    t = store.query(
        "SELECT c.cluster_id, count(a.example_id) AS members FROM centroids c "
        "LEFT JOIN cluster_assignments a USING (cluster_id) GROUP BY 1"
    ) if store.exists("cluster_assignments") else None
    if t is None:
        return AssetCheckResult(passed=True, metadata={"note": "no assignments yet"})
    members = np.asarray(t.column("members").to_numpy())
    return AssetCheckResult(
        passed=bool((members > 0).all()),
        severity=AssetCheckSeverity.WARN,
        metadata={"empty_clusters": int((members == 0).sum()), "clusters": int(members.size)},
    )


@asset_check(asset="sensitivity_subset", blocking=True,
             description="Weights are positive and sum to about n, so weighted sums estimate full-data sums.")
def sensitivity_subset_weights_are_sane(store: CurationStore) -> AssetCheckResult:
    w = store.read_latest_version("sensitivity_subset").column("weight").to_numpy()
    n = store.query("SELECT count(*) AS n FROM raw_examples").column("n")[0].as_py()
    ratio = float(w.sum() / n)
    # With replacement the sum is random with mean n; a ratio far from 1 means broken weights.
    ok = bool((w > 0).all() and np.isfinite(w).all() and 0.5 < ratio < 2.0)
    return AssetCheckResult(passed=ok, metadata={"weight_sum_over_n": ratio, "min_weight": float(w.min())})


@asset_check(asset="sensitivities", description="Sampling probabilities are finite and positive (p = s / sum(s)).")
def sensitivity_probabilities_are_valid(store: CurationStore) -> AssetCheckResult:
    # On the stored s alone (one streamed aggregate): p_i = s_i / sum(s) is valid iff every s_i
    # is finite and > 0, and this avoids the view's window over every row for each shard.
    t = store.query("SELECT min(sensitivity) AS lo, sum(sensitivity) AS total, "
                    "count(*) FILTER (WHERE NOT isfinite(sensitivity)) AS bad FROM sensitivities")
    lo, total, bad = (t.column(c)[0].as_py() for c in ("lo", "total", "bad"))
    ok = bool(bad == 0 and lo is not None and lo > 0 and total > 0)
    return AssetCheckResult(passed=ok, metadata={"min_probability": (lo / total) if ok else lo,
                                                 "non_finite": int(bad), "sensitivity_total": total})


SENSITIVITY_METHODS = ("sensitivity_stratified", "sensitivity", "sensitivity_defensive", "sensitivity_auto",
                       "sensitivity_adaptive")


@asset_check(asset="subset_evaluation",
             description="Warns when a sensitivity sampler estimates the mean loss worse than uniform sampling.")
def sensitivity_estimates_beat_uniform(store: CurationStore) -> AssetCheckResult:
    if not store.exists("subset_evaluation"):
        return AssetCheckResult(passed=True, metadata={"note": "no evaluation stored (unlabelled data)"})
    t = store.query(
        "SELECT budget_fraction, method, median(value) AS err FROM subset_evaluation "
        "WHERE metric = 'estimate_rel_error' GROUP BY ALL"
    ).to_pylist()
    err = {(r["budget_fraction"], r["method"]): r["err"] for r in t}
    ratios, worse = {}, []
    for (budget, method), value in sorted(err.items()):
        if method in SENSITIVITY_METHODS and (budget, "uniform") in err:
            ratio = value / err[(budget, "uniform")]
            ratios[f"{method} at {budget:.0%}"] = round(ratio, 3)
            if ratio > 1.0:
                worse.append(f"{method} at {budget:.0%}")
    return AssetCheckResult(
        passed=not worse, severity=AssetCheckSeverity.WARN,
        metadata={"median_error_over_uniform": MetadataValue.json(ratios), "worse_than_uniform": ", ".join(worse) or "none"},
    )


@asset_check(asset="cluster_assignments",
             description="Warns when a shard sits farther from the centroids, or spreads over the clusters "
                         "differently, than the data they were fit on (thresholds: the `drift` resource).")
def cluster_assignments_drift(store: CurationStore, drift: DriftPolicy) -> AssetCheckResult:
    version = store.read("centroids", columns=["version"]).column("version")[0].as_py()
    rows = store.query("SELECT * FROM assignment_drift WHERE centroids_version = ? ORDER BY shard",
                       [version]).to_pylist() if store.exists("assignment_drift") else []
    verdicts = {r["shard"]: drift.verdict(r["cost_ratio"], r["excess_share_shift"], r["examples"]) for r in rows}
    flagged = [k for k, v in verdicts.items() if v != "ok"]
    table = markdown_table(
        ["shard", "examples", "cost ratio", "share shift", "noise", "verdict"],
        [[r["shard"], r["examples"], round(r["cost_ratio"], 3), round(r["share_shift"], 3),
          round(r["share_shift_noise"], 3), verdicts[r["shard"]]] for r in rows])
    return AssetCheckResult(
        passed=not flagged, severity=AssetCheckSeverity.WARN,
        metadata={"shards_checked": len(rows), "drifted_shards": ", ".join(flagged) or "none",
                  "refit_requested": any(v == "refit" for v in verdicts.values()),
                  "max_cost_ratio": max((r["cost_ratio"] for r in rows), default=0.0),
                  "drift": MetadataValue.md(table)},
    )


EMBEDDINGS_OK = "coalesce(list_bool_and(list_transform(embedding, lambda x: coalesce(isfinite(x), false))), false)"


def validated_when_loaded(store: CurationStore, key: str) -> bool:
    """The shard's vectors are the source's own, written (or referred to) with the provenance
    admission gave them: ExampleSource refused null, NaN/inf and ragged vectors when it loaded the
    shard, so reading them again would check what was already checked. A file rewritten without
    that provenance (or an embedder's output) is read."""
    return (store.provenance("embeddings", key) or {}).get("embedder") == lineage.embedder_identity(None, True)


def stored_vector_report(store: CurationStore, scope: list[str] | None) -> tuple[dict, int, int]:
    """({dimension: rows} over every stored shard, vectors with NaN/inf or null, rows read): the
    vectors of the shards in `scope` only (less those `validated_when_loaded`), dimensions from
    every shard's footer; every row if None."""
    if scope is None:
        rows = store.query(
            f"SELECT len(embedding) AS dimension, count(*) AS n, count(*) FILTER (WHERE NOT {EMBEDDINGS_OK}) AS bad "
            "FROM embeddings GROUP BY 1 ORDER BY 2 DESC, 1"
        ).to_pylist()
        dims = {r["dimension"]: r["n"] for r in rows}
        return dims, sum(r["bad"] for r in rows), sum(dims.values())
    dims = {}
    for key in store.partitions("embeddings"):
        t = store.schema("embeddings", key).field("embedding").type
        if pa.types.is_fixed_size_list(t):
            d = t.list_size
        else:  # a variable-size list: its length is in the data
            d = int(embedding_matrix(store.read("embeddings", [key], ["embedding"]).column("embedding")).shape[1])
        dims[d] = dims.get(d, 0) + store.row_count("embeddings", key)
    non_finite = checked = 0
    for key in (k for k in scope if not validated_when_loaded(store, k)):  # a shard at a time
        col = store.read("embeddings", [key], ["embedding"]).column("embedding")
        valid = col.drop_null() if col.null_count else col
        non_finite += col.null_count + int((~np.isfinite(embedding_matrix(valid)).all(axis=1)).sum())
        checked += len(col)
    return dims, non_finite, checked


@asset_check(asset="embeddings", blocking=True,
             description="Blocks downstream when a stored vector holds NaN/inf (or is null) or the vectors differ "
                         "in dimension: k-means, distances and every weight built on them would be garbage. In a "
                         "shard's run it reads that shard's vectors and every shard's dimension from the file "
                         "footers (linear in the shards over a backfill); called alone it scans every stored row. "
                         "A shard of the source's own vectors was validated when it was loaded and is not "
                         "read again (rows_validated_when_loaded).")
def embeddings_are_finite_and_of_one_dimension(context: AssetCheckExecutionContext,
                                               store: CurationStore) -> AssetCheckResult:
    # The shards this run wrote; called alone (no partition), every stored row.
    scope = list(context.partition_keys) if context.has_partition_key or context.has_partition_key_range else None
    dims, non_finite, checked = stored_vector_report(store, scope)
    loaded = sum(store.row_count("embeddings", k) for k in scope or [] if validated_when_loaded(store, k))
    return AssetCheckResult(
        passed=bool(dims) and non_finite == 0 and len(dims) == 1 and None not in dims,
        metadata={"rows_checked": checked, "rows_validated_when_loaded": loaded, "non_finite_vectors": int(non_finite),
                  "scope": f"shard(s) {', '.join(scope[:5])}{' ...' if len(scope) > 5 else ''} (dimensions: "
                           "every shard)" if scope else "every stored row",
                  "dimensions": ", ".join(f"{d} ({n} rows)" for d, n in dims.items()) or "none stored"},
    )


MAX_CLUSTER_SHARE = 0.5


@asset_check(asset="cluster_assignments",
             description=f"Warns when one cluster holds more than MAX_CLUSTER_SHARE ({MAX_CLUSTER_SHARE:.0%}) of "
                         "the examples: a collapsed clustering makes per-cluster sensitivities uninformative "
                         "and the subset close to uniform (or worse).")
def largest_cluster_share_is_bounded(store: CurationStore) -> AssetCheckResult:
    top = store.query(
        "SELECT arg_max(cluster_id, n) AS cluster_id, max(n) AS largest, sum(n)::BIGINT AS total, count(*) AS k "
        "FROM (SELECT cluster_id, count(*) AS n FROM cluster_assignments GROUP BY 1)"
    ).to_pylist()[0]
    share = float(top["largest"] / top["total"])
    return AssetCheckResult(
        passed=share <= MAX_CLUSTER_SHARE, severity=AssetCheckSeverity.WARN,
        metadata={"largest_cluster": int(top["cluster_id"]), "largest_share": round(share, 4),
                  "max_share": MAX_CLUSTER_SHARE, "clusters": int(top["k"]), "examples": int(top["total"])},
    )


POISSON_SAMPLINGS = ("poisson", "poisson_hajek")
SIZE_SIGMAS = 5.0


def _subset_summary(store: CurationStore) -> dict:
    return store.query(
        "SELECT count(*) AS rows, sum(draws)::BIGINT AS draws, min(draws) AS min_draws, max(draws) AS max_draws, "
        "min(budget) AS budget, count(DISTINCT budget) AS budgets, any_value(sampling) AS sampling, "
        "count(DISTINCT sampling) AS samplings, count(DISTINCT example_id) AS distinct_ids FROM sensitivity_subset"
    ).to_pylist()[0]


@asset_check(asset="sensitivity_subset", blocking=True,
             description="Blocks downstream when the subset's size is not what was asked: with replacement (and "
                         "adaptive) the draws sum to the budget m exactly; Poisson sampling's size is random "
                         f"with mean m and variance sum pi(1 - pi) <= m, so it must lie within {SIZE_SIGMAS:g} "
                         "sqrt(m) of m. Also: one budget and sampling per version, no repeated ids, draws >= 1.")
def subset_size_is_as_asked(store: CurationStore) -> AssetCheckResult:
    s = _subset_summary(store)
    if not s["rows"]:
        return AssetCheckResult(passed=False, metadata={"rows": 0, "problem": "the subset is empty"})
    m, draws, sampling = int(s["budget"]), int(s["draws"]), s["sampling"]
    problems = []
    if s["budgets"] != 1 or s["samplings"] != 1:
        problems.append("rows disagree on budget or sampling")
    if s["distinct_ids"] != s["rows"]:
        problems.append(f"{s['rows'] - s['distinct_ids']} repeated example ids")
    if s["min_draws"] < 1:
        problems.append("a row with draws < 1")
    if sampling in POISSON_SAMPLINGS:
        bound = SIZE_SIGMAS * float(np.sqrt(max(m, 1)))
        if s["max_draws"] != 1:
            problems.append("Poisson rows are drawn once each")
        if abs(s["rows"] - m) > bound:
            problems.append(f"{s['rows']} rows is more than {bound:.1f} from the budget {m}")
    elif draws != m:
        bound = 0.0
        problems.append(f"draws sum to {draws}, budget is {m}")
    else:
        bound = 0.0
    return AssetCheckResult(
        passed=not problems,
        metadata={"budget": m, "draws": draws, "rows": int(s["rows"]), "sampling": sampling,
                  "allowed_deviation": round(bound, 2), "problem": "; ".join(problems) or "none"},
    )


COVERAGE_TOLERANCE = 0.05


def _uniform_hit_probability(n: int, n_j: int, r: int) -> float:
    """P(a uniform r-of-n sample without replacement hits a cluster of n_j): 1 - C(n - n_j, r) / C(n, r),
    in log space so large n neither overflows nor loses the small miss probabilities."""
    if n - n_j < r:
        return 1.0
    return 1.0 - exp(lgamma(n - n_j + 1) - lgamma(n - n_j - r + 1) - lgamma(n + 1) + lgamma(n - r + 1))


@asset_check(asset="sensitivity_subset",
             description="Warns when the subset reaches fewer clusters than a uniform sample of as many rows "
                         "would: expected share covered sum_j (1 - C(n - n_j, r) / C(n, r)) / k over the k "
                         "non-empty clusters, minus max(COVERAGE_TOLERANCE, two standard deviations of a "
                         "uniform sample's own coverage, clusters taken as independent).")
def subset_covers_clusters(store: CurationStore) -> AssetCheckResult:
    sizes = store.query("SELECT cluster_id, count(*) AS n FROM cluster_assignments GROUP BY 1").to_pydict()
    present = dict(zip(sizes["cluster_id"], sizes["n"]))
    chosen = store.query("SELECT count(*) AS r, list(DISTINCT cluster_id) AS ids FROM sensitivity_subset").to_pylist()[0]
    r, covered = int(chosen["r"]), len(set(chosen["ids"] or []) & set(present))
    n = sum(present.values())
    q = np.array([_uniform_hit_probability(n, n_j, min(r, n)) for n_j in present.values()])
    k = q.size
    expected = float(q.mean())
    tolerance = max(COVERAGE_TOLERANCE, 2.0 * float(np.sqrt(np.sum(q * (1 - q)))) / k)
    share = covered / k
    return AssetCheckResult(
        passed=share >= expected - tolerance, severity=AssetCheckSeverity.WARN,
        metadata={"clusters_covered": covered, "clusters_present": k, "share_covered": round(share, 4),
                  "expected_share_uniform": round(expected, 4), "tolerance": round(tolerance, 4),
                  "subset_rows": r},
    )


all_checks = [cluster_assignments_drift, sensitivity_estimates_beat_uniform, centroids_have_no_empty_clusters, sensitivity_subset_weights_are_sane,
              sensitivity_probabilities_are_valid, embeddings_are_finite_and_of_one_dimension,
              largest_cluster_share_is_bounded, subset_size_is_as_asked, subset_covers_clusters]
