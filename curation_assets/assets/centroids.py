
import time

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from resources.compute_device import ComputeDevice
from resources.storage import CurationStore

from ..algorithms.kmeans import assign_to_centroids, default_n_clusters, fit_kmeans
from ..arrays import embedding_column, embedding_matrix
from ..plots import histogram, line
from .shard_scope import read_shards, registered_shards


class CentroidsConfig(Config):
    n_clusters: int | None = Field(default=None, description="k; default round(sqrt(n / 2)).")
    seed: int = Field(default=0, description="Seeds the training sample and faiss's initialisation.")
    n_iter: int = Field(default=25, description="Lloyd iterations.")
    training_sample_size: int | None = Field(
        default=100_000, description="Rows k-means trains on (a seeded uniform sample); None: all rows."
    )


@asset(
    deps=["embeddings"],
    group_name="curation",
    kinds={"faiss", "parquet"},
    description="k-means centroids of all embeddings (faiss, seeded, on a recorded training sample).",
)
def centroids(context: AssetExecutionContext, config: CentroidsConfig, store: CurationStore,
              compute: ComputeDevice) -> MaterializeResult:
    keys = registered_shards(context)
    try:
        x = embedding_matrix(read_shards(store, "embeddings", keys, columns=["example_id", "embedding"]).column("embedding"))
    except ValueError as exc:
        if "differ in dimension" not in str(exc):
            raise
        raise ValueError(f"embeddings: shards {exc}; re-embed them all with one model") from exc
    n = x.shape[0]
    k = config.n_clusters if config.n_clusters is not None else default_n_clusters(n)
    if k > n:
        raise ValueError(f"centroids.n_clusters: {k} is larger than the number of examples ({n})")
    use_gpu = compute.faiss_uses_gpu()
    start = time.perf_counter()
    result = fit_kmeans(
        x, k, seed=config.seed, n_iter=config.n_iter,
        training_sample_size=config.training_sample_size, use_gpu=use_gpu,
    )
    seconds = time.perf_counter() - start
    labels, sq_dist = assign_to_centroids(x, result.centroids)
    sizes = np.bincount(labels, minlength=k)
    version = context.run.run_id
    table = pa.table({
        "cluster_id": pa.array(np.arange(k), pa.int32()),
        "centroid": embedding_column(result.centroids),
        "version": pa.array([version] * k, pa.string()),
    })
    store.write("centroids", table)
    cost = float(sq_dist.astype(np.float64).sum())
    return MaterializeResult(
        metadata={
            "dagster/row_count": k,
            "n_clusters": k,
            "n_examples": n,
            "dimension": int(x.shape[1]),
            "training_sample_size": result.training_sample_size,
            "seed": config.seed,
            "n_iter": config.n_iter,
            "device": "gpu" if use_gpu else "cpu",
            "seconds": round(seconds, 3),
            "kmeans_cost": cost,
            "kmeans_cost_per_point": cost / n,
            "empty_clusters": int((sizes == 0).sum()),
            "largest_cluster_share": float(sizes.max() / n),
            "cost_per_iteration": MetadataValue.json([float(c) for c in result.cost_per_iteration]),
            "cost_curve": line(result.cost_per_iteration, "k-means cost per iteration (training sample)",
                               "iteration", "sum of squared distances"),
            "cluster_sizes": histogram(sizes, "cluster sizes", "members per cluster", bins=min(40, k)),
            "version": version,
        }
    )
