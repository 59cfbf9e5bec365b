
import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from resources.storage import CurationStore

from .. import lineage
from ..algorithms.sensitivity import (
    MAX_Z,
    balanced_lambda_from_cluster_sums,
    check_z,
    distance_term,
    sensitivity_scores,
)
from ..partitions import shards
from ..plots import histogram
from ..stored_inputs import load_losses, losses_probe, prefetched, read_shards, registered_shards


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
    deps=["cluster_assignments", "representative_losses"],
    group_name="curation",
    kinds={"parquet"},
    description="s_i = v_a(i) + lambda * d_i^z per example; the DuckDB view adds p_i = s_i / sum(s). With a "
                "probe, also its expected loss at each example (computed with the assignments).",
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
    probe_version = losses_probe(losses)  # None: no expected loss

    def read(shard):  # what the shard is computed from is recorded before its inputs are read
        provenance = lineage.expected(store, "sensitivities", shard, [shard], config, run=context.run.run_id)
        assign = read_shards(store, "cluster_assignments", [shard], version_column="centroids_version",
                             expected_version=centroids_version,
                             upstream="centroids (than representative_losses)")
        return provenance, assign

    for shard, (provenance, assign) in prefetched(context.partition_keys, read):  # one shard or a range
        expected = None if probe_version is None else _expected_losses(shard, assign, probe_version)
        meta = _score_shard(store, shard, assign, expected, v, lam, z, losses_version, provenance)
        context.add_asset_metadata({**meta, "lambda_rule": lambda_rule}, partition_key=shard)
    return MaterializeResult()


def _score_shard(store: CurationStore, shard: str, assign: pa.Table, expected: np.ndarray | None, v: np.ndarray,
                 lam: float, z: float, losses_version: str, provenance: dict) -> dict:
    a = assign.column("cluster_id").to_numpy().astype(np.int64)
    d2 = assign.column("sq_distance").to_numpy()
    s = sensitivity_scores(v, a, d2, lam, z)
    loss_term = v[a]
    n = len(s)
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


def _expected_losses(shard: str, assign: pa.Table, probe_version: str) -> np.ndarray:
    """The probe's expected loss at each row, as cluster_assignments computed it, if it used the
    probe representative_losses did."""
    if "probe_version" not in assign.column_names or \
            set(assign.column("probe_version").unique().to_pylist()) != {probe_version}:
        raise ValueError(f"cluster_assignments: shard {shard!r} was not scored by the probe representative_losses "
                         "used; re-materialize cluster_assignments for it")
    return assign.column("expected_loss").to_numpy()
