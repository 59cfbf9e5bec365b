"""The baselines at the same budget and seed as the sensitivity subset, stored like it.

They take m and the seed from the newest `sensitivity_subset` (so the comparison is always at
equal budget), and are made in the same run when `curate run` builds the subsets."""

import time

import numpy as np
from dagster import AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from resources.storage import CurationStore

from .. import lineage
from ..algorithms.baselines import BASELINES
from ..algorithms.validation import check_budget
from ..arrays import embedding_matrix
from ..graph import STORED_TAG
from ..plots import markdown_table
from ..sharded_subsets import BASELINE_ASSETS, picked_from_arrays, subset_rows, subset_summary
from ..stored_inputs import load_centroids, read_shards, registered_shards, version_name


@multi_asset(
    specs=[AssetSpec(asset, deps=["embeddings", "cluster_assignments", "sensitivity_subset"], group_name="baselines",
                     kinds={"parquet"}, tags={STORED_TAG: "versioned"},
                     description=f"The `{name}` baseline: (example_id, weight) rows at the subsets' budget and seed.")
           for name, asset in BASELINE_ASSETS.items()],
    can_subset=False,
)
def baseline_subsets(context: AssetExecutionContext, store: CurationStore):
    keys = registered_shards(context)
    provenance = lineage.expected(store, "baseline_subsets", None, keys, None, run=context.run.run_id)
    _, centroids_version = load_centroids(store)
    assign = read_shards(store, "cluster_assignments", keys, columns=["example_id", "cluster_id", "centroids_version"],
                         version_column="centroids_version", expected_version=centroids_version, upstream="centroids")
    emb = read_shards(store, "embeddings", keys, columns=["example_id", "embedding"])
    ids = assign.column("example_id")
    n = assign.num_rows
    reference = store.read_latest_version("sensitivity_subset").slice(0, 1).to_pylist()[0]
    m, seed = int(reference["budget"]), int(reference["seed"])
    check_budget(m, n)
    x = embedding_matrix(emb.column("embedding"))
    cluster_ids = assign.column("cluster_id").to_numpy().astype(np.int64)
    version = version_name(context.run.run_id)
    # The step's first asset is written last: its file carries the provenance that marks the step done.
    for name, asset in reversed(BASELINE_ASSETS.items()):
        start = time.perf_counter()
        sample = BASELINES[name](x, cluster_ids, m, seed)
        seconds = time.perf_counter() - start
        picked = picked_from_arrays(sample, ids, cluster_ids)
        store.write_version(asset, subset_rows(picked, m, seed, name, context.run.run_id), version,
                            provenance=provenance)
        summary = subset_summary(picked, int(np.unique(cluster_ids).size))
        yield MaterializeResult(
            asset_key=asset,
            metadata={"dagster/row_count": summary["rows"], "method": name, "budget": m, "seed": seed,
                      "seconds": round(seconds, 3), "version": version,
                      **{key: v for key, v in summary.items() if key != "rows"},
                      "summary": MetadataValue.md(markdown_table(["", name], [[key, v] for key, v in summary.items()]))},
        )
