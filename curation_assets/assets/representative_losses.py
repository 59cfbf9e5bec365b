
from typing import Literal

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from resources.storage import CurationStore

from ..algorithms.representatives import nearest_members_per_cluster
from ..algorithms.robust_sensitivity import cluster_losses_from_members
from ..algorithms.scorers import (
    ConstantScorer,
    LinearProbeScorer,
    check_losses,
    load_scorer_function,
    out_of_fold_losses,
)
from .. import lineage
from ..graph import NEW_SHARDS_TAG
from ..arrays import embedding_matrix
from ..plots import bars
from ..progress import Progress
from .cluster_assignments import load_centroids
from .shard_scope import gather_rows, registered_shards, require_partitions, shard_row_counts, split_rows


class RepresentativeLossConfig(Config):
    scorer: Literal["auto", "linear_probe", "constant", "function"] = Field(
        default="auto",
        description="auto: linear_probe when every example has a label, else constant; function: "
                    "your own model through scorer_function.",
    )
    scorer_function: str | None = Field(
        default=None,
        description="'package.module:function' called with example_ids, texts, labels and embeddings of "
                    "the representatives, returning one loss each (scorer 'function').",
    )
    pilot_size: int | None = Field(
        default=None, description="Labelled pilot examples the probe is fit on; default 5% of n, in [100, 20,000]."
    )
    seed: int = Field(default=0, description="Seeds the pilot sample.")
    probe_C: float = Field(default=1.0, description="Inverse L2 regularisation of the logistic-regression probe.")
    constant_loss: float = Field(default=1.0, description="The loss every cluster gets under the constant scorer.")
    representatives_per_cluster: int = Field(
        default=1, description="r: v_j is the mean loss over the r members nearest each centroid (k * r inferences).")


MAX_DEFAULT_PILOT = 20_000


def default_pilot_size(n: int) -> int:
    """5% of n, at least 100 and at most 20,000: a linear probe's accuracy has long stopped
    improving by then, and the pilot's embeddings must fit in memory at any n."""
    return min(n, max(100, min(MAX_DEFAULT_PILOT, int(np.ceil(0.05 * n)))))


class RowsByNumber:
    """Columns of chosen rows (global row numbers over the shards in order), read shard by shard."""

    def __init__(self, store: CurationStore, keys: list[str], counts: np.ndarray, rows, with_text: bool):
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        local = split_rows(self.rows, counts)
        cols = ["example_id", "label"] + (["text"] if with_text else [])
        raw = gather_rows(store, "raw_examples", keys, local, cols)
        self.ids = raw.column("example_id").to_pylist()
        self.labels = raw.column("label").to_pylist()
        self.texts = raw.column("text").to_pylist() if with_text else None
        self.x = embedding_matrix(gather_rows(store, "embeddings", keys, local, ["embedding"]).column("embedding"))

    def positions(self, rows) -> np.ndarray:
        return np.searchsorted(self.rows, np.asarray(rows, dtype=np.int64))


def scan_assignments(store: CurationStore, keys: list[str], k: int, r: int, centroids_version: str,
                     log=lambda _: None):
    """One pass over the shards: cluster sizes and costs, the r members nearest each centroid
    (as global row numbers), and label statistics. Memory holds one shard at a time."""
    require_partitions(store, "cluster_assignments", keys)
    sizes, sum_sq = np.zeros(k, dtype=np.int64), np.zeros(k)
    cand_cluster, cand_dist, cand_row = [], [], []
    counts, stale, null_labels, distinct = [], [], 0, set()
    offset = 0
    progress = Progress(len(keys), "representative_losses: scanning assignments", log, unit="shards")
    for key in keys:
        a = store.read("cluster_assignments", [key],
                       columns=["example_id", "cluster_id", "sq_distance", "centroids_version"])
        if set(a.column("centroids_version").unique().to_pylist()) != {centroids_version}:
            stale.append(key)
        raw = store.read("raw_examples", [key], columns=["example_id", "label"])
        emb_ids = store.read("embeddings", [key], columns=["example_id"]).column("example_id")
        if not (a.column("example_id").equals(raw.column("example_id")) and a.column("example_id").equals(emb_ids)):
            raise ValueError(
                f"raw_examples, embeddings and cluster_assignments hold different examples in shard {key!r}; "
                "re-materialize embeddings and cluster_assignments for it"
            )
        cid = a.column("cluster_id").to_numpy().astype(np.int64)
        d2 = a.column("sq_distance").to_numpy()
        sizes += np.bincount(cid, minlength=k)
        sum_sq += np.bincount(cid, weights=d2, minlength=k)
        local = nearest_members_per_cluster(cid, d2, k, r)
        j, rank = np.nonzero(local >= 0)
        rows = local[j, rank]
        cand_cluster.append(j)
        cand_dist.append(d2[rows].astype(np.float64))
        cand_row.append(rows + offset)
        labels = raw.column("label")
        null_labels += labels.null_count
        if len(distinct) < 2:
            distinct.update(x for x in labels.unique().to_pylist() if x is not None)
        counts.append(a.num_rows)
        offset += a.num_rows
        progress.update(1)
    if stale:
        raise ValueError(f"cluster_assignments: shard(s) {stale[:10]} were computed from older centroids; "
                         "re-materialize cluster_assignments for them")
    cluster, dist, row = (np.concatenate(v) for v in (cand_cluster, cand_dist, cand_row))
    order = np.lexsort((row, dist, cluster))  # by (cluster, distance, row): ties to the earliest row
    cluster, dist, row = cluster[order], dist[order], row[order]
    starts = np.searchsorted(cluster, np.arange(k))
    rank = np.arange(cluster.size) - starts[cluster]
    take = rank < r
    members = np.full((k, r), -1, dtype=np.int64)
    member_dist = np.full((k, r), np.nan)
    members[cluster[take], rank[take]] = row[take]
    member_dist[cluster[take], rank[take]] = dist[take]
    return members, member_dist, sizes, sum_sq, np.array(counts, dtype=np.int64), null_labels, distinct


@asset(
    deps=["cluster_assignments", "raw_examples", "embeddings"],
    group_name="curation",
    kinds={"scikitlearn", "parquet"},
    tags={NEW_SHARDS_TAG: "kept"},  # stays current while the clusters do
    description="v_j: the loss at each cluster's representative (the member nearest its centroid).",
)
def representative_losses(context: AssetExecutionContext, config: RepresentativeLossConfig,
                          store: CurationStore) -> MaterializeResult:
    keys = registered_shards(context)
    c, centroids_version = load_centroids(store)
    k = c.shape[0]
    if config.representatives_per_cluster < 1:
        raise ValueError(f"representative_losses.representatives_per_cluster: must be at least 1, "
                         f"got {config.representatives_per_cluster}")
    n_rows = int(shard_row_counts(store, "cluster_assignments", keys).sum())
    if config.representatives_per_cluster > n_rows:
        raise ValueError(f"representative_losses.representatives_per_cluster: must be at most the number of "
                         f"examples ({n_rows}), got {config.representatives_per_cluster}")
    provenance = lineage.expected(store, "representative_losses", None, keys, config, run=context.run.run_id)
    members, member_dist, sizes, sum_sq, counts, null_labels, distinct = scan_assignments(
        store, keys, k, config.representatives_per_cluster, centroids_version, log=context.log.info)
    n = int(counts.sum())
    reps = members[:, 0]  # the member nearest each centroid
    present = reps >= 0

    scorer_name = config.scorer
    has_labels = null_labels == 0 and len(distinct) >= 2
    if scorer_name == "auto":
        scorer_name = "function" if config.scorer_function else ("linear_probe" if has_labels else "constant")
    meta = {}
    losses = np.full(k, np.nan)
    pilot_table = None
    needed = [members[members >= 0]]
    pilot = None
    if scorer_name == "linear_probe":
        if null_labels:
            raise ValueError(
                f"representative_losses.scorer='linear_probe': {null_labels} example(s) have no label; "
                "use scorer 'constant' or label every example"
            )
        pilot_size = config.pilot_size if config.pilot_size is not None else default_pilot_size(n)
        if not 2 <= pilot_size <= n:
            raise ValueError(f"representative_losses.pilot_size: must be in [2, {n}], got {pilot_size}")
        rng = np.random.default_rng(config.seed)
        pilot = np.sort(rng.choice(n, size=pilot_size, replace=False))
        needed.append(pilot)
    elif scorer_name == "function" and not config.scorer_function:
        raise ValueError("representative_losses.scorer_function: scorer 'function' needs 'package.module:function'")
    rows = RowsByNumber(store, keys, counts, np.concatenate(needed), with_text=scorer_name == "function")
    y_all = np.asarray(rows.labels, dtype=object)
    if scorer_name == "linear_probe":
        at = rows.positions(pilot)
        x, y = rows.x[at], y_all[at]
        scorer = LinearProbeScorer(C=config.probe_C).fit(x, y)

        def loss_of(idx):
            pos = rows.positions(idx)
            return scorer.losses(rows.x[pos], y_all[pos])
        # Out-of-fold losses on the pilot let `subsets` choose the defensive alpha from data.
        pilot_table = pa.table({
            "example_id": pa.array([rows.ids[i] for i in at], pa.string()),
            "loss": pa.array(out_of_fold_losses(x, y, seed=config.seed, C=config.probe_C)),
        })
        rep_pos = rows.positions(reps[present])
        meta.update({
            "pilot_size": int(pilot.size),
            "pilot_seed": config.seed,
            "probe_train_accuracy": float(scorer.model.score(x, y)),
            "probe_accuracy_at_representatives": float(scorer.model.score(rows.x[rep_pos], y_all[rep_pos])),
        })
    elif scorer_name == "function":
        fn = load_scorer_function(config.scorer_function)

        def loss_of(idx):
            pos = rows.positions(idx)
            return check_losses(
                fn(example_ids=[rows.ids[p] for p in pos], texts=[rows.texts[p] for p in pos],
                   labels=[rows.labels[p] for p in pos], embeddings=rows.x[pos]),
                len(pos), "representative_losses.scorer_function",
            )
        meta["scorer_function"] = config.scorer_function
    else:
        constant = ConstantScorer(config.constant_loss)
        loss_of = lambda idx: constant.losses(np.empty((len(idx), 1)))  # noqa: E731
        meta["constant_loss"] = config.constant_loss
    v, inferences = cluster_losses_from_members(members, loss_of)
    losses[present] = v[present]

    scorer_label = f"function:{config.scorer_function}" if scorer_name == "function" else scorer_name
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
        "version": pa.array([version] * k, pa.string()),
    })
    # The side table first: the file carrying the provenance marks the step done, so a run killed
    # between the two writes redoes the step instead of leaving it "current" without its pilot.
    if pilot_table is not None:
        store.write("pilot_losses", pilot_table.append_column("version", pa.array([version] * pilot_table.num_rows)))
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
        "loss_by_cluster": bars(np.arange(k), np.nan_to_num(losses), "loss at each cluster's representative", "loss"),
    })
    return MaterializeResult(metadata=meta)
