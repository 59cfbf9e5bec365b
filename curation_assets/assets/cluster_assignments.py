
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, MaterializeResult, asset

from resources.compute_device import ComputeDevice
from resources.storage import CurationStore

from .. import lineage
from ..algorithms.drift import measure_drift
from ..algorithms.kmeans import assign_to_centroids
from ..partitions import shards
from ..plots import bars, histogram
from ..progress import Progress
from ..stored_inputs import load_centroids, load_fit_summary, prefetched, vector_batches


GPU_CALL_ROWS = 262_144  # rows per assignment call on a GPU: each call moves the centroids and builds an index


def grouped(batches: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """The batches' rows in arrays of at least `rows` (the last may be shorter)."""
    parts, have = [], 0
    for x in batches:
        parts.append(x)
        have += x.shape[0]
        if have >= rows:
            yield np.concatenate(parts)
            parts, have = [], 0
    if parts:
        yield np.concatenate(parts)


def assign_with_progress(batches: Iterable[np.ndarray], n: int, c: np.ndarray, device, label: str, where: str,
                         log) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and squared distance for the n rows the batches hold, in order (`where`
    names them in an error; vector_batches checks there are n)."""
    progress = Progress(n, label, log)
    labels = np.empty(n, dtype=np.int64)
    sq_dist = np.empty(n, dtype=np.float32)
    start = 0
    for x in batches if device in (None, "cpu") else grouped(batches, GPU_CALL_ROWS):
        if x.shape[0] == 0:
            continue
        if x.shape[1] != c.shape[1]:
            raise ValueError(f"{where}: dimension {x.shape[1]} does not match the centroids' {c.shape[1]}; "
                             "re-materialize centroids")
        stop = start + x.shape[0]
        labels[start:stop], sq_dist[start:stop] = assign_to_centroids(x, c, device=device)
        progress.update(stop - start)
        start = stop
    return labels, sq_dist


@asset(
    partitions_def=shards,
    deps=["embeddings", "centroids"],
    group_name="curation",
    kinds={"faiss", "parquet"},
    pool="accelerator",  # GPU steps can be capped per GPU: see resources/compute_device.py
    description="Nearest centroid and squared distance to it, for every example of the shard; the shard's "
                "drift from the fit goes to the assignment_drift table.",
)
def cluster_assignments(context: AssetExecutionContext, store: CurationStore,
                        compute: ComputeDevice) -> MaterializeResult:
    fit = load_centroids(store), load_fit_summary(store)

    def read(shard):  # what the shard is computed from is recorded before its vectors are read
        provenance = lineage.expected(store, "cluster_assignments", shard, [shard], None, run=context.run.run_id)
        return provenance, store.read("embeddings", [shard], columns=["example_id"]).column("example_id")

    for shard, (provenance, ids) in prefetched(context.partition_keys, read):  # one shard, or a range of them
        meta = _assign_shard(context, store, compute, shard, ids, provenance, *fit)
        context.add_asset_metadata(meta, partition_key=shard)
    return MaterializeResult()


def _assign_shard(context: AssetExecutionContext, store: CurationStore, compute: ComputeDevice, shard: str,
                  ids: pa.ChunkedArray, provenance: dict, centroids: tuple[np.ndarray, str],
                  fit_summary: tuple) -> dict:
    c, version = centroids
    backend, device = compute.kmeans_backend()
    labels, sq_dist = assign_with_progress(vector_batches(store, shard, len(ids)), len(ids), c, device,
                                           f"cluster_assignments [{shard}]", f"embeddings of shard {shard!r}",
                                           context.log.info)
    table = pa.table({
        "example_id": ids,
        "cluster_id": pa.array(labels.astype(np.int32)),
        "sq_distance": pa.array(sq_dist),
        "centroids_version": pa.array([version] * len(labels), pa.string()),
    })
    drift = measure_drift(labels, sq_dist, *fit_summary)
    store.write("assignment_drift", pa.table({
        "shard": [shard], "examples": [drift.n], "cost_per_point": [drift.cost_per_point],
        "cost_ratio": [drift.cost_ratio], "share_shift": [drift.share_shift],
        "share_shift_noise": [drift.share_shift_noise], "excess_share_shift": [drift.excess_share_shift],
        "centroids_version": [version],
    }), shard)
    store.write("cluster_assignments", table, shard, provenance=provenance)
    counts = np.bincount(labels, minlength=c.shape[0])
    return {
        "dagster/row_count": len(labels),
        "kmeans_cost": float(sq_dist.astype(np.float64).sum()),
        "mean_sq_distance": float(sq_dist.mean()),
        "clusters_present": int((counts > 0).sum()),
        "centroids_version": version,
        "device": device,
        "assign_backend": backend,
        "drift_cost_ratio": drift.cost_ratio,
        "drift_share_shift": drift.share_shift,
        "drift_share_shift_noise": drift.share_shift_noise,
        "members_per_cluster": bars(np.arange(c.shape[0]), counts, f"members per cluster, shard {shard}", "members",
                                    "cluster"),
        "sq_distance": histogram(sq_dist, f"squared distance to centroid, shard {shard}", "squared distance"),
    }
