"""Asset checks on what feeds training: they run with the materialisation and show in the UI."""


import numpy as np
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from resources.drift_policy import DriftPolicy
from resources.storage import CurationStore

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


SENSITIVITY_METHODS = ("sensitivity", "sensitivity_defensive", "sensitivity_auto", "sensitivity_adaptive")


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


all_checks = [cluster_assignments_drift, sensitivity_estimates_beat_uniform, centroids_have_no_empty_clusters, sensitivity_subset_weights_are_sane,
              sensitivity_probabilities_are_valid]
