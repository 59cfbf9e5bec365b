"""Data sources: the bundled corpus, an existing DuckDB table, and the shard-registering sensor."""

import duckdb
import numpy as np
import pytest
from dagster import DagsterInstance, build_sensor_context

from curation_assets.sensors import register_new_shards
from resources import ExampleSource
from resources.data_source import stable_shard


def test_bundled_bbc_news_is_complete_and_sharded_stably():
    source = ExampleSource()
    keys = source.list_shards()
    assert keys == ["bbc-0", "bbc-1", "bbc-2", "bbc-3"]
    tables = [source.load_shard(k) for k in keys]
    ids = [i for t in tables for i in t.column("example_id").to_pylist()]
    assert len(ids) == len(set(ids)) == 2225  # the whole corpus, each article once
    labels = [x for t in tables for x in t.column("label").to_pylist()]
    assert {lab: labels.count(lab) for lab in set(labels)} == {
        "business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    for key, t in zip(keys, tables):
        assert set(t.column("shard").to_pylist()) == {key}
        assert all(stable_shard(i, 4) == int(key[-1]) for i in t.column("example_id").to_pylist())
        assert min(len(x) for x in t.column("text").to_pylist()) > 100


def test_max_examples_per_shard_is_a_fixed_subset():
    a = ExampleSource(max_examples_per_shard=7).load_shard("bbc-2")
    b = ExampleSource(max_examples_per_shard=7).load_shard("bbc-2")
    assert a.num_rows == 7 and a.equals(b)


def test_duckdb_table_source_shards_every_row_once(tmp_path):
    db = tmp_path / "src.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA s")
        con.execute('CREATE TABLE s."my table" AS SELECT i AS doc_id, \'text \' || i AS body, '
                    "CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END AS y FROM range(100) t(i)")
    source = ExampleSource(kind="duckdb_table", database=str(db), table='s.my table', id_column="doc_id",
                           text_column="body", label_column="y", num_shards=3)
    keys = source.list_shards()
    assert keys == ["shard-0", "shard-1", "shard-2"]
    rows = [r for k in keys for r in source.load_shard(k).to_pylist()]
    assert sorted(int(r["example_id"]) for r in rows) == list(range(100))
    assert all(r["text"] == f"text {r['example_id']}" for r in rows)
    assert all(r["label"] == ("even" if int(r["example_id"]) % 2 == 0 else "odd") for r in rows)


def test_duckdb_table_source_names_a_missing_table(tmp_path):
    db = tmp_path / "src.duckdb"
    duckdb.connect(str(db)).close()
    source = ExampleSource(kind="duckdb_table", database=str(db), table="nope; DROP TABLE x", num_shards=1)
    with pytest.raises(ValueError, match=r"source.table: 'nope; DROP TABLE x' not found"):
        source.load_shard("shard-0")


def test_sensor_launches_one_refresh_per_change_and_registers_nothing_itself(tmp_path, instance):
    (tmp_path / "one.csv").write_text("id,text\n1,hello\n")
    source = ExampleSource(kind="files", path=str(tmp_path / "*.csv"))
    result = register_new_shards(build_sensor_context(instance=instance, resources={"source": source}))
    assert [r.tags["curation/new_shards"] for r in result.run_requests] == ["one"]
    # the refresh registers a shard once it is validated against the store, not the sensor
    assert not result.dynamic_partitions_requests and instance.get_dynamic_partitions("shards") == []
    instance.add_dynamic_partitions("shards", ["one"])
    assert not register_new_shards(build_sensor_context(instance=instance, resources={"source": source})).run_requests
    (tmp_path / "two words.csv").write_text("id,text\n2,bye\n")
    result = register_new_shards(build_sensor_context(instance=instance, resources={"source": source}))
    assert [r.tags["curation/new_shards"] for r in result.run_requests] == ["two_words"]
    # One refresh run per new set of shards: the run key makes the request idempotent.
    assert result.run_requests[0].run_key != register_new_shards(
        build_sensor_context(instance=DagsterInstance.ephemeral(), resources={"source": source})).run_requests[0].run_key
    # a file that left the source launches a refresh too (which retires its rows)
    (tmp_path / "one.csv").unlink()
    instance.add_dynamic_partitions("shards", ["two_words"])
    result = register_new_shards(build_sensor_context(instance=instance, resources={"source": source}))
    assert [r.tags["curation/removed_shards"] for r in result.run_requests] == ["one"]


def test_ids_are_read_as_strings_whatever_their_type(tmp_path):
    (tmp_path / "n.csv").write_text("id,text,label\n10,a,x\n2,b,y\n")
    t = ExampleSource(kind="files", path=str(tmp_path / "*.csv")).load_shard("n")
    assert t.column("example_id").to_pylist() == ["10", "2"]
    assert np.all(np.array(t.column("label").to_pylist()) == np.array(["x", "y"]))
