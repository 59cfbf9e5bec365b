"""Admission checks and hashes referenced vectors a batch at a time: the same rows, type and
content hash as loading the whole shard, and every fault still refused in load_shard's words."""

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources import ExampleSource
from resources.content_hash import HASH_BATCH_ROWS, content_hash, whole_table_hash


def _write(path, n, d=8, row_group=None, kind="fixed", labels=True, seed=0, vectors=None):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) if vectors is None else vectors
    emb = (pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d) if kind == "fixed"
           else pa.array(list(x), pa.list_(pa.float32())))
    cols = {"id": [f"{path.stem}-{i}" for i in range(n)], "vec": emb}
    if labels:
        cols["label"] = [None if i % 7 == 0 else f"c{i % 3}" for i in range(n)]
    pq.write_table(pa.table(cols), path, row_group_size=row_group)
    return x


def _source(folder):
    return ExampleSource(kind="files", path=str(folder / "*.parquet"), embedding_column="vec", text_column=None)


@pytest.mark.parametrize("n,row_group,kind,labels", [
    (3 * HASH_BATCH_ROWS + 5, None, "fixed", True),     # several hash batches and a short last one
    (2 * HASH_BATCH_ROWS + 1, 5_000, "list", True),     # row groups out of step with the batches
    (HASH_BATCH_ROWS, HASH_BATCH_ROWS, "fixed", False),  # exactly one batch, no labels
    (3, None, "list", True),
])
def test_streamed_shard_is_the_loaded_shard_without_its_vectors_and_hashes_alike(tmp_path, n, row_group, kind,
                                                                                  labels):
    _write(tmp_path / "a.parquet", n, row_group=row_group, kind=kind, labels=labels)
    source = _source(tmp_path)
    full = source.load_shard("a")
    rows, vector_type, content = source.load_shard_streamed("a")
    assert rows.equals(full.drop_columns(["embedding"]))
    assert vector_type == full.schema.field("embedding").type
    assert content == content_hash(full)


def test_the_hash_is_defined_on_fixed_batches_whatever_the_chunking():
    n = 2 * HASH_BATCH_ROWS + 100
    ids = pa.array([f"e{i}" for i in range(n)])
    table = pa.table({"example_id": ids, "x": pa.array(np.arange(n, dtype=np.float32))})
    sink = pa.BufferOutputStream()  # the definition, written out
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for start in range(0, n, HASH_BATCH_ROWS):
            stop = min(n, start + HASH_BATCH_ROWS)
            writer.write_batch(pa.record_batch([pa.array([f"e{i}" for i in range(start, stop)]),
                                                pa.array(np.arange(start, stop, dtype=np.float32))],
                                               schema=table.schema))
    assert content_hash(table) == hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]
    rechunked = pa.concat_tables([table.slice(0, 7), table.slice(7, HASH_BATCH_ROWS), table.slice(HASH_BATCH_ROWS + 7)])
    assert content_hash(rechunked) == content_hash(table)
    changed = table.set_column(1, "x", pa.array(np.r_[np.arange(n - 1), 0].astype(np.float32)))
    assert content_hash(changed) != content_hash(table)
    # One batch (older stores' hash) differs once there are several: embeddings accepts either.
    assert whole_table_hash(table) != content_hash(table)


@pytest.mark.parametrize("fault", ["nan", "inf", "null_vector"])
def test_a_faulty_vector_is_left_to_load_shard_which_names_it(tmp_path, fault):
    n = HASH_BATCH_ROWS + 50
    x = np.random.default_rng(1).normal(size=(n, 8)).astype(np.float32)
    if fault == "null_vector":
        mask = np.zeros(n, dtype=bool)
        mask[n - 3] = True
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8, mask=pa.array(mask))
        pq.write_table(pa.table({"id": [f"a-{i}" for i in range(n)], "vec": emb}), tmp_path / "a.parquet")
        expected = r"^source.embedding_column='vec': 1 example\(s\) in shard 'a' have no embedding \(null\)$"
    else:
        x[n - 3, 2] = np.nan if fault == "nan" else np.inf
        _write(tmp_path / "a.parquet", n, vectors=x)
        expected = (r"^source.embedding_column='vec': 1 embedding\(s\) in shard 'a' contain NaN or infinite "
                    rf"values \(first at row {n - 3}, counting from 0\); recompute or drop those rows$")
    source = _source(tmp_path)
    assert source.load_shard_streamed("a") is None
    with pytest.raises(ValueError, match=expected):
        source.load_shard("a")


def test_ragged_vectors_and_duplicate_ids_are_left_to_load_shard(tmp_path):
    n = HASH_BATCH_ROWS + 10
    x = list(np.random.default_rng(2).normal(size=(n, 8)).astype(np.float32))
    x[n - 1] = x[n - 1][:5]
    pq.write_table(pa.table({"id": [f"a-{i}" for i in range(n)], "vec": pa.array(x, pa.list_(pa.float32()))}),
                   tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": ["b-0", "b-0"], "vec": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32()))}),
                   tmp_path / "b.parquet")
    source = _source(tmp_path)
    assert source.load_shard_streamed("a") is None and source.load_shard_streamed("b") is None
    with pytest.raises(ValueError, match=r"differ in dimension \(5\.\.8; row .* has 5, row 0 has 8\)$"):
        source.load_shard("a")
    with pytest.raises(ValueError, match=r"duplicate ids in shard 'b'"):
        source.load_shard("b")


def test_vectors_that_cannot_be_referenced_are_not_streamed(tmp_path):
    x = np.random.default_rng(3).normal(size=(20, 4))  # float64: copied as float32, not referenced
    pq.write_table(pa.table({"id": [f"a-{i}" for i in range(20)],
                             "vec": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)}),
                   tmp_path / "a.parquet")
    assert _source(tmp_path).load_shard_streamed("a") is None
