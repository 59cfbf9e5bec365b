"""Precomputed vectors read where the user keeps them, not copied into the store.

A local Parquet source already holds its vectors in a columnar file; writing a second copy cost
more than anything else the graph does beyond the plain script (at 1M x 384 the `write` calls
alone took ~12 s, benchmarks/scale.py). So the store keeps, for such a shard, a *pointer*: a
Parquet file with no rows, the schema the copy would have had, the provenance, and a reference
(the source file, its size and modification time when it was admitted, its two columns).
Every read checks the file still has that size and time, and refuses in one line if not; the next
run sees the same change (the source fingerprint) and reloads the shard. The view lists the
referenced files, so SQL users see the same `example_id`, `embedding` rows as a copy's.
"""

import json
import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .parquet_rows import take_rows

# Parquet footer key of a pointer file: what it refers to.
REFERENCE_KEY = b"curation.reference"
# Pointers are a few KB: only files this small are opened to look for a reference.
POINTER_MAX_BYTES = 1 << 16


def pointer_table(schema: pa.Schema, reference: dict) -> pa.Table:
    """The rows-free table written in place of the copy: `schema` with the reference in its footer."""
    meta = dict(schema.metadata or {})
    meta[REFERENCE_KEY] = json.dumps(reference, sort_keys=True).encode()
    return schema.with_metadata(meta).empty_table()


def reference_of(schema: pa.Schema) -> dict | None:
    raw = (schema.metadata or {}).get(REFERENCE_KEY)
    return json.loads(raw) if raw else None


def check_unchanged(reference: dict, where: str) -> None:
    """Raise one line if the referenced file is gone or is not the one admitted."""
    path = reference["path"]
    try:
        st = os.stat(path)
    except OSError as exc:
        raise FileNotFoundError(f"{where}: the vectors are read from {path}, which is gone ({exc.strerror}); "
                                "run the pipeline again: it retires the shard") from exc
    if (st.st_size, st.st_mtime_ns) != (reference["size"], reference["mtime_ns"]):
        raise ValueError(f"{where}: the vectors are read from {path}, which changed since the shard was "
                         "admitted; run the pipeline again: it reloads the shard")


def read_reference(reference: dict, schema: pa.Schema, columns: list[str] | None, where: str,
                   rows=None) -> pa.Table:
    """The referenced rows as the copy would hold them (`schema`: example_id, embedding); with
    `rows`, only those positions (parquet_rows.take_rows)."""
    check_unchanged(reference, where)
    wanted = schema.names if columns is None else columns
    source = _source_columns(reference, wanted)
    if rows is None:
        table = pq.read_table(reference["path"], columns=source)
    else:
        with pq.ParquetFile(reference["path"]) as parquet:
            table = take_rows(parquet, rows, source, where)
    return _as_copy(table, schema, wanted, source)


def iter_reference(reference: dict, schema: pa.Schema, columns: list[str] | None, where: str,
                   batch_rows: int) -> Iterator[pa.Table]:
    """The referenced rows as the copy would hold them, `batch_rows` at a time."""
    check_unchanged(reference, where)
    wanted = schema.names if columns is None else columns
    source = _source_columns(reference, wanted)
    with pq.ParquetFile(reference["path"]) as parquet:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=source, use_threads=False):
            yield _as_copy(pa.Table.from_batches([batch]), schema, wanted, source)


def _source_columns(reference: dict, wanted: list[str]) -> list[str]:
    names = {"example_id": reference["id_column"], "embedding": reference["embedding_column"]}
    return [names[c] for c in wanted]


def _as_copy(table: pa.Table, schema: pa.Schema, wanted: list[str], source: list[str]) -> pa.Table:
    """The source's columns under the copy's names and types."""
    out = []
    for name, column in zip(wanted, source):
        col, typ = table.column(column), schema.field(name).type
        if name == "embedding":  # validated when admitted: no nulls, one length; only the declared type changes
            col = pa.chunked_array([pa.FixedSizeListArray.from_arrays(c.flatten(), type=typ) for c in col.chunks],
                                   type=typ)
        elif col.type != typ:
            col = col.cast(typ)
        out.append(col)
    return pa.Table.from_arrays(out, schema=pa.schema([schema.field(n) for n in wanted]))


def reference_sql(reference: dict, quote_ident, sql_string) -> str:
    """The same rows for a DuckDB view, in the types DuckDB gives a stored copy (VARCHAR, FLOAT[])."""
    return (f"SELECT CAST({quote_ident(reference['id_column'])} AS VARCHAR) AS example_id, "
            f"CAST({quote_ident(reference['embedding_column'])} AS FLOAT[]) AS embedding "
            f"FROM read_parquet({sql_string(reference['path'])})")
