"""The lineage graph, read from the asset definitions: the one place it is declared.

Each asset says what it reads (`deps=`), whether it is partitioned by shard, its group and, as
tags, how it is stored. Everything else that needs the graph derives it from here:

- the planner's order (assets/__init__'s list, checked to be topological) and what each op's
  provenance records: an upstream op read "same" (the same shard: both partitioned, Dagster's
  identity mapping), "all" (every shard: a partitioned upstream of a global asset, Dagster's
  all-partitions mapping) or "global" (an unpartitioned upstream);
- the per-shard assets a backfill may select, and the steps that get a GPU (those that use the
  compute device or the embedder);
- each op's Config class (its `config:` parameter) and the file that carries its provenance.

So adding an asset is: write its module, list it in assets/__init__ in dependency order, and
declare its `deps`; tests/test_definitions.py checks this view against Dagster's own asset graph.

Tags, declared beside each asset: `curation/stored` = `table` (default; one file per shard or
one file), `versioned` (one file per run) or `files` (plots/exports, not a table: not tracked by
provenance, redone when anything else is); `curation/new-shards` = `kept` for an asset that stays
current when shards are added (new data is assigned to the existing fit).
"""

import functools
import typing
from dataclasses import dataclass

STORED_TAG = "curation/stored"
NEW_SHARDS_TAG = "curation/new-shards"
ACCELERATED_RESOURCES = ("compute", "embedder")


@dataclass(frozen=True)
class Node:
    op: str                    # the op (step) name; a multi-asset's one step makes several assets
    asset: object              # the AssetsDefinition
    keys: tuple[str, ...]      # the assets it makes; the first carries its provenance (written last)
    upstream: dict             # {upstream op: "same" | "all" | "global"}
    partitioned: bool
    group: str
    stored: str                # "table", "versioned" or "files"
    keeps_fit_on_new_shards: bool
    accelerated: bool          # uses the compute device: a GPU step under Kubernetes
    config_class: type | None


def _config_class(asset) -> type | None:
    hints = typing.get_type_hints(asset.op.compute_fn.decorated_fn)
    return hints.get("config")


def _one(values: set, what: str, op: str):
    if len(values) != 1:
        raise ValueError(f"{op}: its assets disagree on {what} ({sorted(map(str, values))}); declare one")
    return values.pop()


def build(assets) -> dict[str, Node]:
    """{op: Node} in the order of `assets`, which must list every upstream before its readers."""
    producer = {key.to_user_string(): a.op.name for a in assets for key in a.keys}
    nodes: dict[str, Node] = {}
    for a in assets:
        op = a.op.name
        specs = list(a.specs)
        partitioned = a.partitions_def is not None
        upstream: dict[str, str] = {}
        for spec in specs:
            for dep in spec.deps:
                name = dep.asset_key.to_user_string()
                if name not in producer:
                    raise ValueError(f"{op}: depends on {name!r}, which no asset makes")
                parent = producer[name]
                if parent == op:
                    continue
                if parent not in nodes:
                    raise ValueError(f"{op}: listed before its upstream {parent!r} in assets.all_assets")
                how = "global" if not nodes[parent].partitioned else ("same" if partitioned else "all")
                upstream[parent] = how
        tags = [spec.tags or {} for spec in specs]
        nodes[op] = Node(
            op=op, asset=a, keys=tuple(spec.key.to_user_string() for spec in specs), upstream=upstream,
            partitioned=partitioned,
            group=_one({spec.group_name for spec in specs}, "group", op),
            stored=_one({t.get(STORED_TAG, "table") for t in tags}, STORED_TAG, op),
            keeps_fit_on_new_shards=_one({t.get(NEW_SHARDS_TAG) == "kept" for t in tags}, NEW_SHARDS_TAG, op),
            accelerated=bool(set(ACCELERATED_RESOURCES) & set(a.required_resource_keys)),
            config_class=_config_class(a),
        )
    return nodes


@functools.cache
def nodes() -> dict[str, Node]:
    """The code location's graph (built on first use: asset modules import the lineage that uses it)."""
    from .assets import all_assets

    return build(all_assets)


def node(op: str) -> Node:
    return nodes()[op]


def ops(groups=None) -> list[str]:
    """Op names in dependency order, optionally only those in `groups`."""
    return [op for op, n in nodes().items() if groups is None or n.group in groups]


def partitioned_ops() -> tuple[str, ...]:
    return tuple(op for op, n in nodes().items() if n.partitioned)


def accelerated_ops() -> tuple[str, ...]:
    return tuple(op for op, n in nodes().items() if n.accelerated)


def config_classes() -> dict[str, type]:
    return {op: n.config_class for op, n in nodes().items() if n.config_class is not None}
