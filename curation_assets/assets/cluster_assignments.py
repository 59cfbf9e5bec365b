
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, MaterializeResult, asset

from resources.compute_device import ComputeDevice
from resources.storage import CurationStore

from .. import lineage
from ..algorithms.drift import measure_drift
from ..algorithms.kmeans import assign_to_centroids
from ..algorithms.scorers import probe_losses
from ..partitions import shards
from ..plots import bars, histogram
from ..progress import Progress
from ..stored_inputs import StoredProbe, load_centroids, load_fit_summary, load_probe, prefetched, vector_batches


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


def scored(batches: Iterable[np.ndarray], probe: StoredProbe, label_index: np.ndarray, expected: np.ndarray,
           at_label: np.ndarray, where: str) -> Iterator[np.ndarray]:
    """The batches, unchanged, each scored by the probe on its way (expected loss and loss at the
    label into the arrays, in row order): the pass that assigns the rows scores them too."""
    start = 0
    for x in batches:
        if x.shape[0] and x.shape[1] != probe.w.shape[1]:
            raise ValueError(f"{where}: dimension {x.shape[1]} does not match the probe's {probe.w.shape[1]}; "
                             "re-materialize centroids (its step fits the probe)")
        stop = start + x.shape[0]
        expected[start:stop], at_label[start:stop] = probe_losses(x, probe.w, probe.b, label_index[start:stop])
        start = stop
        yield x


@asset(
    partitions_def=shards,
    deps=["embeddings", "centroids", "probe", "raw_examples"],
    group_name="curation",
    kinds={"faiss", "parquet"},
    pool="accelerator",  # GPU steps can be capped per GPU: see resources/compute_device.py
    description="Nearest centroid and squared distance to it, for every example of the shard, and with a "
                "probe its expected loss and its loss at the label there; the shard's drift from the fit goes "
                "to the assignment_drift table.",
)
def cluster_assignments(context: AssetExecutionContext, store: CurationStore,
                        compute: ComputeDevice) -> MaterializeResult:
    fit = load_centroids(store), load_fit_summary(store)
    probe = load_probe(store)

    def read(shard):  # what the shard is computed from is recorded before its vectors are read
        provenance = lineage.expected(store, "cluster_assignments", shard, [shard], None, run=context.run.run_id)
        ids = store.read("embeddings", [shard], columns=["example_id"]).column("example_id")
        if probe is None:
            return provenance, ids, None
        raw = store.read("raw_examples", [shard], columns=["example_id", "label"])
        if not raw.column("example_id").equals(ids):
            raise ValueError(f"raw_examples and embeddings hold different examples in shard {shard!r}; "
                             "re-materialize embeddings for it")
        return provenance, ids, probe.label_index(raw.column("label"))

    with compute.faiss_owns_cores():  # the probe's small products stay off faiss's threads
        for shard, (provenance, ids, label_index) in prefetched(context.partition_keys, read):  # one shard or a range
            meta = _assign_shard(context, store, compute, shard, ids, provenance, *fit, probe, label_index)
            context.add_asset_metadata(meta, partition_key=shard)
    return MaterializeResult()


def _assign_shard(context: AssetExecutionContext, store: CurationStore, compute: ComputeDevice, shard: str,
                  ids: pa.ChunkedArray, provenance: dict, centroids: tuple[np.ndarray, str],
                  fit_summary: tuple, probe: StoredProbe | None, label_index: np.ndarray | None) -> dict:
    c, version = centroids
    backend, device = compute.kmeans_backend()
    n = len(ids)
    where = f"embeddings of shard {shard!r}"
    batches = vector_batches(store, shard, n)
    expected = at_label = None
    if probe is not None:
        expected, at_label = np.empty(n), np.empty(n)
        batches = scored(batches, probe, label_index, expected, at_label, where)
    labels, sq_dist = assign_with_progress(batches, n, c, device, f"cluster_assignments [{shard}]", where,
                                           context.log.info)
    table = pa.table({
        "example_id": ids,
        "cluster_id": pa.array(labels.astype(np.int32)),
        "sq_distance": pa.array(sq_dist),
        "centroids_version": pa.array([version] * n, pa.string()),
        # The probe's view of each row (null without one): sensitivities and representative_losses
        # read these instead of the vectors.
        "expected_loss": pa.array(expected, pa.float64()) if probe else pa.nulls(n, pa.float64()),
        "label_loss": pa.array(at_label, pa.float64(), from_pandas=True) if probe else pa.nulls(n, pa.float64()),
        "probe_version": pa.array([probe.version if probe else None] * n, pa.string()),
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
        **({} if probe is None else {"mean_expected_loss": float(expected.mean()) if n else float("nan")}),
    }
