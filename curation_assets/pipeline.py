"""Runs the whole lineage graph in dependency order, the way a backfill would.

Partitioned and unpartitioned assets cannot share one Dagster run, so this materialises the
graph stage by stage through Dagster's own `materialize`: each stage is a recorded run in the
instance, visible in the UI's run list and asset lineage.
"""

from collections.abc import Callable

from dagster import DagsterInstance, materialize

from .assets import (
    centroids,
    cluster_assignments,
    embeddings,
    raw_examples,
    representative_losses,
    sensitivities,
    subsets,
)
from .checks import all_checks
from .partitions import shards

ALL_ASSETS = [raw_examples, embeddings, centroids, cluster_assignments, representative_losses, sensitivities, subsets]

# (assets selected, partitioned?) in dependency order.
STAGES = [
    ([raw_examples, embeddings], True),
    ([centroids], False),
    ([cluster_assignments], True),
    ([representative_losses], False),
    ([sensitivities], True),
    ([subsets], False),
]


def register_shards(instance: DagsterInstance, shard_keys: list[str]) -> list[str]:
    known = set(instance.get_dynamic_partitions(shards.name))
    new = [k for k in shard_keys if k not in known]
    if new:
        instance.add_dynamic_partitions(shards.name, new)
    return new


def run_config_for(config: dict | None, selected) -> dict:
    """Keep only the op configs of the selected assets (Dagster rejects config for others)."""
    config = config or {}
    names = {a.node_def.name for a in selected}
    return {"ops": {k: v for k, v in config.items() if k in names}}


def run_pipeline(
    instance: DagsterInstance,
    resources: dict,
    config: dict | None = None,
    log: Callable[[str], None] = print,
) -> list:
    """Register the source's shards, then materialise every stage. Returns the run results.

    `config` maps an asset's op name (e.g. "centroids", "subsets") to its config dict.
    """
    source = resources["source"]
    shard_keys = source.list_shards()
    new = register_shards(instance, shard_keys)
    log(f"shards: {len(shard_keys)} ({len(new)} newly registered)")
    results = []
    for selected, partitioned in STAGES:
        names = ", ".join(a.node_def.name for a in selected)
        keys = shard_keys if partitioned else [None]
        for key in keys:
            result = materialize(
                [*ALL_ASSETS, *all_checks],
                selection=[k for a in selected for k in a.keys],
                partition_key=key,
                instance=instance,
                resources=resources,
                run_config=run_config_for(config, selected),
                raise_on_error=True,
            )
            results.append(result)
            log(f"materialized {names}" + (f" [{key}]" if key else "") + f" (run {result.run_id[:8]})")
    return results
