
from typing import Literal

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from resources.storage import CurationStore

from ..algorithms.representatives import cluster_sizes, nearest_members_per_cluster
from ..algorithms.robust_sensitivity import cluster_losses_from_members
from ..algorithms.scorers import (
    ConstantScorer,
    LinearProbeScorer,
    check_losses,
    load_scorer_function,
    out_of_fold_losses,
)
from ..arrays import embedding_matrix
from ..plots import bars
from .cluster_assignments import load_centroids
from .shard_scope import read_shards, registered_shards


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
        default=None, description="Labelled pilot examples the probe is fit on; default max(100, 5% of n)."
    )
    seed: int = Field(default=0, description="Seeds the pilot sample.")
    probe_C: float = Field(default=1.0, description="Inverse L2 regularisation of the logistic-regression probe.")
    constant_loss: float = Field(default=1.0, description="The loss every cluster gets under the constant scorer.")
    representatives_per_cluster: int = Field(
        default=1, description="r: v_j is the mean loss over the r members nearest each centroid (k * r inferences).")


def default_pilot_size(n: int) -> int:
    return min(n, max(100, int(np.ceil(0.05 * n))))


@asset(
    deps=["cluster_assignments", "raw_examples", "embeddings"],
    group_name="curation",
    kinds={"scikitlearn", "parquet"},
    description="v_j: the loss at each cluster's representative (the member nearest its centroid).",
)
def representative_losses(context: AssetExecutionContext, config: RepresentativeLossConfig,
                          store: CurationStore) -> MaterializeResult:
    keys = registered_shards(context)
    c, centroids_version = load_centroids(store)
    k = c.shape[0]
    assign = read_shards(store, "cluster_assignments", keys, version_column="centroids_version",
                         expected_version=centroids_version, upstream="centroids")
    raw = read_shards(store, "raw_examples", keys, columns=["example_id", "label"])
    emb = read_shards(store, "embeddings", keys)
    ids = assign.column("example_id")
    if not (ids.equals(raw.column("example_id")) and ids.equals(emb.column("example_id"))):
        raise ValueError(
            "raw_examples, embeddings and cluster_assignments hold different examples; "
            "re-materialize embeddings and cluster_assignments for the changed shards"
        )
    n = assign.num_rows
    labels = raw.column("label")
    cluster_ids = assign.column("cluster_id").to_numpy().astype(np.int64)
    sq_dist = assign.column("sq_distance").to_numpy()
    if config.representatives_per_cluster < 1:
        raise ValueError(f"representative_losses.representatives_per_cluster: must be at least 1, "
                         f"got {config.representatives_per_cluster}")
    members = nearest_members_per_cluster(cluster_ids, sq_dist, k, config.representatives_per_cluster)
    reps = members[:, 0]  # the member nearest each centroid
    sizes = cluster_sizes(cluster_ids, k)
    present = reps >= 0

    scorer_name = config.scorer
    has_labels = labels.null_count == 0 and len(set(labels.to_pylist())) >= 2
    if scorer_name == "auto":
        scorer_name = "function" if config.scorer_function else ("linear_probe" if has_labels else "constant")
    meta = {}
    losses = np.full(k, np.nan)
    pilot_table = None
    if scorer_name == "linear_probe":
        if labels.null_count:
            raise ValueError(
                f"representative_losses.scorer='linear_probe': {labels.null_count} example(s) have no label; "
                "use scorer 'constant' or label every example"
            )
        pilot_size = config.pilot_size if config.pilot_size is not None else default_pilot_size(n)
        if not 2 <= pilot_size <= n:
            raise ValueError(f"representative_losses.pilot_size: must be in [2, {n}], got {pilot_size}")
        x = embedding_matrix(emb.column("embedding"))
        y = np.asarray(labels.to_pylist(), dtype=object)
        rng = np.random.default_rng(config.seed)
        pilot = np.sort(rng.choice(n, size=pilot_size, replace=False))
        scorer = LinearProbeScorer(C=config.probe_C).fit(x[pilot], y[pilot])
        loss_of = lambda idx: scorer.losses(x[idx], y[idx])  # noqa: E731
        # Out-of-fold losses on the pilot let `subsets` choose the defensive alpha from data.
        pilot_table = pa.table({
            "example_id": ids.take(pa.array(pilot)),
            "loss": pa.array(out_of_fold_losses(x[pilot], y[pilot], seed=config.seed, C=config.probe_C)),
        })
        meta.update({
            "pilot_size": pilot_size,
            "pilot_seed": config.seed,
            "probe_train_accuracy": float(scorer.model.score(x[pilot], y[pilot])),
            "probe_accuracy_at_representatives": float(scorer.model.score(x[reps[present]], y[reps[present]])),
        })
    elif scorer_name == "function":
        if not config.scorer_function:
            raise ValueError("representative_losses.scorer_function: scorer 'function' needs 'package.module:function'")
        fn = load_scorer_function(config.scorer_function)
        texts = read_shards(store, "raw_examples", keys, columns=["example_id", "text"]).column("text")
        x = embedding_matrix(emb.column("embedding"))

        def loss_of(rows):
            return check_losses(
                fn(example_ids=[ids[int(r)].as_py() for r in rows], texts=[texts[int(r)].as_py() for r in rows],
                   labels=[labels[int(r)].as_py() for r in rows], embeddings=x[rows]),
                len(rows), "representative_losses.scorer_function",
            )
        meta["scorer_function"] = config.scorer_function
    else:
        constant = ConstantScorer(config.constant_loss)
        loss_of = lambda idx: constant.losses(np.empty((len(idx), 1)))  # noqa: E731
        meta["constant_loss"] = config.constant_loss
    v, inferences = cluster_losses_from_members(members, loss_of)
    losses[present] = v[present]

    scorer_label = f"function:{config.scorer_function}" if scorer_name == "function" else scorer_name
    rep_ids = [ids[int(r)].as_py() if r >= 0 else None for r in reps]
    rep_labels = [labels[int(r)].as_py() if r >= 0 else None for r in reps]
    version = context.run.run_id
    table = pa.table({
        "cluster_id": pa.array(np.arange(k), pa.int32()),
        "size": pa.array(sizes.astype(np.int64)),
        # k-means cost per cluster: lets each shard of `sensitivities` compute the global,
        # balanced lambda (z = 2) in O(k) instead of reading every shard's assignments.
        "sum_sq_distance": pa.array(np.bincount(cluster_ids, weights=sq_dist, minlength=k)),
        "representative_id": pa.array(rep_ids, pa.string()),
        "representative_label": pa.array(rep_labels, pa.string()),
        "representative_sq_distance": pa.array([float(sq_dist[r]) if r >= 0 else None for r in reps], pa.float64()),
        "loss": pa.array([float(v) if np.isfinite(v) else None for v in losses], pa.float64()),
        "scorer": pa.array([scorer_label] * k, pa.string()),
        "centroids_version": pa.array([centroids_version] * k, pa.string()),
        "version": pa.array([version] * k, pa.string()),
    })
    store.write("representative_losses", table)
    if pilot_table is not None:
        store.write("pilot_losses", pilot_table.append_column("version", pa.array([version] * pilot_table.num_rows)))
    finite = losses[present]
    meta.update({
        "dagster/row_count": k,
        "scorer": scorer_label,
        "model_inferences": inferences,
        "representatives_per_cluster": config.representatives_per_cluster,
        "empty_clusters": int((~present).sum()),
        "mean_loss": float(finite.mean()),
        "max_loss": float(finite.max()),
        "version": version,
        "loss_by_cluster": bars(np.arange(k), np.nan_to_num(losses), "loss at each cluster's representative", "loss"),
    })
    return MaterializeResult(metadata=meta)
