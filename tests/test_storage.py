"""The store: atomic files behind DuckDB views, readable while being rewritten or killed."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from resources import CurationStore


def test_views_follow_partitions_and_versions(store):
    store.write("raw_examples", pa.table({"example_id": ["a", "b"], "shard": ["s1", "s1"]}), "s1")
    store.write("raw_examples", pa.table({"example_id": ["c"], "shard": ["s2"]}), "s2")
    store.write("raw_examples", pa.table({"example_id": ["a2", "b2"], "shard": ["s1", "s1"]}), "s1")
    store.write_version("sensitivity_subset", pa.table({"example_id": ["a"], "run": ["r1"]}), "v1")
    store.write_version("sensitivity_subset", pa.table({"example_id": ["b", "c"], "run": ["r2", "r2"]}), "v2")
    with duckdb.connect(str(store.db_path), read_only=True) as con:
        assert sorted(con.execute("SELECT example_id FROM raw_examples").fetchall()) == [("a2",), ("b2",), ("c",)]
        assert con.execute("SELECT DISTINCT run FROM sensitivity_subset").fetchall() == [("r2",)]
        assert con.execute("SELECT count(*) FROM sensitivity_subset_history").fetchone()[0] == 3
    # The in-memory query path sees the same thing without touching the database file's lock.
    assert store.query("SELECT count(*) AS n FROM sensitivity_subset_history").column("n")[0].as_py() == 3
    assert store.partitions("raw_examples") == ["s1", "s2"]
    with pytest.raises(FileExistsError, match="version 'v2' already exists"):
        store.write_version("sensitivity_subset", pa.table({"example_id": ["x"], "run": ["r3"]}), "v2")


def test_a_staged_partition_is_invisible_until_promoted(store):
    store.write("raw_examples", pa.table({"example_id": ["a"], "shard": ["s1"]}), "s1")
    staged = pa.table({"example_id": ["b", "c"], "shard": ["s1", "s1"]})
    store.stage("raw_examples", staged, "s1", provenance={"source": "f1"})
    store.stage("raw_examples", pa.table({"example_id": ["d"], "shard": ["s2"]}), "s2")
    assert store.query("SELECT example_id FROM raw_examples").column("example_id").to_pylist() == ["a"]
    assert store.partitions("raw_examples") == ["s1"] and store.asset_names() == ["raw_examples"]
    assert store.staged_provenance("raw_examples", "s1") == {"source": "f1"}
    assert store.staged_provenance("raw_examples", "s3") is None
    store.promote("raw_examples", "s1")
    with duckdb.connect(str(store.db_path), read_only=True) as con:
        assert sorted(con.execute("SELECT example_id FROM raw_examples").fetchall()) == [("b",), ("c",)]
    assert store.provenance("raw_examples", "s1") == {"source": "f1"}
    assert store.staged_provenance("raw_examples", "s1") is None  # moved, not copied
    store.clear_staged()
    assert store.staged_provenance("raw_examples", "s2") is None and store.partitions("raw_examples") == ["s1"]


def test_float_vectors_are_stored_plain_with_version_2_pages(store):
    import pyarrow.parquet as pq

    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.float32)), 4)
    path = store.write("embeddings", pa.table({"example_id": ["a", "b", "c"], "embedding": vec}), "s1")
    meta = pq.ParquetFile(path).metadata
    codecs = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).compression
              for i in range(meta.num_columns)}
    assert codecs == {"example_id": "ZSTD", "embedding.list.element": "UNCOMPRESSED"}
    assert store.read("embeddings", ["s1"]).column("embedding").combine_chunks().equals(vec)
    assert store.query("SELECT embedding[2] AS x FROM embeddings ORDER BY example_id").column("x").to_pylist() == [1, 5, 9]


def test_sensitivities_view_normalises_over_all_shards(store):
    store.write("sensitivities", pa.table({"example_id": ["a", "b"], "sensitivity": [1.0, 3.0]}), "s1")
    store.write("sensitivities", pa.table({"example_id": ["c"], "sensitivity": [4.0]}), "s2")
    rows = dict(store.query("SELECT example_id, probability FROM sensitivities").to_pylist()[i].values()
                for i in range(3))
    assert rows == {"a": 0.125, "b": 0.375, "c": 0.5}


@pytest.mark.parametrize("bad", ["../x", "a b", "", "x;drop"])
def test_partition_keys_and_names_are_validated(store, bad):
    with pytest.raises(ValueError, match="partition key"):
        store.write("raw_examples", pa.table({"x": [1]}), bad)
    with pytest.raises(ValueError, match="table name"):
        store.write(bad or "1bad", pa.table({"x": [1]}))


WRITER = textwrap.dedent("""
    import sys, numpy as np, pyarrow as pa
    from resources import CurationStore
    store = CurationStore(database_path=sys.argv[1])
    i = 0
    while True:
        i += 1
        v = np.full(400_000, i, dtype=np.int64)
        store.write("embeddings", pa.table({"gen": v, "x": np.random.default_rng(i).random(400_000)}), "s0")
        print(i, flush=True)
""")


def test_a_killed_writer_never_leaves_a_half_written_table(tmp_path):
    """SIGKILL a process that keeps rewriting one partition: what is stored is always whole."""
    db = tmp_path / "k.duckdb"
    store = CurationStore(database_path=str(db))
    rng = np.random.default_rng(0)
    for trial in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True,
                                cwd=os.path.dirname(os.path.dirname(__file__)))
        proc.stdout.readline()  # at least one complete write
        time.sleep(float(rng.uniform(0.0, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t = store.read("embeddings", ["s0"])
        gen = t.column("gen").to_numpy()
        assert t.num_rows == 400_000 and (gen == gen[0]).all()  # one whole generation, never a mix
        assert store.partitions("embeddings") == ["s0"]
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 400_000
