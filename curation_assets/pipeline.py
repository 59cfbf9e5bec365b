"""Runs the whole lineage graph in dependency order, recomputing only what is not current.

Partitioned and unpartitioned assets cannot share one Dagster run, so this materialises the
graph asset by asset through Dagster's own `materialize`: each is a recorded run in the
instance, visible in the UI's run list and asset lineage. Before each asset it asks the stored
provenance (lineage.py) which partitions are stale, so a rerun after a crash skips the finished
shards, and a new shard is embedded, assigned and scored alone before the subset is redrawn.
The stale shards of a per-shard asset go in one run per range of consecutive partitions (the
asset loops over `context.partition_keys`, writing and recording each shard on its own), so the
run's fixed cost is paid once, not once per shard.
"""

from collections.abc import Callable

import pydantic
from dagster import DagsterInstance, materialize
# The run tags that make one run materialise a range of partitions (what Dagster's own single-run
# backfills set); not re-exported at the top level of dagster 1.13.
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG as RANGE_END
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG as RANGE_START

from resources.drift_policy import DriftPolicy
from resources.storage import CurationStore

from . import graph, lineage
from .algorithms.validation import resolve_budget
from .assets import all_assets
from .assets.subset_export import export_is_complete
from .checks import all_checks
from .instance import claim_instance
from .partitions import shards
from .shard_admission import ADMITTED_TAG, admit, current_shards, retire_removed

# The asset groups each kind of run builds (graph.py reads the group off each asset). The core
# is bounded in memory; the baselines hold every embedding; delivery picks from the baselines.
CORE_GROUPS = ("curation",)
EXTRA_GROUPS = ("baselines", "delivery")
EVALUATION_GROUPS = ("evaluation",)


def pipeline_order(extras: bool, evaluate: bool) -> list[str]:
    """The ops a run materialises, in dependency order."""
    return graph.ops(CORE_GROUPS + (EXTRA_GROUPS if extras else ()) + (EVALUATION_GROUPS if evaluate else ()))


def config_object(op: str, config: dict | None):
    """The Config the asset will see for this run config (defaults filled in), for hashing; a value
    outside a field's declared bounds is one line naming `op.field`."""
    cls = graph.node(op).config_class
    if cls is None:
        return None
    values = (config or {}).get(op, {}).get("config", {}) or {}
    unknown = sorted(set(values) - set(cls.model_fields))
    if unknown:
        raise ValueError(f"{op}.{unknown[0]}: not a setting of {op}; it has {', '.join(cls.model_fields)}")
    try:
        return cls(**values)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(part) for part in err["loc"])
        raise ValueError(f"{op}.{field}: {err['msg'].lower()}, got {err.get('input')!r}") from None


def _export_done(store: CurationStore, config: dict | None) -> bool:
    return export_is_complete(store, config_object("subset_export", config).subset)


def drift_refit_requested(store: CurationStore, policy: DriftPolicy) -> list[str]:
    """Shards added after the current centroids were fit whose drift is past a refit threshold.

    Shards the fit saw never count: after a refit they are part of it, so one odd shard cannot
    make every later run refit again.
    """
    if not (store.exists("assignment_drift") and store.exists("centroids")):
        return []
    version = store.read("centroids", columns=["version"]).column("version")[0].as_py()
    seen = lineage.fit_shards(store)
    rows = store.query("SELECT * FROM assignment_drift WHERE centroids_version = ? ORDER BY shard",
                       [version]).to_pylist()
    return [r["shard"] for r in rows if r["shard"] not in seen
            and policy.verdict(r["cost_ratio"], r["excess_share_shift"], r["examples"]) == "refit"]


def stale_partitions(op: str, store: CurationStore, keys: list[str], config: dict | None, resources: dict,
                     policy: DriftPolicy) -> list[str | None]:
    """Which partitions of `op` must be recomputed now ([None] for a stale global asset)."""
    cfg = config_object(op, config)
    if op == "raw_examples":
        current = set(current_shards(resources["source"], store, keys))
        return [key for key in keys if key not in current]
    if op == "embeddings":
        embedder = resources["embedder"]
        return [key for key in keys if not lineage.is_current(
            store, op, key, [key], None,
            embedder=lineage.embedder_identity(embedder, lineage.shard_has_precomputed(store, key)))]
    node = graph.node(op)
    if node.partitioned:
        return [key for key in keys if not lineage.is_current(store, op, key, [key], cfg)]
    if node.stored == "files":  # not a table: redone when anything else was
        return [None]
    current = lineage.is_current(store, op, None, keys, cfg)
    if op == "centroids" and current and drift_refit_requested(store, policy):
        current = False
    return [] if current else [None]


def plan_stale(store: CurationStore, keys: list[str], config: dict | None, resources: dict,
               policy: DriftPolicy | None = None, evaluate: bool = False, extras: bool = True) -> dict:
    """What the next run would recompute first, without running anything: {op: partitions}
    for every asset whose stored provenance differs from what it would get now. Downstream of
    a stale asset everything will also be recomputed once that asset runs."""
    policy = policy or resources.get("drift") or DriftPolicy()
    order = pipeline_order(extras, evaluate)
    plan = {op: stale for op in order if (stale := stale_partitions(op, store, keys, config, resources, policy))}
    tracked = [op for op in plan if graph.node(op).stored != "files"]
    # Untracked outputs (the export files) are redone only when something else is.
    return plan if tracked else {op: v for op, v in plan.items() if not _export_done(store, config)}


def partition_runs(keys: list, registered: list[str]) -> list[tuple]:
    """(first, last) of each run of consecutive `registered` partitions among `keys` ([(None, None)]
    for a global asset): the partition ranges the stale shards can be materialised in."""
    if keys == [None]:
        return [(None, None)]
    pos = {key: i for i, key in enumerate(registered)}
    missing = [key for key in keys if key not in pos]
    if missing:
        raise ValueError(f"shards: {sorted(missing)[:5]} are not registered; run `curate run` to register them")
    runs: list[tuple] = []
    for key in sorted(set(keys), key=pos.__getitem__):
        if runs and pos[runs[-1][1]] == pos[key] - 1:
            runs[-1] = (runs[-1][0], key)
        else:
            runs.append((key, key))
    return runs


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


def run_config_for(config: dict | None, ops: list[str], log_level: str) -> dict:
    """Keep only the configs of the selected ops (Dagster rejects config for others)."""
    config = config or {}
    return {
        "ops": {k: v for k, v in config.items() if k in ops},
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }


def run_pipeline(
    instance: DagsterInstance,
    resources: dict,
    config: dict | None = None,
    log: Callable[[str], None] = print,
    log_level: str = "WARNING",
    evaluate: bool = False,
    force: bool = False,
    extras: bool = True,
) -> list:
    """Register the source's shards, then materialise every asset that is not current.

    `config` maps an asset's op name (e.g. "centroids", "subsets") to its config dict, e.g.
    {"subsets": {"config": {"budget_fraction": 0.05}}}. `log_level` is the console log level of
    each run (the full event log is kept in the instance either way). `evaluate` adds the
    held-out `subset_evaluation`; `extras=False` leaves out the hierarchical and baseline
    subsets (which hold every embedding in memory); `force` recomputes everything. Returns the
    run results (none for assets that were already current).
    """
    source, store = resources["source"], resources["store"]
    policy = resources.get("drift") or DriftPolicy()
    shard_keys = source.list_shards()
    # The instance must serve this store (one line if it serves another) before anything is staged.
    for op in pipeline_order(extras, evaluate):  # every setting within its bounds before anything is touched
        config_object(op, config)
    claim_instance(instance, store)
    # Nothing is registered, retired or written before every shard to (re)load fits the store.
    loading = list(shard_keys) if force else stale_partitions("raw_examples", store, shard_keys, config, resources,
                                                                 policy)
    loaded = admit(source, store, loading, shard_keys, stage=True)
    n = sum(loaded[k] if k in loaded else store.row_count("raw_examples", k) for k in shard_keys)
    try:  # a budget the examples cannot fill is refused now, not after the steps before the draw
        subsets = config_object("subsets", config)
        resolve_budget(n, subsets.budget, subsets.budget_fraction)
    except ValueError:
        if store.stages:
            store.clear_staged()
        raise
    retired = retire_removed(store, shard_keys)
    added, removed = sync_shards(instance, shard_keys)
    log(f"shards: {len(shard_keys)} ({len(added)} newly registered, {len(loading)} to load, "
        f"{len(retired)} retired" + (f": {sorted(retired)[:5]} moved to {store.retired_root}" if retired else "")
        + ")")
    results = []
    for op in pipeline_order(extras, evaluate):
        node = graph.node(op)
        keys = (list(shard_keys) if node.partitioned else [None]) if force \
            else stale_partitions(op, store, shard_keys, config, resources, policy)
        if node.stored == "files" and not force and not results and _export_done(store, config):
            keys = []  # an export of unchanged subsets is unchanged
        if not keys:
            log(f"{op}: current, skipped")
            continue
        if op == "centroids" and not force and (drifted := drift_refit_requested(store, policy)):
            log(f"centroids: refit, shard(s) {drifted[:5]} drifted past the refit threshold")
        # Stale shards in runs of consecutive registered partitions: one Dagster run each (its
        # fixed cost, ~0.3 s of event-log writes, is paid per run, not per shard).
        for first, last in partition_runs(keys, instance.get_dynamic_partitions(shards.name)):
            scope = {"partition_key": first} if first == last else {"tags": {RANGE_START: first, RANGE_END: last}}
            result = materialize(
                [*all_assets, *all_checks],
                selection=list(node.asset.keys),
                instance=instance,
                resources=resources,
                run_config=run_config_for(config, [op], log_level),
                raise_on_error=True,
                **{**scope, "tags": {ADMITTED_TAG: "1", **scope.get("tags", {})}},
            )
            results.append(result)
            where = "" if first is None else f" [{first}]" if first == last else f" [{first} .. {last}]"
            log(f"materialized {op}{where} (run {result.run_id[:8]})")
        if node.partitioned and len(keys) < len(shard_keys):
            log(f"{op}: {len(shard_keys) - len(keys)} shard(s) current, skipped")
    if store.stages:
        store.clear_staged()  # what admit() staged is promoted by now; nothing else may linger
    return results
