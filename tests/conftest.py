"""Shared fixtures. Nothing here fakes DuckDB, faiss, torch or Dagster: tests run the real parts."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

# Keep caches out of the user's home before matplotlib or transformers are imported.
_CACHE = Path(tempfile.mkdtemp(prefix="curation-test-cache-"))
os.environ.setdefault("MPLCONFIGDIR", str(_CACHE / "matplotlib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv  # noqa: E402,F401  (registers pa.csv)
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from dagster import DagsterInstance  # noqa: E402

from curation_assets.definitions import default_resources  # noqa: E402
from resources import CurationStore, ExampleSource  # noqa: E402


# What each test module needs beyond numpy, faiss and torch, so `-m` can leave it out. The fast
# command (README) is `pytest -m "not (graph or ui or s3 or k8s or postgres)"`.
KINDS = {
    "graph": {"test_backfill", "test_bad_inputs", "test_checks", "test_cli", "test_drift_and_refresh",
              "test_evaluation", "test_faults", "test_hierarchical_assets", "test_incremental", "test_pipeline_e2e",
              "test_progress", "test_properties", "test_sources_and_sensor", "test_store_follows_source",
              "test_subset_export", "test_user_scorer"},  # runs Dagster materialisations or `curate`
    "ui": {"test_ui"},  # a browser against dagster-webserver
    "s3": {"test_object_storage"},  # an S3 server
    "k8s": {"test_k8s_executor"},  # the Kubernetes executor's job specs
}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        for kind, modules in KINDS.items():
            if module in modules:
                item.add_marker(kind)
        params = getattr(item, "callspec", None)
        if params is not None and params.params.get("instance_storage") == "postgres":
            item.add_marker("postgres")  # a PostgreSQL server


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def store(tmp_path) -> CurationStore:
    return CurationStore(database_path=str(tmp_path / "db" / "curation.duckdb"))


def make_resources(store: CurationStore, source: ExampleSource | None = None, **kw) -> dict:
    return default_resources(source=source or ExampleSource(), store=store, **kw)


def small_bbc(per_shard: int = 20, num_shards: int = 2) -> ExampleSource:
    """A small real slice of the bundled BBC News corpus."""
    return ExampleSource(num_shards=num_shards, max_examples_per_shard=per_shard)


def snapshot(root: Path) -> dict[str, str]:
    """Content hash of every file under `root` (the stored state)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


D = 8


def clustered_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, D)) * 4
    return (centers[rng.integers(0, 3, n)] + rng.normal(size=(n, D))).astype(np.float32)


def write_examples(path, ids, vecs=None, texts=True, labels=True, fmt="parquet"):
    cols = {"id": ids}
    if texts:
        cols["text"] = [f"text of {i}" for i in ids]
    if labels:
        cols["label"] = [("a", "b", "c")[j % 3] for j in range(len(ids))]
    if vecs is not None:
        cols["vec"] = [list(map(float, v)) for v in vecs]
    if fmt == "parquet":
        pq.write_table(pa.table(cols), path)
    elif fmt == "csv":
        pa.csv.write_csv(pa.table({k: v for k, v in cols.items() if k != "vec"}), path)
    else:
        with open(path, "w") as fh:
            for row in range(len(ids)):
                fh.write(json.dumps({k: v[row] for k, v in cols.items()}) + "\n")


# ---- a real PostgreSQL server for the instance-on-PostgreSQL tests ---------------------------
def _postgres_bindir() -> Path | None:
    import glob
    import shutil

    found = [shutil.which("initdb")] + sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return next((Path(p).parent for p in found if p and os.access(p, os.X_OK)), None)


@pytest.fixture(scope="session")
def postgres_server():
    """Debian's PostgreSQL server on 127.0.0.1:<free port>, in a temporary cluster (trust auth),
    run as the `postgres` user when the tests run as root. Skips, saying why, without it."""
    import pwd
    import shutil
    import socket
    import subprocess

    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server (initdb): apt-get install postgresql (.ci/run does)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="curation-pg-"))  # under /tmp: the server's user must reach it
    if os.geteuid() == 0:
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the PostgreSQL server as")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"

    def run(*cmd):
        return subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True, timeout=120)

    out = run(bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    if out.returncode != 0:
        pytest.fail(f"initdb failed: {out.stderr[-2000:]}")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    out = run(bindir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "-t", "60", "start")
    if out.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        pytest.fail(f"PostgreSQL did not start: {out.stderr[-1000:]} {log[-2000:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the test server (one per test: one instance per store)."""
    import uuid

    import psycopg2

    name = f"t_{uuid.uuid4().hex[:12]}"
    con = psycopg2.connect(f"{postgres_server}/postgres")
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{postgres_server}/{name}"
    finally:
        with con.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        con.close()


@pytest.fixture(params=["sqlite", "postgres"])
def instance_storage(request, monkeypatch):
    """Run a test on the default SQLite instance and on a PostgreSQL one (CURATION_POSTGRES_URL)."""
    if request.param == "postgres":
        monkeypatch.setenv("CURATION_POSTGRES_URL", request.getfixturevalue("postgres_url"))
    else:
        monkeypatch.delenv("CURATION_POSTGRES_URL", raising=False)
    return request.param
