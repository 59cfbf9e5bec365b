
import time

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, AssetSpec, Config, MaterializeResult, MetadataValue, multi_asset
from pydantic import Field

from resources.blas import blas_report
from resources.compute_device import ComputeDevice
from resources.storage import CurationStore

from .. import lineage
from ..algorithms.kmeans import MAX_ITER, assign_to_centroids, default_n_clusters, fit_kmeans
from ..algorithms.scorers import seeded_holdout, seeded_pilot
from ..arrays import embedding_column
from ..graph import NEW_SHARDS_TAG
from ..plots import histogram, line
from ..progress import Progress
from ..stored_inputs import (RowsByNumber, embedding_dimension, gather_embeddings, label_summary, registered_shards,
                             shard_row_counts, split_rows)
from .probe import no_probe, probe_tables


class CentroidsConfig(Config):
    n_clusters: int | None = Field(default=None, ge=1, description="k; default round(sqrt(n / 2)).")
    seed: int = Field(default=0, ge=0, description="Seeds the training sample, faiss's initialisation and the "
                                                   "probe's pilot and holdout.")
    n_iter: int = Field(default=25, ge=1, le=MAX_ITER, description="Lloyd iterations.")
    training_sample_size: int | None = Field(
        default=100_000, ge=1, description="Rows k-means trains on (a seeded uniform sample); None: all rows."
    )
    pilot_size: int | None = Field(
        default=None, ge=2,
        description="Labelled pilot examples the probe is fit on; default 5% of n, in [100, 20,000].")
    probe_C: float = Field(default=1.0, gt=0, description="Inverse L2 regularisation of the logistic-regression probe.")


@multi_asset(
    specs=[
        AssetSpec("centroids", deps=["embeddings"], group_name="curation", kinds={"faiss", "parquet"},
                  tags={NEW_SHARDS_TAG: "kept"},  # new shards are assigned to these clusters; drift forces a refit
                  description="k-means centroids of all embeddings (faiss, seeded, on a recorded training sample "
                              "read shard by shard)."),
        AssetSpec("probe", deps=["raw_examples", "embeddings"], group_name="curation",
                  kinds={"scikitlearn", "parquet"}, tags={NEW_SHARDS_TAG: "kept"},
                  description="The stand-in model when every example has a label: a logistic regression on the "
                              "embeddings, p(y | x) = softmax(W x + b), fit on a seeded uniform pilot, and its "
                              "losses on held-out rows (holdout_losses); empty without labels. "
                              "cluster_assignments scores every row with it in its pass over the vectors."),
    ],
    can_subset=False,
    pool="accelerator",  # GPU steps can be capped per GPU: see resources/compute_device.py
)
def centroids(context: AssetExecutionContext, config: CentroidsConfig, store: CurationStore,
              compute: ComputeDevice):
    """One step, one read of the vectors: the k-means training sample and the probe's pilot and
    holdout rows are gathered together (each is a seeded uniform draw over all n rows, as if
    drawn alone), since a gather of scattered rows decodes nearly every page of the shards."""
    keys = registered_shards(context)
    counts = shard_row_counts(store, "embeddings", keys)
    unlabelled, distinct = label_summary(store, keys)
    dims = {k: embedding_dimension(store, k) for k in keys}
    if len(set(dims.values())) != 1:
        by_dim = {}
        for k, d in dims.items():
            by_dim.setdefault(d, []).append(k)
        raise ValueError(f"embeddings: shards differ in dimension ({by_dim}); re-embed them all with one model")
    n = int(counts.sum())
    k = config.n_clusters if config.n_clusters is not None else default_n_clusters(n)
    if k > n:
        raise ValueError(f"centroids.n_clusters: {k} is larger than the number of examples ({n})")
    size = min(n, config.training_sample_size or n)
    if k > size:
        raise ValueError(f"centroids.n_clusters: {k} clusters is more than the {size} examples in the "
                         f"training sample (centroids.training_sample_size={config.training_sample_size})")
    provenance = lineage.expected(store, "centroids", None, keys, config, run=context.run.run_id)
    # The training sample is drawn over row numbers and read shard by shard, so memory holds
    # the sample, never every embedding.
    rng = np.random.default_rng(config.seed)
    rows = np.arange(n) if size == n else np.sort(rng.choice(n, size=size, replace=False))
    version = context.run.run_id
    if not unlabelled and len(distinct) >= 2:  # the probe is fit first: it may refuse its pilot
        pilot = seeded_pilot(n, config.pilot_size, config.seed)
        holdout = seeded_holdout(n, pilot, config.seed)
        read = RowsByNumber(store, keys, counts, np.concatenate([rows, pilot, holdout]), with_text=False)
        x = read.x[read.positions(rows)]
        probe, holdout_losses, probe_meta = probe_tables(read, pilot, holdout, config.probe_C, config.seed, version)
    else:
        x = gather_embeddings(store, keys, split_rows(rows, counts),
                              Progress(len(keys), "centroids: reading the training sample", context.log.info,
                                       unit="shards"))
        probe, holdout_losses, probe_meta = no_probe(f"{unlabelled} example(s) without a label" if unlabelled
                                                     else "fewer than 2 classes")
    backend, device = compute.kmeans_backend()
    start = time.perf_counter()
    context.log.info(f"centroids: k-means on {x.shape[0]:,} x {x.shape[1]} ({backend} on {device}), k={k}, "
                     f"{config.n_iter} iterations, {2.0 * x.shape[0] * k * x.shape[1] * config.n_iter / 1e12:.2f} TFLOP")
    result = fit_kmeans(x, k, seed=config.seed, n_iter=config.n_iter, backend=backend, device=device)
    context.log.info(f"centroids: k-means done in {time.perf_counter() - start:.1f}s")
    seconds = time.perf_counter() - start
    labels, sq_dist = assign_to_centroids(x, result.centroids, device=device)
    sizes = np.bincount(labels, minlength=k)
    fit_cost_per_point = float(sq_dist.astype(np.float64).mean())
    table = pa.table({
        "cluster_id": pa.array(np.arange(k), pa.int32()),
        "centroid": embedding_column(result.centroids),
        # What the fit saw: later shards are compared with it to measure drift.
        "fit_share": pa.array(sizes / size),
        "fit_cost_per_point": pa.array(np.full(k, fit_cost_per_point)),
        "version": pa.array([version] * k, pa.string()),
    })
    if holdout_losses is not None:
        store.write("holdout_losses", holdout_losses)
    store.write("probe", probe)
    store.write("centroids", table, provenance=provenance)  # last: it carries the step's provenance
    flops = 2.0 * size * k * x.shape[1] * config.n_iter
    yield MaterializeResult(asset_key="probe", metadata=probe_meta)
    yield MaterializeResult(
        asset_key="centroids",
        metadata={
            "dagster/row_count": k,
            "n_clusters": k,
            "n_examples": n,
            "shards": len(keys),
            "dimension": int(x.shape[1]),
            "training_sample_size": size,
            "seed": config.seed,
            "n_iter": config.n_iter,
            "device": device,
            "kmeans_backend": backend,
            "seconds": round(seconds, 3),
            "gflops": round(flops / max(seconds, 1e-9) / 1e9, 1),
            "faiss_blas_kernels": str(blas_report().get("faiss_openblas_corename")),
            "kmeans_cost_training_sample": float(sq_dist.astype(np.float64).sum()),
            "kmeans_cost_per_point": fit_cost_per_point,
            "empty_clusters_in_sample": int((sizes == 0).sum()),
            "largest_cluster_share": float(sizes.max() / size),
            "cost_per_iteration": MetadataValue.json([float(c) for c in result.cost_per_iteration]),
            "cost_curve": line(result.cost_per_iteration, "k-means cost per iteration (training sample)",
                               "iteration", "sum of squared distances"),
            "cluster_sizes": histogram(sizes, "cluster sizes (training sample)", "members per cluster",
                                       bins=min(40, k)),
            "version": version,
        }
    )
