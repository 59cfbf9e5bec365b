"""Decoded vector files kept in memory for the rest of a pipeline run, up to a byte budget.

A run reads each shard's vectors five times (the embeddings check, the k-means sample, the
assignment, the representatives and the probe's expected loss), minutes apart. Where the page
cache keeps them, a re-read costs the Parquet decode; where it does not (this project's machines
page out file pages unused for a minute: DAMON), it costs a disk read, measured at 1M rows as
the largest part of the graph's time over the plain script, which holds everything in memory.
So the store keeps the tables with vectors it writes or reads, first come first kept (a
sequential scan over more shards than fit would evict each shard before the next pass needs it),
until `CURATION_READ_CACHE_MB` (default 1024; 0 turns it off) is used; memory stays flat in n.

A file is known by its device, inode, size and modification time, not its path: an atomic
rewrite is a new inode (never served stale), while a staged file promoted by a rename is the
same file. Local files only; `pipeline.run_pipeline` empties the cache when it ends.
"""

from __future__ import annotations

import os
import threading

import pyarrow as pa

DEFAULT_BUDGET_MB = 1024


def _budget_bytes() -> int:
    raw = os.environ.get("CURATION_READ_CACHE_MB", str(DEFAULT_BUDGET_MB))
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"CURATION_READ_CACHE_MB: {raw!r} is not a number of megabytes; set it to e.g. "
                         f"{DEFAULT_BUDGET_MB}, or 0 to turn the read cache off") from None
    return max(0, int(mb * 2**20))


def _identity(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _has_vectors(schema: pa.Schema) -> bool:
    return any((pa.types.is_fixed_size_list(f.type) or pa.types.is_list(f.type))
               and pa.types.is_floating(f.type.value_type) for f in schema)


class TableCache:
    def __init__(self):
        self._tables: dict[tuple, pa.Table] = {}
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._used

    def get(self, path, columns: list[str] | None = None) -> pa.Table | None:
        """The file's table (only `columns`, when given) if it is kept and unchanged, else None."""
        key = _identity(path)
        with self._lock:
            table = self._tables.get(key) if key else None
        if table is None or (columns is not None and not set(columns) <= set(table.column_names)):
            return None
        return table if columns is None else table.select(columns)

    def put(self, path, table: pa.Table) -> None:
        """Keep the whole table of the file at `path` if it holds vectors and fits the budget."""
        if not _has_vectors(table.schema):
            return
        try:
            budget = _budget_bytes()
        except ValueError:  # reported by clear() when a run starts; a write never fails for it
            return
        key = _identity(path)
        size = table.nbytes
        with self._lock:
            if key is None or key in self._tables or self._used + size > budget:
                return
            self._tables[key] = table
            self._used += size

    def clear(self) -> None:
        """Forget every table; raises the one-line error of a bad CURATION_READ_CACHE_MB."""
        _budget_bytes()
        with self._lock:
            self._tables.clear()
            self._used = 0


# One per process: a run's assets each get their own copy of the store resource.
VECTOR_TABLES = TableCache()
