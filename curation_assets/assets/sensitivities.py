
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from resources.storage import CurationStore

from .. import lineage
from ..algorithms.scorers import expected_losses
from ..algorithms.sensitivity import (
    MAX_Z,
    balanced_lambda_from_cluster_sums,
    check_z,
    distance_term,
    sensitivity_scores,
)
from ..partitions import shards
from ..plots import histogram
from ..stored_inputs import load_losses, load_probe, prefetched, read_shards, registered_shards, vector_batches


class SensitivityConfig(Config):
    lambda_: float | None = Field(
        default=None, ge=0, allow_inf_nan=False,
        description="Weight of the distance term. None: balanced, so the loss and distance terms carry "
                    "equal total mass over the whole dataset (scale-free; see README).",
    )
    z: float = Field(default=2.0, gt=0, le=MAX_Z, allow_inf_nan=False,
                     description="Exponent of the distance: 2 matches the k-means objective.")


@asset(
    partitions_def=shards,
    deps=["cluster_assignments", "representative_losses", "embeddings"],
    group_name="curation",
    kinds={"parquet"},
    description="s_i = v_a(i) + lambda * d_i^z per example; the DuckDB view adds p_i = s_i / sum(s). With a "
                "probe, also its expected loss at each example (read from its embedding).",
)
def sensitivities(context: AssetExecutionContext, config: SensitivityConfig, store: CurationStore) -> MaterializeResult:
    z = check_z(config.z)
    losses, v, losses_version, centroids_version = load_losses(store)
    # Empty clusters have no representative and no members; any value keeps the formula defined.
    v = np.nan_to_num(v, nan=0.0)
    if config.lambda_ is None and z == 2.0:
        lam = balanced_lambda_from_cluster_sums(v, losses.column("size").to_numpy(),
                                                losses.column("sum_sq_distance").to_numpy())
        lambda_rule = "balanced"
    elif config.lambda_ is None:
        # sum_i d_i^z over the shards representative_losses was computed on (so every shard,
        # new ones included, gets the same lambda): one streamed pass, a shard at a time.
        fit = (lineage.stored(store, "representative_losses") or {}).get("inputs", {}).get("cluster_assignments")
        dz_sum = 0.0
        for key in sorted(fit) if fit else registered_shards(context):
            a = read_shards(store, "cluster_assignments", [key],
                            columns=["example_id", "sq_distance", "centroids_version"],
                            version_column="centroids_version", expected_version=centroids_version,
                            upstream="centroids")
            dz_sum += float(distance_term(a.column("sq_distance").to_numpy(), z).sum())
        lam = balanced_lambda_from_cluster_sums(v, losses.column("size").to_numpy(), [dz_sum])
        lambda_rule = "balanced"
    else:
        lam, lambda_rule = float(config.lambda_), "configured"
    probe = load_probe(store, losses_version)

    def read(shard):  # what the shard is computed from is recorded before its inputs are read
        provenance = lineage.expected(store, "sensitivities", shard, [shard], config, run=context.run.run_id)
        assign = read_shards(store, "cluster_assignments", [shard], version_column="centroids_version",
                             expected_version=centroids_version,
                             upstream="centroids (than representative_losses)")
        emb_ids = None if probe is None else store.read("embeddings", [shard], ["example_id"]).column("example_id")
        return provenance, assign, emb_ids

    for shard, (provenance, assign, emb_ids) in prefetched(context.partition_keys, read):  # one shard or a range
        meta = _score_shard(store, shard, assign, emb_ids, v, lam, z, losses_version, provenance, probe)
        context.add_asset_metadata({**meta, "lambda_rule": lambda_rule}, partition_key=shard)
    return MaterializeResult()


def _score_shard(store: CurationStore, shard: str, assign: pa.Table, emb_ids: pa.ChunkedArray | None, v: np.ndarray,
                 lam: float, z: float, losses_version: str, provenance: dict,
                 probe: tuple[np.ndarray, np.ndarray] | None) -> dict:
    a = assign.column("cluster_id").to_numpy().astype(np.int64)
    d2 = assign.column("sq_distance").to_numpy()
    s = sensitivity_scores(v, a, d2, lam, z)
    loss_term = v[a]
    n = len(s)
    expected = None if emb_ids is None else _expected_losses(store, shard, emb_ids, assign.column("example_id"), probe)
    table = pa.table({
        "example_id": assign.column("example_id"),
        "cluster_id": assign.column("cluster_id"),
        "sensitivity": pa.array(s),
        "loss_term": pa.array(loss_term),
        "distance_term": pa.array(lam * distance_term(d2, z)),
        "expected_loss": pa.array(expected if expected is not None else [None] * n, pa.float64()),
        "lambda_": pa.array(np.full(n, lam)),
        "z": pa.array(np.full(n, z)),
        "losses_version": pa.array([losses_version] * n, pa.string()),
    })
    store.write("sensitivities", table, shard, provenance=provenance)
    return {
        "dagster/row_count": n,
        "lambda": lam,
        "z": z,
        "shard_sensitivity_total": float(s.sum()),
        "loss_term_share": float(loss_term.sum() / s.sum()),
        "max_over_mean": float(s.max() / s.mean()),
        "sensitivity": histogram(s, f"sensitivity, shard {shard}", "s_i"),
        **({} if expected is None else {"mean_expected_loss": float(expected.mean())}),
    }


def _expected_losses(store: CurationStore, shard: str, emb_ids: pa.ChunkedArray, ids: pa.ChunkedArray,
                     probe) -> np.ndarray:
    """The probe's expected loss at each row of the shard, in the assignments' row order (by id,
    as read_shards gives them): computed over the vectors in the file's order, a batch at a time,
    then permuted."""
    order = pc.sort_indices(emb_ids)
    if not emb_ids.take(order).equals(ids):
        raise ValueError(f"embeddings of shard {shard!r}: rows differ from its cluster_assignments; "
                         "re-materialize cluster_assignments for it")
    parts = []
    for x in vector_batches(store, shard, len(emb_ids)):
        if x.shape[0] and x.shape[1] != probe[0].shape[1]:
            raise ValueError(f"embeddings of shard {shard!r}: dimension {x.shape[1]} does not match the probe's "
                             f"{probe[0].shape[1]}; re-materialize representative_losses")
        parts.append(expected_losses(x, *probe))
    losses = np.concatenate(parts) if parts else np.zeros(0)
    return losses[order.to_numpy()]
