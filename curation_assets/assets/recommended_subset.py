"""The subset to train on: the method that won the held-out evaluation on this data, else the default.

`subset_evaluation` scores every method on a held-out split of the user's own examples. This asset
reads those scores at the evaluated budget nearest the subsets' budget, for the user's purpose
(`train`: test accuracy, averaged over the downstream models; `estimate`: relative error of the
mean-loss estimate), and lets a method displace the default only when its paired gain clears 0
with family-wise confidence. The default is `sensitivity_subset`, or for training below two picks
per cluster `kmeans_centroids_subset` (algorithms/recommendation.py says why). The chosen stored
subset is copied as a new version, with the evidence in the metadata. Without a current evaluation
(unlabelled data, or `--no-evaluation`) it is the default, and the metadata says so.
"""

from typing import Literal

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from resources.storage import CurationStore

from .. import lineage
from ..algorithms.recommendation import TYPICAL_BELOW, Recommendation, default_method, recommend
from ..arrays import subset_rows
from ..graph import STORED_TAG
from ..plots import markdown_table
from ..sharded_subsets import BASELINE_ASSETS
from ..stored_inputs import load_centroids, registered_shards, shard_row_counts, version_name

DEFAULT_SUBSET = "sensitivity_subset"
# The evaluation's name of the method behind each stored subset; sensitivity_subset's depends on
# its sampling (poisson variants have no evaluated counterpart).
EVALUATED_AS = {"uniform_subset": "uniform", "balanced_subset": "hierarchical_balanced",
                **{asset: name for name, asset in BASELINE_ASSETS.items()}}
SAMPLING_EVALUATED_AS = {"stratified": "sensitivity_stratified", "with_replacement": "sensitivity_auto",
                         "adaptive": "sensitivity_adaptive"}


class RecommendationConfig(Config):
    purpose: Literal["train", "estimate"] = Field(
        default="train",
        description="train: the subset whose models scored best on held-out data; estimate: the one whose "
                    "weighted mean loss was closest to the full data's.")
    confidence: float = Field(
        default=0.9, ge=0.5, lt=1.0,
        description="Family-wise confidence a method needs to displace the default (Bonferroni over the methods).")


def evaluation_is_current(store: CurationStore) -> bool:
    """The stored evaluation was made for the subsets stored now (same data, same budget)."""
    prov = store.provenance("subset_evaluation") if store.exists("subset_evaluation") else None
    return bool(prov) and (prov.get("inputs") or {}).get("subsets") == lineage.token(store, "subsets")


def evaluated_scores(table: pa.Table, fraction: float, purpose: str, methods: set[str]):
    """({method: per-seed scores, higher better}, evaluated budget, standard error of a test score)."""
    rows = table.to_pylist()
    budgets = sorted({r["budget_fraction"] for r in rows if r["method"] != "full"})
    budget = min(budgets, key=lambda b: abs(np.log(b / fraction)))
    metric = "accuracy" if purpose == "train" else "estimate_rel_error"
    picked = [r for r in rows if r["budget_fraction"] == budget and r["metric"] == metric and r["method"] in methods]
    scores = {}
    for method in sorted({r["method"] for r in picked}):
        by_seed: dict[int, list[float]] = {}
        for r in picked:
            if r["method"] == method:
                by_seed.setdefault(r["seed"], []).append(r["value"])
        seeds = sorted(by_seed)
        values = np.array([np.mean(by_seed[s]) for s in seeds])
        scores[method] = values if purpose == "train" else -values
    test_se = 0.0
    if purpose == "train" and "test_size" in table.column_names and scores:
        p = float(np.mean(next(iter(scores.values()))))
        test_se = float(np.sqrt(max(p * (1 - p), 0.0) / max(1, rows[0]["test_size"])))
    return scores, budget, test_se


def _evidence_table(rec: Recommendation, purpose: str) -> str:
    unit = "accuracy" if purpose == "train" else "-relative error"
    return markdown_table(
        ["method", f"mean {unit}", "gain over default", "interval", "verdict"],
        [[e.method, e.mean, e.gain, f"{e.low:+.4f} to {e.high:+.4f}",
          "default" if e.method == rec.default else "beats default" if e.beats_default else "not shown better"]
         for e in rec.evidence])


@asset(
    deps=["sensitivity_subset", "uniform_subset", "balanced_subset", *BASELINE_ASSETS.values(), "subset_evaluation",
          "raw_examples"],
    group_name="delivery",
    kinds={"parquet"},
    tags={STORED_TAG: "versioned"},
    description="The subset to train on: the method that beat the default in this data's held-out evaluation "
                "beyond its interval, else sensitivity_subset; the evidence is in the metadata.",
)
def recommended_subset(context: AssetExecutionContext, config: RecommendationConfig, store: CurationStore):
    keys = registered_shards(context)
    provenance = lineage.expected(store, "recommended_subset", None, keys, config, run=context.run.run_id)
    reference = store.read_latest_version(DEFAULT_SUBSET)
    first = reference.slice(0, 1).to_pylist()[0]
    m, sampling = int(first["budget"]), first.get("sampling")
    n = int(shard_row_counts(store, "raw_examples", keys).sum())
    stored = {DEFAULT_SUBSET: SAMPLING_EVALUATED_AS.get(sampling),
              **{a: e for a, e in EVALUATED_AS.items() if store.has_versions(a)}}
    k = int(load_centroids(store)[0].shape[0])
    wanted = default_method(config.purpose, m, k)
    chosen = next((a for a, e in stored.items() if e == wanted), DEFAULT_SUBSET)
    default = stored[chosen]
    meta = {"purpose": config.purpose, "budget": m, "clusters": k, "default": chosen}
    why_default = (f"{chosen}: the default for {config.purpose} at m = {m}"
                   + (f" < {TYPICAL_BELOW} x {k} clusters" if wanted == "kmeans_centroids" and chosen != DEFAULT_SUBSET else ""))
    reason = None
    if default is None:
        reason = f"{why_default}; its sampling {sampling!r} is not among the evaluated methods"
    elif not evaluation_is_current(store):
        reason = (f"{why_default}; no held-out evaluation of the current subsets (unlabelled data, or the run "
                  "skipped subset_evaluation)")
    else:
        scores, budget, test_se = evaluated_scores(store.read("subset_evaluation"), m / n, config.purpose,
                                                   {e for e in stored.values() if e})
        if default not in scores:
            reason = f"the evaluation did not score the default method {default!r}"
        else:
            rec = recommend(scores, default, confidence=config.confidence, test_se=test_se)
            chosen = next(a for a, e in stored.items() if e == rec.method)
            reason = f"{why_default}; {rec.reason}"
            meta.update({"evaluated_budget": budget, "evidence": MetadataValue.md(_evidence_table(rec, config.purpose)),
                         "test_standard_error": test_se})
    version = store.latest_version(chosen)
    table = store.read_version(chosen, version)
    rows, n_rows = subset_rows(table).drop_columns(["pos"]), table.num_rows
    for name, values in {
        "budget": pa.array(np.full(n_rows, m, dtype=np.int64)),
        "method": pa.array([stored[chosen] or sampling] * n_rows, pa.string()),
        "source_subset": pa.array([chosen] * n_rows, pa.string()),
        "source_version": pa.array([version] * n_rows, pa.string()),
        "reason": pa.array([reason] * n_rows, pa.string()),
        "run": pa.array([context.run.run_id] * n_rows, pa.string()),
    }.items():
        rows = rows.append_column(name, values)
    store.write_version("recommended_subset", rows, version_name(context.run.run_id), provenance=provenance)
    context.log.info(f"recommended_subset: {chosen} ({reason})")
    return MaterializeResult(metadata={
        "dagster/row_count": rows.num_rows, "source_subset": chosen, "method": stored[chosen] or sampling,
        "reason": reason, "source_version": version, **meta})
