"""Hierarchical k-means curation (Vo et al. 2024): the hierarchy, and a balanced subset drawn from it."""

import time
from typing import Literal

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field, PositiveInt

from resources.compute_device import ComputeDevice
from resources.storage import CurationStore

from .. import lineage
from ..algorithms.balanced_sampling import allocate_budget, concept_balance, hierarchical_balanced_sample
from ..algorithms.hierarchical_kmeans import cluster_paths, fit_hierarchical_kmeans
from ..algorithms.kmeans import assign_to_centroids
from ..algorithms.validation import resolve_budget
from ..arrays import embedding_column, embedding_matrix
from ..graph import STORED_TAG
from ..plots import grouped_shares, histogram, markdown_table
from ..stored_inputs import load_hierarchy, read_shards, registered_shards, version_name


class HierarchicalCentroidsConfig(Config):
    clusters_per_level: list[PositiveInt] | None = Field(
        default=None,
        description="k per level, bottom-up, strictly decreasing. Default two levels: round(sqrt(2n)) leaves "
                    "under round(sqrt(n/2)) top clusters (the flat centroids' k), e.g. [67, 33] for 2,225.",
    )
    resampling_steps: int = Field(
        default=5, ge=0, description="Resampling steps per level (0: plain k-means per level); the effect saturates by 5.")
    resample_sizes: list[PositiveInt] | None = Field(
        default=None, description="r per level: points kept nearest each centroid; default half the mean cluster size.")
    n_iter: int = Field(default=50, ge=1, description="Lloyd iterations per k-means run (the paper's 50).")
    seed: int = Field(default=0, ge=0, description="Seeds k-means++ and faiss: same embeddings and seed, same hierarchy.")


class BalancedSubsetConfig(Config):
    budget: int | None = Field(default=None, ge=1, description="Examples to select (m). Overrides budget_fraction.")
    budget_fraction: float = Field(default=0.1, gt=0, le=1,
                                   description="m = round(budget_fraction * n) when budget is unset.")
    seed: int = Field(default=0, ge=0, description="Seeds the tie-breaks and the draws within leaves.")
    within: Literal["random", "closest"] = Field(
        default="random", description="Within a leaf: a random draw, or the members closest to its centroid.")
    replace: bool = Field(
        default=False, description="Allow an example twice, so small leaves still get their equal share.")


@asset(
    deps=["embeddings"],
    group_name="baselines",
    kinds={"faiss", "parquet"},
    pool="accelerator",  # GPU steps can be capped per GPU: see resources/compute_device.py
    description="Hierarchical k-means with resampling over all embeddings: every level's centroids, "
                "with parent links.",
)
def hierarchical_centroids(context: AssetExecutionContext, config: HierarchicalCentroidsConfig,
                           store: CurationStore, compute: ComputeDevice) -> MaterializeResult:
    keys = registered_shards(context)
    provenance = lineage.expected(store, "hierarchical_centroids", None, keys, config, run=context.run.run_id)
    emb = read_shards(store, "embeddings", keys, columns=["example_id", "embedding"])
    x = embedding_matrix(emb.column("embedding"))
    n = x.shape[0]
    backend, device = compute.kmeans_backend()
    start = time.perf_counter()
    try:
        h = fit_hierarchical_kmeans(
            x, config.clusters_per_level, resampling_steps=config.resampling_steps,
            resample_sizes=config.resample_sizes, n_iter=config.n_iter, seed=config.seed,
            backend=backend, device=device,
        )
    except ValueError as exc:  # the algorithm names its parameter; say whose config it is
        raise ValueError(f"hierarchical_centroids: {exc}") from exc
    seconds = time.perf_counter() - start
    sizes = h.cluster_sizes()
    version = context.run.run_id
    parts = []
    for i, (level, size) in enumerate(zip(h.levels, sizes)):
        k = level.n_clusters
        parts.append(pa.table({
            "level": pa.array(np.full(k, i + 1), pa.int32()),
            "cluster_id": pa.array(np.arange(k), pa.int32()),
            "centroid": embedding_column(level.centroids),
            "parent_id": pa.array(level.parent, pa.int32(), mask=level.parent < 0),
            "size": pa.array(size, pa.int64()),
            "version": pa.array([version] * k, pa.string()),
        }))
    store.write("hierarchical_centroids", pa.concat_tables(parts), provenance=provenance)
    ks = [lv.n_clusters for lv in h.levels]
    rows = [[i + 1, lv.n_clusters, lv.resample_size, lv.resampling_steps_run, int(s.min()), int(np.median(s)),
             int(s.max()), lv.cost]
            for i, (lv, s) in enumerate(zip(h.levels, sizes))]
    meta = {
        "dagster/row_count": sum(ks),
        "n_examples": n,
        "clusters_per_level": MetadataValue.json(ks),
        "resample_sizes": MetadataValue.json([lv.resample_size for lv in h.levels]),
        "resampling_steps": h.resampling_steps,
        "n_iter": h.n_iter,
        "seed": config.seed,
        "seconds": round(seconds, 3),
        "kmeans_backend": f"{backend} ({device})",
        "empty_leaves": int((sizes[0] == 0).sum()),
        "summary": MetadataValue.md(
            f"{len(ks)} level(s) over **{n}** examples in {seconds:.2f}s (bottom-up; sizes in examples).\n\n"
            + markdown_table(["level", "clusters", "r", "steps run", "min size", "median size", "max size",
                              "k-means cost"], rows)
        ),
        "version": version,
    }
    for i, s in enumerate(sizes):
        meta[f"cluster_sizes_level_{i + 1}"] = histogram(
            s, f"examples per cluster, level {i + 1} ({s.size} clusters)", "examples", bins=min(40, s.size))
    return MaterializeResult(metadata=meta)


@asset(
    deps=["hierarchical_centroids", "embeddings"],
    group_name="baselines",
    kinds={"parquet"},
    tags={STORED_TAG: "versioned"},
    description="A subset balanced over the hierarchy's clusters, top-down; meant to be trained on unweighted.",
)
def balanced_subset(context: AssetExecutionContext, config: BalancedSubsetConfig,
                    store: CurationStore) -> MaterializeResult:
    keys = registered_shards(context)
    provenance = lineage.expected(store, "balanced_subset", None, keys, config, run=context.run.run_id)
    emb = read_shards(store, "embeddings", keys, columns=["example_id", "embedding"])
    x = embedding_matrix(emb.column("embedding"))
    centroids, parents, hierarchy_version = load_hierarchy(store)
    if x.shape[1] != centroids[0].shape[1]:
        raise ValueError(f"embeddings: dimension {x.shape[1]} does not match hierarchical_centroids' "
                         f"{centroids[0].shape[1]}; re-materialize hierarchical_centroids")
    n = x.shape[0]
    if config.replace and config.budget is not None and config.budget > n:
        m = int(config.budget)  # with replacement a budget may exceed n (the sampler checks it)
    else:
        m = resolve_budget(n, config.budget, config.budget_fraction)
    leaves, sq_dist = assign_to_centroids(x, centroids[0])
    sample = hierarchical_balanced_sample(leaves, parents, m, seed=config.seed, within=config.within,
                                          sq_distance=sq_dist, replace=config.replace)
    allocation = allocate_budget(leaves, parents, m, seed=config.seed, replace=config.replace)
    idx = sample.indices
    rows = idx.size
    version = version_name(context.run.run_id)
    table = pa.table({
        "example_id": emb.column("example_id").take(pa.array(idx)),
        "weight": pa.array(sample.weights),
        "probability": pa.array(sample.probabilities),
        "draws": pa.array(sample.draws),
        "leaf_cluster": pa.array(leaves[idx].astype(np.int32)),
        "path": pa.array(cluster_paths(leaves[idx], parents), pa.string()),
        "budget": pa.array(np.full(rows, m, dtype=np.int64)),
        "seed": pa.array(np.full(rows, config.seed, dtype=np.int64)),
        "within": pa.array([config.within] * rows, pa.string()),
        "hierarchy_version": pa.array([hierarchy_version] * rows, pa.string()),
        "run": pa.array([context.run.run_id] * rows, pa.string()),
    })
    store.write_version("balanced_subset", table, version, provenance=provenance)

    top = leaves
    for link in parents:
        top = link[top]
    k_top = allocation[-1].size
    top_sizes = np.bincount(top, minlength=k_top)
    picked = np.bincount(top[idx], weights=sample.draws, minlength=k_top)
    n_leaves = allocation[0].size
    over_leaves = [concept_balance(leaves, n_leaves), concept_balance(np.repeat(leaves[idx], sample.draws), n_leaves)]
    labels = {"entropy": "entropy of leaf shares", "max_share": "largest leaf share",
              "min_share": "smallest leaf share", "concepts_covered": "leaves present"}
    comparison = markdown_table(["", "all examples", "balanced_subset"],
                                [[label, *(b[key] for b in over_leaves)] for key, label in labels.items()])
    return MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "n_examples": n,
            "budget": m,
            "draws": int(sample.draws.sum()),
            "seed": config.seed,
            "within": config.within,
            "replace": config.replace,
            "weight_sum": float(sample.weights.sum()),
            "leaves_drawn_from": f"{int((allocation[0] > 0).sum())}/{n_leaves}",
            "allocation_per_top_cluster": MetadataValue.json(
                [{"cluster": j, "size": int(s), "draws": int(a)}
                 for j, (s, a) in enumerate(zip(top_sizes, allocation[-1]))]),
            "top_cluster_shares": grouped_shares(
                np.arange(k_top), {"all examples": top_sizes / n, "balanced_subset": picked / picked.sum()},
                "share of each top-level cluster: data vs balanced subset"),
            "summary": MetadataValue.md(
                f"Drew **{m}** of **{n}** examples, the budget split equally over {k_top} top-level clusters and on "
                f"down to the leaves (within leaves: {config.within}, seed {config.seed}). Train on it unweighted; "
                f"the weights (leaf size / draws in the leaf) only serve to estimate full-data sums.\n\n{comparison}"
            ),
            "hierarchy_version": hierarchy_version,
            "version": version,
        }
    )
