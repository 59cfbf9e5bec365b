"""The store is exactly the source: a shard is checked against the store before anything is
written or registered, a shard that leaves the source leaves every view, and every store has its
own Dagster instance, so two stores can run at once."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pytest
from dagster import DagsterInstance

from conftest import make_resources, snapshot, write_examples
from curation_assets.pipeline import run_pipeline
from resources import CurationStore, ExampleSource

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"centroids": {"config": {"n_clusters": 3, "seed": 1}}, "subsets": {"config": {"budget": 8, "seed": 1}}}
PER_SHARD_VIEWS = ("raw_examples", "embeddings", "cluster_assignments", "sensitivities")


def _vectors(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(3, d))[rng.integers(0, 3, n)] * 4 + rng.normal(size=(n, d))).astype(np.float32)


def _files(folder: Path, names: dict[str, int], d: int = 16) -> ExampleSource:
    """One Parquet file per name with `rows` examples of d-dim vectors; the source reading them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, rows) in enumerate(names.items()):
        write_examples(folder / f"{name}.parquet", [f"{name}-{j}" for j in range(rows)], _vectors(rows, d, i))
    return ExampleSource(kind="files", path=str(folder / "*.parquet"), embedding_column="vec")


def _quiet(*_):
    pass


def test_vectors_of_another_dimension_are_refused_and_the_store_stays_byte_identical(tmp_path):
    source = _files(tmp_path / "vec", {"a": 20, "b": 20})
    store = CurationStore(database_path=str(tmp_path / "db" / "c.duckdb"))
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=False)
        before = snapshot(store.root)
        write_examples(tmp_path / "vec" / "c.parquet", [f"c-{j}" for j in range(10)], _vectors(10, 8, 9))
        with pytest.raises(ValueError) as err:
            run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=False)
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith("source.embedding_column='vec': shard 'c' has 8-dimensional float vectors, "
                                  "but shard(s) ['a', 'b'] in the store have 16-dimensional"), message
        assert snapshot(store.root) == before
        assert sorted(instance.get_dynamic_partitions("shards")) == ["a", "b"]  # the bad file is not registered

        (tmp_path / "vec" / "c.parquet").unlink()
        run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=False)
    assert store.query("SELECT count(*) AS n FROM raw_examples").column("n")[0].as_py() == 40
    assert store.query("SELECT sum(weight) AS w FROM sensitivity_subset").column("w")[0].as_py() == pytest.approx(40, rel=0.5)


def test_a_run_that_fails_on_one_new_shard_writes_none_of_them(tmp_path):
    """Two new files, each valid alone, share an id: neither is written (the first one checked
    would have been, shard by shard)."""
    source = _files(tmp_path / "vec", {"a": 20})
    store = CurationStore(database_path=str(tmp_path / "db" / "c.duckdb"))
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=False)
        before = snapshot(store.root)
        write_examples(tmp_path / "vec" / "b.parquet", ["b-0", "b-1", "x"], _vectors(3, 16, 1))
        write_examples(tmp_path / "vec" / "c.parquet", ["c-0", "x"], _vectors(2, 16, 2))
        with pytest.raises(ValueError, match=r"source.id_column='id': ids in shard 'c' already exist in other "
                                             r"shards: 'x' \(shard b\); ids must be unique"):
            run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=False)
        assert snapshot(store.root) == before
        assert instance.get_dynamic_partitions("shards") == ["a"]


def test_a_removed_file_leaves_every_view_and_probabilities_sum_to_one(tmp_path):
    source = _files(tmp_path / "vec", {"a": 20, "b": 20, "c": 20})
    store = CurationStore(database_path=str(tmp_path / "db" / "c.duckdb"))
    lines = []
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=True)
        (tmp_path / "vec" / "b.parquet").unlink()
        run_pipeline(instance, make_resources(store, source), CONFIG, log=lines.append, extras=True)
        assert sorted(instance.get_dynamic_partitions("shards")) == ["a", "c"]
    assert "1 retired" in lines[0], lines[0]
    with store.database() as con:  # the persistent database's views, as a user queries them
        for view in PER_SHARD_VIEWS:
            ids = {r[0] for r in con.execute(f"SELECT example_id FROM {view}").fetchall()}
            assert len(ids) == 40 and not any(i.startswith("b-") for i in ids), view
        assert con.execute("SELECT sum(probability) FROM sensitivities").fetchone()[0] == pytest.approx(1.0, abs=1e-9)
        for subset in ("sensitivity_subset", "uniform_subset", "balanced_subset", "stratified_subset"):
            picked = {r[0] for r in con.execute(f"SELECT example_id FROM {subset}").fetchall()}
            assert picked and not any(i.startswith("b-") for i in picked), subset
        total = con.execute("SELECT sum(weight) FROM uniform_subset").fetchone()[0]
        assert total == pytest.approx(40, rel=1e-9)  # n/m per pick: n is the current 40, not 60
    # the retired files are kept, out of sight, under .retired/<time>/<asset>/
    kept = sorted(p.relative_to(store.root / ".retired").parts[1:] for p in (store.root / ".retired").rglob("*.parquet"))
    assert ("raw_examples", "b.parquet") in kept and ("embeddings", "b.parquet") in kept
    assert ("sensitivities", "b.parquet") in kept and ("assignment_drift", "b.parquet") in kept


def test_an_instance_serves_one_store_and_refuses_another(tmp_path, monkeypatch):
    from curation_assets.instance import ensure_store_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "shared_home"))
    source = _files(tmp_path / "vec", {"a": 20})
    first = CurationStore(database_path=str(tmp_path / "one" / "c.duckdb"))
    second = CurationStore(database_path=str(tmp_path / "two" / "c.duckdb"))
    home = ensure_store_home(first.db_path)  # $DAGSTER_HOME, set by the user, shared by both stores
    with DagsterInstance.from_config(str(home)) as instance:
        run_pipeline(instance, make_resources(first, source), CONFIG, log=_quiet, extras=False)
        with pytest.raises(ValueError, match=r"DAGSTER_HOME: the instance at .*shared_home already serves the store "
                                             r".*one/c.duckdb; give .*two/c.duckdb its own instance"):
            run_pipeline(instance, make_resources(second, source), CONFIG, log=_quiet, extras=False)
    assert not second.root.exists()


# ---- the command line, as users run it ----------------------------------------------------
def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_") and k != "DAGSTER_HOME"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _curate(*args, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curation_assets.cli", *args], cwd=ROOT, env=env or _env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run_args(files: Path, db: Path) -> list[str]:
    return ["run", "--files", str(files / "*.parquet"), "--embedding-column", "vec", "--database", str(db),
            "--core-only", "--no-evaluation", "--n-clusters", "3", "--budget", "8", "--seed", "2"]


def test_curate_refuses_an_8d_file_beside_16d_ones_in_one_line(tmp_path):
    _files(tmp_path / "vec", {"a": 20, "b": 20})
    db = tmp_path / "store" / "c.duckdb"
    out, err = _curate(*_run_args(tmp_path / "vec", db)).communicate(timeout=300)
    assert "Done in" in out, err[-3000:]
    before = snapshot(db.parent)
    write_examples(tmp_path / "vec" / "c.parquet", [f"c-{j}" for j in range(10)], _vectors(10, 8, 9))
    proc = _curate(*_run_args(tmp_path / "vec", db))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, out + err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("curate: error: source.embedding_column='vec': shard 'c' has 8-dimensional"), err
    assert snapshot(db.parent) == before  # the store, its views and its instance: byte for byte


def test_two_stores_run_at_the_same_time_each_with_its_own_instance(tmp_path):
    _files(tmp_path / "one", {"a": 30, "b": 30})
    _files(tmp_path / "two", {"x": 30, "y": 30, "z": 30})
    dbs = {"one": tmp_path / "data" / "one.duckdb", "two": tmp_path / "data" / "two.duckdb"}
    procs = {}
    for name, db in dbs.items():
        procs[name] = _curate(*_run_args(tmp_path / name, db))
        time.sleep(2)
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}: {err[-3000:]}"
    prefixes = {"one": ("a-", "b-"), "two": ("x-", "y-", "z-")}
    for name, db in dbs.items():
        with duckdb.connect(str(db), read_only=True) as con:
            ids = [r[0] for r in con.execute("SELECT example_id FROM sensitivity_subset").fetchall()]
            n = con.execute("SELECT count(*) FROM raw_examples").fetchone()[0]
        assert ids and all(i.startswith(prefixes[name]) for i in ids), (name, ids)
        assert n == 30 * len(prefixes[name])
        home = db.parent / f".{db.name}.dagster"
        with DagsterInstance.from_config(str(home)) as instance:
            assert sorted(instance.get_dynamic_partitions("shards")) == sorted(p[0] for p in prefixes[name])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_curate_ui_started_with_sigint_ignored_stops_on_sigterm_with_its_children(tmp_path):
    """As `nohup curate ui &` from a script starts it: SIGINT (and SIGHUP) inherited as ignored."""
    port = _free_port()
    db = tmp_path / "store" / "c.duckdb"

    def like_a_background_job():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    log = open(tmp_path / "ui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "curation_assets.cli", "ui", "--port", str(port), "--database",
                             str(db)], cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=like_a_background_job)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the UI did not answer within 150 s"
            time.sleep(0.5)
        children = _descendants(proc.pid)
        assert len(children) >= 2  # dagster dev and its webserver (and daemon, code servers)
        assert (db.parent / f".{db.name}.dagster" / "dagster.yaml").exists()  # the store's own instance
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert time.monotonic() - start < 10
        time.sleep(0.5)
        assert [p for p in children if _alive(p)] == []
    finally:
        for p in children | _descendants(proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()


def test_each_store_gets_its_own_home_whose_yaml_follows_the_postgres_setting(tmp_path, monkeypatch):
    from curation_assets.instance import POSTGRES_ENV, ensure_store_home

    monkeypatch.setenv("DAGSTER_HOME", "")  # restored after the test (ensure_store_home sets it)
    monkeypatch.delenv(POSTGRES_ENV, raising=False)
    one = ensure_store_home(tmp_path / "data" / "one.duckdb")
    os.environ["DAGSTER_HOME"] = ""
    two = ensure_store_home(tmp_path / "data" / "two.duckdb")
    assert (one, two) == (tmp_path / "data" / ".one.duckdb.dagster", tmp_path / "data" / ".two.duckdb.dagster")
    assert "storage:" not in (two / "dagster.yaml").read_text()
    monkeypatch.setenv(POSTGRES_ENV, "postgresql://u:secret@db.example:5432/curation")
    ensure_store_home(tmp_path / "data" / "two.duckdb")
    yaml = (two / "dagster.yaml").read_text()
    assert f"postgres_url:\n      env: {POSTGRES_ENV}" in yaml and "secret" not in yaml  # the URL stays in the env
    assert CurationStore(database_path=str(tmp_path / "data" / "one.duckdb")).root != \
        CurationStore(database_path=str(tmp_path / "data" / "two.duckdb")).root


def test_precomputed_vectors_are_stored_once_and_are_the_sources(tmp_path):
    """A source's own vectors are written once, into `embeddings` (raw_examples keeps the other
    columns): by admission in a pipeline run, else read again from the source by `embeddings`,
    which refuses a source that changed since raw_examples loaded it."""
    import pyarrow.parquet as pq
    from dagster import materialize

    from curation_assets.assets import all_assets

    source = _files(tmp_path / "vec", {"a": 20, "b": 30})
    store = CurationStore(database_path=str(tmp_path / "db" / "c.duckdb"))
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, make_resources(store, source), CONFIG, log=_quiet, extras=False)
        for shard, seed, rows in (("a", 0, 20), ("b", 1, 30)):
            assert "embedding" not in store.schema("raw_examples", shard).names
            stored = pq.read_table(store.root / "embeddings" / f"{shard}.parquet")
            assert np.array_equal(np.stack(stored.column("embedding").to_numpy(zero_copy_only=False)),
                                  _vectors(rows, 16, seed))
            assert stored.column("example_id").to_pylist() == [f"{shard}-{j}" for j in range(rows)]
        assert not (store.root / ".staging").exists()  # nothing staged is left behind
        from dagster import AssetKey
        records = instance.fetch_materializations(AssetKey("embeddings"), limit=10).records
        assert {r.partition_key: r.asset_materialization.metadata["written"].value for r in records} == \
            {"a": "when the shard was admitted", "b": "when the shard was admitted"}  # moved, not rewritten

        # Outside a pipeline run (the UI, a backfill): embeddings reads the vectors from the source.
        resources = make_resources(store, source)
        write_examples(tmp_path / "vec" / "a.parquet", [f"a-{j}" for j in range(20)], _vectors(20, 16, 5))
        materialize(all_assets, selection="raw_examples", partition_key="a", instance=instance, resources=resources)
        materialize(all_assets, selection="embeddings", partition_key="a", instance=instance, resources=resources)
        stored = pq.read_table(store.root / "embeddings" / "a.parquet")
        assert np.array_equal(np.stack(stored.column("embedding").to_numpy(zero_copy_only=False)), _vectors(20, 16, 5))
        # ... and refuses vectors that are no longer what raw_examples loaded, writing nothing.
        write_examples(tmp_path / "vec" / "a.parquet", [f"a-{j}" for j in range(20)], _vectors(20, 16, 6))
        before = snapshot(store.root)
        with pytest.raises(ValueError, match=r"^embeddings: shard 'a' changed in the source since raw_examples "):
            materialize(all_assets, selection="embeddings", partition_key="a", instance=instance, resources=resources)
        assert snapshot(store.root) == before


def test_content_hash_is_the_sha256_of_the_rows_as_arrow_ipc_whatever_the_chunking():
    import hashlib

    import pyarrow as pa

    from curation_assets.shard_admission import content_hash

    x = _vectors(300, 8, 0)
    table = pa.table({"example_id": [f"e{i}" for i in range(300)],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8)})
    sink = pa.BufferOutputStream()  # the definition, written out in full
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert content_hash(table) == hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]
    rechunked = pa.concat_tables([table.slice(0, 7), table.slice(7, 200), table.slice(207)])
    assert rechunked.column("embedding").num_chunks == 3 and content_hash(rechunked) == content_hash(table)
    y = x.copy()  # the table shares x's memory
    y[123, 4] += 1e-3  # one value of one vector
    changed = table.set_column(1, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(y.reshape(-1)), 8))
    assert content_hash(changed) != content_hash(table)
