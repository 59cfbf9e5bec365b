
import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, MaterializeResult, asset

from resources.storage import CurationStore

from ..algorithms.kmeans import assign_to_centroids
from ..arrays import embedding_matrix
from ..partitions import shards
from ..plots import bars, histogram


def load_centroids(store: CurationStore) -> tuple[np.ndarray, str]:
    table = store.read("centroids").sort_by("cluster_id")
    return embedding_matrix(table.column("centroid")), table.column("version")[0].as_py()


@asset(
    partitions_def=shards,
    deps=["embeddings", "centroids"],
    group_name="curation",
    kinds={"faiss", "parquet"},
    description="Nearest centroid and squared distance to it, for every example of the shard.",
)
def cluster_assignments(context: AssetExecutionContext, store: CurationStore) -> MaterializeResult:
    shard = context.partition_key
    c, version = load_centroids(store)
    emb = store.read("embeddings", [shard])
    x = embedding_matrix(emb.column("embedding"))
    if x.shape[1] != c.shape[1]:
        raise ValueError(
            f"embeddings of shard {shard!r}: dimension {x.shape[1]} does not match the centroids' {c.shape[1]}; "
            "re-materialize centroids"
        )
    labels, sq_dist = assign_to_centroids(x, c)
    table = pa.table({
        "example_id": emb.column("example_id"),
        "cluster_id": pa.array(labels.astype(np.int32)),
        "sq_distance": pa.array(sq_dist),
        "centroids_version": pa.array([version] * len(labels), pa.string()),
    })
    store.write("cluster_assignments", table, shard)
    counts = np.bincount(labels, minlength=c.shape[0])
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(labels),
            "kmeans_cost": float(sq_dist.astype(np.float64).sum()),
            "mean_sq_distance": float(sq_dist.mean()),
            "clusters_present": int((counts > 0).sum()),
            "centroids_version": version,
            "members_per_cluster": bars(np.arange(c.shape[0]), counts, f"members per cluster, shard {shard}", "members"),
            "sq_distance": histogram(sq_dist, f"squared distance to centroid, shard {shard}", "squared distance"),
        }
    )
