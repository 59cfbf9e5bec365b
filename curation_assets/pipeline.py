"""Runs the whole lineage graph in dependency order, the way a backfill would.

Partitioned and unpartitioned assets cannot share one Dagster run, so this materialises the
graph stage by stage through Dagster's own `materialize`: each stage is a recorded run in the
instance, visible in the UI's run list and asset lineage.
"""

from collections.abc import Callable

from dagster import DagsterInstance, materialize

from .assets import (
    all_assets,
    baseline_subsets,
    balanced_subset,
    centroids,
    cluster_assignments,
    embeddings,
    hierarchical_centroids,
    raw_examples,
    representative_losses,
    sensitivities,
    subset_evaluation,
    subsets,
)
from .checks import all_checks
from .partitions import shards

ALL_ASSETS = all_assets

# (assets selected, partitioned?) in dependency order.
STAGES = [
    ([raw_examples, embeddings], True),
    ([centroids, hierarchical_centroids], False),
    ([cluster_assignments], True),
    ([representative_losses], False),
    ([sensitivities], True),
    ([subsets, balanced_subset, baseline_subsets], False),
]
# Held-out evaluation of every method at a grid of budgets (minutes on the default data).
EVALUATION_STAGE = ([subset_evaluation], False)


def sync_shards(instance: DagsterInstance, shard_keys: list[str]) -> tuple[list[str], list[str]]:
    """Make the registered partitions exactly the source's shards; returns (added, removed).

    Global assets span the registered shards, so a shard the source no longer has (another
    source configured, a file deleted) must not linger in the scope.
    """
    known = set(instance.get_dynamic_partitions(shards.name))
    added = [k for k in shard_keys if k not in known]
    removed = sorted(known - set(shard_keys))
    if added:
        instance.add_dynamic_partitions(shards.name, added)
    for key in removed:
        instance.delete_dynamic_partition(shards.name, key)
    return added, removed


def run_config_for(config: dict | None, selected, log_level: str) -> dict:
    """Keep only the op configs of the selected assets (Dagster rejects config for others)."""
    config = config or {}
    names = {a.node_def.name for a in selected}
    return {
        "ops": {k: v for k, v in config.items() if k in names},
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }


def run_pipeline(
    instance: DagsterInstance,
    resources: dict,
    config: dict | None = None,
    log: Callable[[str], None] = print,
    log_level: str = "WARNING",
    evaluate: bool = False,
) -> list:
    """Register the source's shards, then materialise every stage. Returns the run results.

    `config` maps an asset's op name (e.g. "centroids", "subsets") to its config dict, e.g.
    {"subsets": {"config": {"budget_fraction": 0.05}}}. `log_level` is the console log level of
    each run (the full event log is kept in the instance either way). `evaluate` adds the
    held-out `subset_evaluation` at the end.
    """
    shard_keys = resources["source"].list_shards()
    added, removed = sync_shards(instance, shard_keys)
    log(f"shards: {len(shard_keys)} ({len(added)} newly registered, {len(removed)} no longer in the source)")
    results = []
    for selected, partitioned in STAGES + ([EVALUATION_STAGE] if evaluate else []):
        names = ", ".join(a.node_def.name for a in selected)
        keys = shard_keys if partitioned else [None]
        for key in keys:
            result = materialize(
                [*ALL_ASSETS, *all_checks],
                selection=[k for a in selected for k in a.keys],
                partition_key=key,
                instance=instance,
                resources=resources,
                run_config=run_config_for(config, selected, log_level),
                raise_on_error=True,
            )
            results.append(result)
            log(f"materialized {names}" + (f" [{key}]" if key else "") + f" (run {result.run_id[:8]})")
    return results
