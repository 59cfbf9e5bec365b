"""Arrow <-> numpy conversions for the stored tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def embedding_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A fixed-size list column whose values are declared non-null: Parquet then stores no
    definition levels per float, which reads back ~1.35x faster."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    typ = pa.list_(pa.field("item", pa.float32(), nullable=False), matrix.shape[1])
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), type=typ)


def embedding_table(ids, matrix: np.ndarray) -> pa.Table:
    """(example_id, embedding) with the embedding declared non-null (see embedding_column)."""
    col = embedding_column(matrix)
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    return pa.Table.from_arrays([ids, col], schema=pa.schema([
        pa.field("example_id", ids.type), pa.field("embedding", col.type, nullable=False)]))


def embedding_matrix(column) -> np.ndarray:
    """(n, d) float32 from a fixed-size or variable list column (all rows the same length)."""
    if isinstance(column, pa.ChunkedArray) and pa.types.is_fixed_size_list(column.type) and column.null_count == 0:
        d = column.type.list_size
        if column.num_chunks == 1 and pa.types.is_float32(column.type.value_type):
            # One chunk of float32 (a shard read back from its file): a read-only view, no copy.
            return column.chunk(0).flatten().to_numpy().reshape(-1, d)
        # Stream each chunk's values into one preallocated array: one copy, no concatenation.
        out = np.empty((len(column), d), dtype=np.float32)
        row = 0
        for chunk in column.chunks:
            values = chunk.flatten().to_numpy(zero_copy_only=False)
            out[row: row + len(chunk)] = values.reshape(-1, d)
            row += len(chunk)
        return out
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(col) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
        flat = col.flatten()
    else:
        lengths = np.asarray(col.value_lengths())
        if lengths.min() != lengths.max():
            raise ValueError(f"embedding: rows differ in dimension ({lengths.min()}..{lengths.max()})")
        d = int(lengths[0])
        flat = col.flatten()
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, d)


def sort_by_id(table: pa.Table, column: str = "example_id") -> pa.Table:
    """A canonical row order, independent of how shards were listed or written."""
    return table.sort_by([(column, "ascending")])


def subset_rows(table: pa.Table) -> pa.Table:
    """The subset's rows in the export's column types, with their stored position (a tie-break
    for repeated ids). balanced_subset calls its cluster `leaf_cluster`."""
    n = table.num_rows
    names = table.column_names
    cluster = "cluster_id" if "cluster_id" in names else "leaf_cluster" if "leaf_cluster" in names else None
    col = lambda name, typ: (table.column(name).cast(typ) if name in names  # noqa: E731
                             else pa.nulls(n, typ))
    return pa.table({
        "example_id": table.column("example_id").cast(pa.string()),
        "weight": table.column("weight").cast(pa.float64()),
        "draws": col("draws", pa.int64()),
        "probability": col("probability", pa.float64()),
        "cluster_id": table.column(cluster).cast(pa.int32()) if cluster else pa.nulls(n, pa.int32()),
        "pos": pa.array(np.arange(n, dtype=np.int64)),
    })
