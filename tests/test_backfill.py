"""`curate backfill`: one Dagster run per shard, several at once, multiprocess steps, no lost rows.

Real runs in a real persistent instance: the step processes only learn the store and the source
from the CURATION_* environment, so a wrong hand-over shows up as missing or misplaced rows.
"""

import re

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._serdes import serialize_value

from curation_assets import cli
from curation_assets.definitions import ENV_VARS, source_from_env
from resources import CurationStore

N_FILES, ROWS, DIM = 8, 200, 16
LOCK = re.compile(r"\block", re.IGNORECASE)  # "lock", "locked", "Locking"; not "block"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Eight Parquet shards with precomputed vectors, an empty Dagster home and database path."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(7)
    vectors = {}
    for f in range(N_FILES):
        ids = [f"doc-{f}-{i:03d}" for i in range(ROWS)]
        vecs = rng.normal(size=(ROWS, DIM)).astype(np.float32)
        vectors.update(zip(ids, vecs))
        pq.write_table(pa.table({
            "doc_id": ids,
            "body": [f"text of {i}" for i in ids],
            "topic": [("a", "b", "c")[i % 3] for i in range(ROWS)],
            "vec": pa.array([v.tolist() for v in vecs], pa.list_(pa.float32())),
        }), data / f"part{f}.parquet")
    db = tmp_path / "store" / "curation.duckdb"
    args = ["--files", str(data / "*.parquet"), "--id-column", "doc_id", "--text-column", "body",
            "--label-column", "topic", "--embedding-column", "vec", "--database", str(db)]
    return {"args": args, "db": db, "vectors": vectors, "home": tmp_path / "dagster_home"}


def _check_table(con, vectors: dict) -> None:
    rows = con.execute("SELECT count(*), count(DISTINCT example_id), count(DISTINCT shard) FROM raw_examples").fetchone()
    assert rows == (N_FILES * ROWS, N_FILES * ROWS, N_FILES)
    assert {r[0] for r in con.execute("SELECT example_id FROM raw_examples").fetchall()} == set(vectors)
    got = con.execute("SELECT example_id, embedding FROM embeddings").fetchall()
    assert len(got) == N_FILES * ROWS and {i for i, _ in got} == set(vectors)
    for example_id, emb in got:
        np.testing.assert_array_equal(np.asarray(emb, dtype=np.float32), vectors[example_id], err_msg=example_id)


def test_backfill_runs_every_shard_concurrently_without_lock_errors_or_lost_rows(project, instance_storage, capsys):
    """On the default SQLite instance and on PostgreSQL, as deployed."""
    rc = cli.main(["backfill", "--select", "raw_examples,embeddings", "--max-concurrent", "4",
                   "--executor", "multiprocess", *project["args"]])
    out, err = capsys.readouterr()
    assert rc == 0, out + err[-3000:]
    done = [line for line in out.splitlines() if line.startswith("shard ")]
    assert sorted(line.split()[1].rstrip(":") for line in done) == [f"part{f}" for f in range(N_FILES)]
    assert all(line.endswith(" success") for line in done), done

    with DagsterInstance.get() as instance:
        assert sorted(instance.get_dynamic_partitions("shards")) == [f"part{f}" for f in range(N_FILES)]
        runs = instance.get_runs(RunsFilter(tags={"curation/backfill": "cli"}))
        assert len(runs) == N_FILES
        assert {r.tags["dagster/partition"] for r in runs} == {f"part{f}" for f in range(N_FILES)}
        for run in runs:
            assert run.status == DagsterRunStatus.SUCCESS, run.run_id
            logs = instance.all_logs(run.run_id)
            # steps ran in their own processes (the multiprocess executor), not in the run's:
            # raw_examples, embeddings, and the blocking check on the embeddings
            assert sum(e.dagster_event_type and e.dagster_event_type.value == "STEP_WORKER_STARTED"
                       for e in logs) == 3
            locked = [serialize_value(e)[:300] for e in logs if LOCK.search(serialize_value(e))]
            assert not locked, locked

    # the Parquet files through in-memory views, then the persistent database's own views
    with CurationStore(database_path=str(project["db"])).connect() as con:
        _check_table(con, project["vectors"])
    with duckdb.connect(str(project["db"]), read_only=True) as con:
        _check_table(con, project["vectors"])


@pytest.mark.parametrize("extra, message", [
    (["--select", "raw_examples,centroids"], "--select: ['centroids'] cannot be backfilled per shard"),
    (["--select", "nonsense"], "--select: ['nonsense'] cannot be backfilled per shard"),
    (["--shards", "part1,nope"], "--shards: ['nope'] not in the source"),
])
def test_backfill_refuses_bad_selections_before_writing_anything(project, capsys, extra, message):
    rc = cli.main(["backfill", *extra, *project["args"]])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith(f"curate: error: {message}"), err
    assert not project["db"].parent.exists()  # no database, no Parquet file
    with DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("shards") == []
        assert instance.get_runs() == []


@pytest.mark.parametrize("env, message", [
    ({"CURATION_SOURCE_KIND": "csv"}, "CURATION_SOURCE_KIND: 'csv' is not one of"),
    ({"CURATION_SOURCE_KIND": "files"}, "CURATION_SOURCE_PATH: required"),
    ({"CURATION_NUM_SHARDS": "four"}, "CURATION_NUM_SHARDS: expected a whole number"),
    ({"CURATION_MAX_EXAMPLES_PER_SHARD": "0"}, "CURATION_MAX_EXAMPLES_PER_SHARD: must be at least 1"),
    ({"CURATION_SOURCE_KIND": "duckdb_table", "CURATION_SOURCE_DATABASE": "x.duckdb"}, "CURATION_SOURCE_TABLE: required"),
])
def test_bad_environment_is_an_error_naming_the_variable(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        source_from_env(env)


def test_environment_configures_the_source():
    source = source_from_env({"CURATION_SOURCE_KIND": "files", "CURATION_SOURCE_PATH": "d/*.parquet",
                              "CURATION_EMBEDDING_COLUMN": "vec", "CURATION_LABEL_COLUMN": ""})
    assert (source.kind, source.path, source.embedding_column, source.label_column) == (
        "files", "d/*.parquet", "vec", None)  # unset: a column named label, if any


def test_project_home_queues_ui_runs_and_upgrades_only_its_own_yaml(tmp_path, monkeypatch):
    from curation_assets.instance import ensure_store_home

    old = "# Written by curation_assets: a project-local instance with no telemetry.\ntelemetry:\n  enabled: false\n"
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "dagster.yaml").write_text(old)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "ours"))
    ensure_store_home(tmp_path / "c.duckdb")
    with DagsterInstance.get() as instance:  # a bad dagster.yaml would fail here
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        assert "telemetry:\n  enabled: false" in (tmp_path / "ours" / "dagster.yaml").read_text()

    mine = "telemetry:\n  enabled: false\n# my own settings\n"
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "dagster.yaml").write_text(mine)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "user"))
    ensure_store_home(tmp_path / "c.duckdb")
    assert (tmp_path / "user" / "dagster.yaml").read_text() == mine
