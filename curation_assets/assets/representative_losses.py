
from typing import Literal

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from resources.storage import CurationStore

from .. import lineage
from ..algorithms.robust_sensitivity import cluster_losses_from_members
from ..algorithms.scorers import representative_scorer, resolve_scorer
from ..graph import NEW_SHARDS_TAG
from ..plots import bars
from ..stored_inputs import (RowsByNumber, load_centroids, load_probe, registered_shards, scan_assignments,
                             shard_row_counts)


class RepresentativeLossConfig(Config):
    scorer: Literal["auto", "linear_probe", "constant", "function"] = Field(
        default="auto",
        description="auto: linear_probe (the `probe` asset's model) when every example has a label, else "
                    "constant; function: your own model through scorer_function.",
    )
    scorer_function: str | None = Field(
        default=None,
        description="'package.module:function' called with example_ids, texts, labels and embeddings of "
                    "the representatives, returning one loss each (scorer 'function').",
    )
    constant_loss: float = Field(default=1.0, gt=0, description="The loss every cluster gets under the constant scorer.")
    representatives_per_cluster: int = Field(
        default=1, ge=1, description="r: v_j is the mean loss over the r members nearest each centroid (k * r inferences).")


@asset(
    deps=["cluster_assignments", "raw_examples", "probe"],
    group_name="curation",
    kinds={"scikitlearn", "parquet"},
    tags={NEW_SHARDS_TAG: "kept"},  # stays current while the clusters do
    description="v_j: the loss at each cluster's representative (the member nearest its centroid). The probe's "
                "losses were computed with the assignments; only a user's scorer function reads vectors here.",
)
def representative_losses(context: AssetExecutionContext, config: RepresentativeLossConfig,
                          store: CurationStore) -> MaterializeResult:
    keys = registered_shards(context)
    c, centroids_version = load_centroids(store)
    k, r = c.shape[0], config.representatives_per_cluster
    n_rows = int(shard_row_counts(store, "cluster_assignments", keys).sum())
    if r > n_rows:
        raise ValueError(f"representative_losses.representatives_per_cluster: must be at most the number of "
                         f"examples ({n_rows}), got {r}")
    provenance = lineage.expected(store, "representative_losses", None, keys, config, run=context.run.run_id)
    probe = load_probe(store)
    scan = scan_assignments(store, keys, k, r, centroids_version, None if probe is None else probe.version,
                            log=context.log.info)
    members, member_dist, member_loss, sizes, sum_sq, counts, null_labels, distinct = scan
    n = int(counts.sum())
    reps = members[:, 0]  # the member nearest each centroid
    present = reps >= 0
    scorer_name = resolve_scorer(config.scorer, config.scorer_function, null_labels == 0 and len(distinct) >= 2)
    if scorer_name == "linear_probe" and null_labels:
        raise ValueError(f"representative_losses.scorer='linear_probe': {null_labels} example(s) have no label; "
                         "use scorer 'constant' or label every example")
    if scorer_name == "linear_probe" and probe is None:
        raise ValueError("representative_losses.scorer='linear_probe': no probe is stored (it needs two classes); "
                         "materialize centroids (its step fits the probe), or use scorer 'constant'")
    rows = RowsByNumber(store, keys, counts, members[members >= 0], with_text=scorer_name == "function",
                        with_vectors=scorer_name == "function")
    labels = np.asarray(rows.labels, dtype=object)
    if scorer_name == "linear_probe":  # the probe's losses, computed in the assignments' pass over the vectors
        known = dict(zip(members[members >= 0].tolist(), member_loss[members >= 0].tolist()))
        v, inferences = cluster_losses_from_members(members, lambda idx: np.array([known[i] for i in idx]))
        scorer_label, meta = "linear_probe", {"probe_version": probe.version}
    else:
        scorer = representative_scorer(scorer_name, rows.x, labels, ids=rows.ids, texts=rows.texts,
                                       constant_loss=config.constant_loss, scorer_function=config.scorer_function)
        v, inferences = cluster_losses_from_members(members, lambda idx: scorer.losses_at(rows.positions(idx)))
        scorer_label, meta = scorer.name, dict(scorer.info)
    losses = np.where(present, v, np.nan)

    probe_version = probe.version if scorer_name == "linear_probe" else None
    rep_pos = rows.positions(np.where(present, reps, rows.rows[0] if rows.rows.size else 0))
    rep_ids = [rows.ids[p] if ok else None for p, ok in zip(rep_pos, present)]
    rep_labels = [rows.labels[p] if ok else None for p, ok in zip(rep_pos, present)]
    version = context.run.run_id
    table = pa.table({
        "cluster_id": pa.array(np.arange(k), pa.int32()),
        "size": pa.array(sizes.astype(np.int64)),
        # k-means cost per cluster: lets each shard of `sensitivities` compute the global,
        # balanced lambda (z = 2) in O(k) instead of reading every shard's assignments.
        "sum_sq_distance": pa.array(sum_sq),
        "representative_id": pa.array(rep_ids, pa.string()),
        "representative_label": pa.array(rep_labels, pa.string()),
        "representative_sq_distance": pa.array([float(d) if ok else None for d, ok in zip(member_dist[:, 0], present)],
                                               pa.float64()),
        "loss": pa.array([float(v) if np.isfinite(v) else None for v in losses], pa.float64()),
        "scorer": pa.array([scorer_label] * k, pa.string()),
        "centroids_version": pa.array([centroids_version] * k, pa.string()),
        # The probe whose losses these are (null for other scorers): sensitivities takes its expected
        # loss, and subsets its holdout, only from this one.
        "probe_version": pa.array([probe_version] * k, pa.string()),
        "version": pa.array([version] * k, pa.string()),
    })
    store.write("representative_losses", table, provenance=provenance)
    finite = losses[present]
    meta.update({
        "dagster/row_count": k,
        "n_examples": n,
        "kmeans_cost": float(sum_sq.sum()),
        "kmeans_cost_per_point": float(sum_sq.sum() / n),
        "scorer": scorer_label,
        "model_inferences": inferences,
        "representatives_per_cluster": config.representatives_per_cluster,
        "empty_clusters": int((~present).sum()),
        "largest_cluster_share": float(sizes.max() / n),
        "mean_loss": float(finite.mean()),
        "max_loss": float(finite.max()),
        "version": version,
        "loss_by_cluster": bars(np.arange(k), np.nan_to_num(losses), "loss at each cluster's representative", "loss",
                                "cluster"),
    })
    return MaterializeResult(metadata=meta)
