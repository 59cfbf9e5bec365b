"""Which shards a global asset spans, and the checks that they are all in step."""


import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext

from resources.storage import CurationStore

from ..arrays import embedding_matrix, sort_by_id
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


def shard_row_counts(store: CurationStore, asset: str, keys: list[str]) -> np.ndarray:
    """Rows per shard from the Parquet footers: sizes the global draws without reading data."""
    require_partitions(store, asset, keys)
    return np.array([store.row_count(asset, k) for k in keys], dtype=np.int64)


def split_rows(global_rows, counts) -> list[np.ndarray]:
    """Global row numbers (over the shards in order) -> sorted local row numbers per shard."""
    rows = np.sort(np.asarray(global_rows, dtype=np.int64))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [rows[(rows >= lo) & (rows < hi)] - lo for lo, hi in zip(bounds[:-1], bounds[1:])]


def gather_rows(store: CurationStore, asset: str, keys: list[str], local_rows: list[np.ndarray],
                columns: list[str]) -> pa.Table:
    """The chosen rows of every shard, shard by shard: memory holds one shard plus the rows kept."""
    parts = [store.read_rows(asset, key, rows, columns=columns) for key, rows in zip(keys, local_rows) if rows.size]
    return pa.concat_tables(parts) if parts else store.read_rows(asset, keys[0], [], columns=columns)


def gather_embeddings(store: CurationStore, keys: list[str], local_rows: list[np.ndarray],
                      progress=None) -> np.ndarray:
    parts = []
    for key, rows in zip(keys, local_rows):
        if rows.size:
            parts.append(embedding_matrix(
                store.read_rows("embeddings", key, rows, columns=["embedding"]).column("embedding")))
        if progress is not None:
            progress.update(1)
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def embedding_dimension(store: CurationStore, key: str) -> int:
    field = store.schema("embeddings", key).field("embedding")
    return field.type.list_size if pa.types.is_fixed_size_list(field.type) else -1
