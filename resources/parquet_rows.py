"""Chosen rows of a Parquet file, read in batches that are dropped as soon as their rows are taken.

Why: the k-means sample and the representatives' and probe's rows are a few percent of each
shard. Reading the whole column to `take` from it allocates the shard's vectors (154 MB at
100k x 384) only to drop them; on a VM where a fresh page is expensive that allocation costs
more than the decoding (benchmarks/scale.py). Batches of a few thousand rows reuse the same
memory, and a shard's vectors are never all held.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 8192  # ~12 MB of 384-d float32 vectors: small enough to be reused, large enough to decode fast


def take_rows(parquet: pq.ParquetFile, rows, columns: list[str] | None, where: str) -> pa.Table:
    """The rows at the given positions (any order, repeats allowed), as `Table.take` would give them."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    n = parquet.metadata.num_rows
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        bad = rows[(rows < 0) | (rows >= n)][0]
        raise IndexError(f"{where}: row {bad} is out of range; the file has {n} rows")
    wanted, back = np.unique(rows, return_inverse=True)
    parts, start = [], 0
    if wanted.size:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False):
            lo, hi = np.searchsorted(wanted, [start, start + batch.num_rows])
            if hi > lo:
                parts.append(batch.take(pa.array(wanted[lo:hi] - start)))
            start += batch.num_rows
            if hi == wanted.size:  # the last chosen row is read: the rest of the file is not
                break
    schema = parquet.schema_arrow if columns is None else pa.schema([parquet.schema_arrow.field(c) for c in columns])
    table = pa.Table.from_batches(parts, schema=schema.remove_metadata()) if parts else schema.empty_table()
    return table if np.array_equal(wanted, rows) else table.take(pa.array(back))
