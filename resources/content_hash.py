"""What identifies a shard's rows: the sha256 of the rows as an Arrow IPC stream in batches of
HASH_BATCH_ROWS rows.

Equal data, equal hash, whatever the source or the chunking. The batches are fixed so the hash
can be taken as the rows are read, a batch at a time (`ContentHasher`): admission validates and
hashes a shard's vectors without holding them all (`ExampleSource.load_shard_streamed`). Stores
written before the batches were fixed hashed the rows as one batch (`whole_table_hash`).
"""

import hashlib
from collections.abc import Iterator

import pyarrow as pa

HASH_BATCH_ROWS = 8192


class _HashingSink:
    """A write-only file that hashes what is written to it and keeps none of it."""

    closed = False

    def __init__(self):
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class ContentHasher:
    """The content hash of rows written in order as record batches of exactly HASH_BATCH_ROWS rows
    (the last may be shorter): sha256 (hardware-accelerated, ~3x md5) of the stream as written."""

    def __init__(self, schema: pa.Schema):
        self._sink = _HashingSink()
        self._writer = pa.ipc.new_stream(pa.PythonFile(self._sink, mode="w"), schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def hexdigest(self) -> str:
        self._writer.close()
        return self._sink.digest.hexdigest()[:16]


def canonical(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The array in fresh buffers of exactly its rows: IPC writes a slice of a string array with
    the bytes of the rows around it, so equal rows would hash apart by where they were cut from."""
    return pa.concat_arrays(array.chunks if isinstance(array, pa.ChunkedArray) else [array])


def hash_batches(table: pa.Table) -> Iterator[pa.RecordBatch]:
    """The table's rows as the record batches the hash is defined on."""
    for start in range(0, table.num_rows, HASH_BATCH_ROWS):
        part = table.slice(start, HASH_BATCH_ROWS)
        yield pa.RecordBatch.from_arrays([canonical(c) for c in part.columns], schema=table.schema)


def content_hash(table: pa.Table) -> str:
    hasher = ContentHasher(table.schema)
    for batch in hash_batches(table):
        hasher.write(batch)
    return hasher.hexdigest()


def whole_table_hash(table: pa.Table) -> str:
    """The hash stores made before HASH_BATCH_ROWS was fixed recorded: the rows as one batch."""
    sink = _HashingSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return sink.digest.hexdigest()[:16]
