"""Which shards a global asset spans, and the checks that they are all in step."""


import pyarrow as pa
from dagster import AssetExecutionContext

from resources.storage import CurationStore

from ..arrays import sort_by_id
from ..partitions import shards


def registered_shards(context: AssetExecutionContext) -> list[str]:
    keys = sorted(context.instance.get_dynamic_partitions(shards.name))
    if not keys:
        raise ValueError(
            "shards: no shards are registered; run `curate run` or the `register_new_shards` sensor "
            "to register the source's shards first"
        )
    return keys


def require_partitions(store: CurationStore, asset: str, keys: list[str]) -> None:
    have = set(store.partitions(asset))
    missing = [k for k in keys if k not in have]
    if missing:
        more = " ..." if len(missing) > 10 else ""
        raise ValueError(f"{asset}: not materialized for shard(s) {missing[:10]}{more}; materialize it for them first")


def read_shards(store: CurationStore, asset: str, keys: list[str], columns: list[str] | None = None,
                version_column: str | None = None, expected_version: str | None = None,
                upstream: str = "") -> pa.Table:
    """All given shards of `asset`, sorted by example_id.

    With `version_column`, every shard must have been computed from `expected_version` of its
    upstream asset; stale shards are named in the error, so the user knows what to re-run.
    """
    require_partitions(store, asset, keys)
    tables, stale = [], []
    for key in keys:
        t = store.read(asset, [key], columns=columns)
        if version_column is not None:
            if set(t.column(version_column).unique().to_pylist()) != {expected_version}:
                stale.append(key)
        tables.append(t)
    if stale:
        raise ValueError(
            f"{asset}: shard(s) {stale[:10]} were computed from an older {upstream}; "
            f"re-materialize {asset} for them"
        )
    return sort_by_id(pa.concat_tables(tables, promote_options="permissive"))
