"""A local Parquet source's float32 vectors are read where they are (resources/vector_references.py):
the store holds a pointer, every read and view gives what a copy would, and a file that changes or
leaves the source is never read as if it were the one admitted."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance

from conftest import make_resources
from curation_assets.pipeline import run_pipeline
from resources import CurationStore, ExampleSource
from resources.vector_references import POINTER_MAX_BYTES

CONFIG = {"centroids": {"config": {"n_clusters": 3, "seed": 1}}, "subsets": {"config": {"budget": 12, "seed": 1}}}
D = 16


def _quiet(*_):
    pass


def _vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(3, D))[rng.integers(0, 3, n)] * 4 + rng.normal(size=(n, D))).astype(np.float32)


def _write(path, name: str, rows: int, seed: int, vector_type) -> None:
    x = _vectors(rows, seed)
    if vector_type == "float64":  # the same values, in a type that is copied
        vec = pa.array([list(map(float, v)) for v in x], pa.list_(pa.float64()))
    elif vector_type == "list":
        vec = pa.array(list(x), pa.list_(pa.float32()))
    else:
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D)
    pq.write_table(pa.table({"id": [f"{name}-{j}" for j in range(rows)], "label": [f"c{j % 3}" for j in range(rows)],
                             "vec": vec}), path / f"{name}.parquet")


def _run(tmp_path, vector_type: str, store_name: str = "c"):
    folder = tmp_path / f"src-{vector_type}"
    folder.mkdir(exist_ok=True)
    for name, rows, seed in (("a", 40, 0), ("b", 50, 1)):
        _write(folder, name, rows, seed, vector_type)
    source = ExampleSource(kind="files", path=str(folder / "*.parquet"), embedding_column="vec", text_column=None)
    store = CurationStore(database_path=str(tmp_path / store_name / "c.duckdb"))
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=False)
    return source, store, folder


@pytest.mark.parametrize("vector_type", ["fixed", "list"])
def test_referenced_vectors_read_and_query_as_a_copy_would_and_give_the_same_subset(tmp_path, vector_type):
    _, ref_store, _ = _run(tmp_path, vector_type, "ref")
    _, copy_store, _ = _run(tmp_path, "float64", "copy")
    for shard, rows in (("a", 40), ("b", 50)):  # a pointer instead of a copy
        pointer, copy = (s.root / "embeddings" / f"{shard}.parquet" for s in (ref_store, copy_store))
        assert pointer.stat().st_size <= POINTER_MAX_BYTES and pq.ParquetFile(pointer).metadata.num_rows == 0
        assert pq.ParquetFile(copy).metadata.num_rows == rows
        mine, theirs = ref_store.read("embeddings", [shard]), copy_store.read("embeddings", [shard])
        assert mine.schema.remove_metadata() == theirs.schema.remove_metadata() and mine.equals(theirs)
        assert ref_store.row_count("embeddings", shard) == theirs.num_rows
        assert ref_store.reference("embeddings", shard)["path"].endswith(f"{shard}.parquet")
        assert copy_store.reference("embeddings", shard) is None
        rows = [3, 0, 17, 3]
        assert ref_store.read_rows("embeddings", shard, rows, ["embedding"]).equals(
            copy_store.read_rows("embeddings", shard, rows, ["embedding"]))
        assert ref_store.read_rows("embeddings", shard, rows).equals(mine.take(rows))
        wanted = [(shard, rows), ("a", [1]), (shard, [])]  # several at once, in the order asked
        for got, (key, r) in zip(ref_store.read_rows_of("embeddings", wanted), wanted, strict=True):
            assert got.equals(ref_store.read_rows("embeddings", key, r))
        for store, whole in ((ref_store, mine), (copy_store, theirs)):  # a pass a batch at a time: the same rows
            batches = list(store.iter_batches("embeddings", shard, batch_rows=7))
            assert len(batches) == -(-whole.num_rows // 7) and pa.concat_tables(batches).equals(whole)
    sql = "SELECT example_id, embedding FROM embeddings ORDER BY example_id"
    for con_of in (lambda s: s.connect(), lambda s: s.database()):  # in-memory views, and the database file's
        with con_of(ref_store) as a, con_of(copy_store) as b:
            assert a.sql(sql).to_arrow_table().equals(b.sql(sql).to_arrow_table())
            kind = "SELECT DISTINCT typeof(example_id), typeof(embedding) FROM embeddings"
            assert a.sql(kind).fetchall() == b.sql(kind).fetchall() == [("VARCHAR", "FLOAT[]")]
    subset = "SELECT example_id, weight FROM sensitivity_subset ORDER BY example_id"
    assert ref_store.query(subset).equals(copy_store.query(subset))


def test_a_changed_source_file_is_refused_then_reloaded_and_a_removed_one_leaves_the_view(tmp_path):
    source, store, folder = _run(tmp_path, "fixed")
    with DagsterInstance.ephemeral() as instance:
        _write(folder, "a", 40, 7, "fixed")  # other vectors, same ids
        os.utime(folder / "a.parquet", ns=(1, 1))  # a new modification time even on a coarse clock
        with pytest.raises(ValueError, match=r"^embeddings a.parquet: the vectors are read from .*a.parquet, which "
                                             r"changed since the shard was admitted; run the pipeline again"):
            store.read("embeddings", ["a"])
        run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=False)
        got = store.read("embeddings", ["a"]).column("embedding").combine_chunks().flatten().to_numpy()
        assert np.array_equal(got.reshape(-1, D), _vectors(40, 7))

        (folder / "a.parquet").unlink()
        run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=False)
    assert store.partitions("embeddings") == ["b"]
    with store.database() as con:  # the view no longer names the removed file
        assert con.sql("SELECT count(*) FROM embeddings").fetchall() == [(50,)]
    assert store.query("SELECT count(*) AS n FROM embeddings").column("n")[0].as_py() == 50
