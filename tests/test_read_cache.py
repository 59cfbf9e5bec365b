"""The run's read cache never serves what the store no longer holds, and stays within its budget."""

import numpy as np
import pyarrow as pa
import pytest

from curation_assets.arrays import embedding_matrix, embedding_table
from resources.read_cache import VECTOR_TABLES
from resources.storage import CurationStore


@pytest.fixture(autouse=True)
def empty_cache():
    VECTOR_TABLES.clear()
    yield
    VECTOR_TABLES.clear()  # after monkeypatch has put the environment back


def _vectors(seed: int, n: int = 500, d: int = 16) -> pa.Table:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return embedding_table(pa.array([f"id{i}" for i in range(n)]), x)


def test_a_rewritten_or_promoted_file_is_read_as_stored(tmp_path):
    store = CurationStore(database_path=str(tmp_path / "c.duckdb"))
    first, second = _vectors(0), _vectors(1)
    store.write("embeddings", first, "a", compression="none")
    assert VECTOR_TABLES.used_bytes > 0  # kept at write time
    assert store.read("embeddings", ["a"]).equals(first)
    store.write("embeddings", second, "a", compression="none")  # an atomic rewrite: a new file
    got = store.read("embeddings", ["a"])
    np.testing.assert_array_equal(embedding_matrix(got.column("embedding")),
                                  embedding_matrix(second.column("embedding")))
    rows = store.read_rows("embeddings", "a", [3, 7], columns=["embedding"])
    np.testing.assert_array_equal(embedding_matrix(rows.column("embedding")),
                                  embedding_matrix(second.column("embedding"))[[3, 7]])
    third = _vectors(2)
    store.stage("embeddings", third, "a", compression="none")
    store.promote("embeddings", "a")  # a rename: the same file, served from the cache, correctly
    assert VECTOR_TABLES.get(store._file("embeddings", "a")) is not None
    np.testing.assert_array_equal(embedding_matrix(store.read("embeddings", ["a"]).column("embedding")),
                                  embedding_matrix(third.column("embedding")))


def test_the_budget_bounds_what_is_kept_and_tables_without_vectors_are_not(tmp_path, monkeypatch):
    store = CurationStore(database_path=str(tmp_path / "c.duckdb"))
    one = _vectors(0).nbytes
    monkeypatch.setenv("CURATION_READ_CACHE_MB", str(2.5 * one / 2**20))
    for i in range(5):
        store.write("embeddings", _vectors(i), f"s{i}", compression="none")
        assert VECTOR_TABLES.used_bytes <= 2.5 * one
    assert VECTOR_TABLES.used_bytes == 2 * one  # the first two kept, the others read from disk
    for i in range(5):
        assert store.read("embeddings", [f"s{i}"]).equals(_vectors(i))
    VECTOR_TABLES.clear()
    store.write("raw_examples", pa.table({"example_id": ["a"], "text": ["x"]}), "s0")
    assert VECTOR_TABLES.used_bytes == 0
    monkeypatch.setenv("CURATION_READ_CACHE_MB", "lots")
    store.write("embeddings", _vectors(0), "s0", compression="none")  # written, not kept
    assert VECTOR_TABLES.used_bytes == 0 and store.read("embeddings", ["s0"]).equals(_vectors(0))
    with pytest.raises(ValueError, match="CURATION_READ_CACHE_MB: 'lots' is not a number"):
        VECTOR_TABLES.clear()  # what run_pipeline calls before it touches anything
