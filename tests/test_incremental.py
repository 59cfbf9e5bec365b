"""Incremental curation: a rerun recomputes only what is not current, a new shard is embedded,
assigned and scored alone, and a run killed mid-embedding resumes to the same subset."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance

from curation_assets.pipeline import plan_stale, run_pipeline
from resources import CurationStore, ExampleSource

from conftest import make_resources

ROOT = Path(__file__).resolve().parents[1]
BBC = ExampleSource()


def bbc_rows(n_shards: int, per_shard: int) -> list[dict]:
    """Real BBC articles (first 400 characters, so the model stays quick), spread over shards."""
    rows = []
    for i in range(4):
        t = BBC.load_shard(f"bbc-{i}").to_pylist()
        rows += [{"id": r["example_id"], "text": r["text"][:400], "label": r["label"]} for r in t]
    rows.sort(key=lambda r: r["id"])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(rows), size=n_shards * per_shard, replace=False)
    return [rows[i] for i in pick]


def write_shard(folder: Path, name: str, rows: list[dict]) -> Path:
    path = folder / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def file_state(store: CurationStore, asset: str) -> dict[str, int]:
    folder = store.root / asset
    return {p.stem: p.stat().st_mtime_ns for p in folder.glob("*.parquet")}


def materialized(results) -> list[tuple[str, str | None]]:
    out = []
    for r in results:
        for ev in r.get_asset_materialization_events():
            mat = ev.event_specific_data.materialization
            out.append((mat.asset_key.to_user_string(), mat.partition))
    return out


CONFIG = {"subsets": {"config": {"budget_fraction": 0.3, "seed": 3}},
          "centroids": {"config": {"n_clusters": 6, "seed": 3}}}


def files_project(tmp_path: Path, corpus: list[dict], shards: int, per_shard: int = 24):
    """An inbox of `shards` Parquet files of real texts, a store, and the resources over them."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for s in range(shards):
        write_shard(inbox, f"part{s}", corpus[s * per_shard:(s + 1) * per_shard])
    store = CurationStore(database_path=str(tmp_path / "db" / "curation.duckdb"))
    source = ExampleSource(kind="files", path=str(inbox / "*.parquet"))
    return inbox, store, source, make_resources(store, source)


@pytest.fixture(scope="module")
def corpus():
    return bbc_rows(5, 24)


def test_rerun_skips_current_and_new_shard_is_processed_alone(tmp_path, corpus):
    inbox, store, source, resources = files_project(tmp_path, corpus, 4)
    with DagsterInstance.ephemeral() as instance:
        first = run_pipeline(instance, resources, CONFIG, log=lambda _: None, extras=False)
        assert ("centroids", None) in materialized(first)
        before = {a: file_state(store, a) for a in ("raw_examples", "embeddings", "cluster_assignments",
                                                     "sensitivities")}
        old_subset = store.read_latest_version("sensitivity_subset")

        # Nothing changed: nothing is recomputed, and the planner agrees.
        assert plan_stale(store, source.list_shards(), CONFIG, resources, extras=False) == {}
        assert run_pipeline(instance, resources, CONFIG, log=lambda _: None, extras=False) == []

        # A new file arrives: only it is loaded, embedded, assigned and scored.
        write_shard(inbox, "part4", corpus[96:])
        plan = plan_stale(store, source.list_shards(), CONFIG, resources, extras=False)
        assert plan == {"raw_examples": ["part4"], "embeddings": ["part4"], "cluster_assignments": ["part4"],
                        "sensitivities": ["part4"], "subsets": [None]}
        done = materialized(run_pipeline(instance, resources, CONFIG, log=lambda _: None, extras=False))
    per_shard = [(a, p) for a, p in done if p is not None]
    assert sorted(per_shard) == sorted((a, "part4") for a in before)
    assert not {"centroids", "representative_losses"} & {a for a, _ in done}
    assert {"sensitivity_subset", "uniform_subset"} <= {a for a, _ in done}
    for asset, state in before.items():  # old shards' files were not rewritten
        after = file_state(store, asset)
        assert {k: after[k] for k in state} == state
        assert "part4" in after

    new_subset = store.read_latest_version("sensitivity_subset")
    new_ids = {r["id"] for r in corpus[96:]}
    assert len(new_ids & set(new_subset.column("example_id").to_pylist())) > 0
    # Weighted sums still estimate full-data sums over all 120 examples, not the old 96.
    assert 0.6 * 120 < sum(new_subset.column("weight").to_pylist()) < 1.6 * 120
    # The old version stays readable beside the new one.
    history = store.query("SELECT run, count(*) AS c FROM sensitivity_subset_history GROUP BY run")
    assert history.num_rows == 2
    assert old_subset.column("run")[0].as_py() in history.column("run").to_pylist()
    # The new shard was assigned to the centroids fit before it arrived.
    versions = store.query("SELECT DISTINCT centroids_version FROM cluster_assignments").column(0).to_pylist()
    assert len(versions) == 1


def test_changed_config_recomputes_from_the_asset_it_configures(tmp_path, corpus):
    inbox, store, source, resources = files_project(tmp_path, corpus, 2)
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, resources, CONFIG, log=lambda _: None, extras=False)
        changed = {**CONFIG, "sensitivities": {"config": {"z": 1.0}}}
        plan = plan_stale(store, source.list_shards(), changed, resources, extras=False)
        assert plan == {"sensitivities": ["part0", "part1"]}
        done = materialized(run_pipeline(instance, resources, changed, log=lambda _: None, extras=False))
    assert not {"raw_examples", "embeddings", "centroids", "cluster_assignments"} & {a for a, _ in done}
    assert float(store.query("SELECT DISTINCT z FROM sensitivities").column(0)[0].as_py()) == 1.0


def _curate(db: Path, inbox: Path, home: Path, **env_changes) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1", **env_changes}
    env = {k: v for k, v in env.items() if v is not None}
    cmd = [sys.executable, "-m", "curation_assets.cli", "run", "--database", str(db), "--files",
           str(inbox / "*.parquet"), "--no-evaluation", "--seed", "5", "--budget-fraction", "0.3",
           "--n-clusters", "6", "--batch-size", "8", "--core-only"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def test_sigkill_mid_embedding_then_rerun_resumes_to_the_same_subset(tmp_path, corpus, instance_storage):
    """On the default SQLite instance and on PostgreSQL (the killed run's instance)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for s in range(4):
        write_shard(inbox, f"part{s}", corpus[s * 24:(s + 1) * 24])
    killed_db = tmp_path / "killed" / "curation.duckdb"
    emb_dir = CurationStore(database_path=str(killed_db)).root / "embeddings"
    proc = _curate(killed_db, inbox, tmp_path / "home1")
    deadline = time.monotonic() + 240
    done_before_kill = []
    while time.monotonic() < deadline and proc.poll() is None:
        done_before_kill = sorted(p.stem for p in emb_dir.glob("*.parquet")) if emb_dir.exists() else []
        if 1 <= len(done_before_kill) < 4:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    assert 1 <= len(done_before_kill) < 4
    killed_store = CurationStore(database_path=str(killed_db))
    finished = {k: v for k, v in file_state(killed_store, "embeddings").items()}
    assert not killed_store.exists("sensitivity_subset")
    # No half-written table: every stored file reads whole.
    for f in killed_store.root.rglob("*.parquet"):
        pq.read_table(f)

    rerun = _curate(killed_db, inbox, tmp_path / "home1")
    out = rerun.communicate(timeout=600)[0].decode()
    assert rerun.returncode == 0, out[-3000:]
    after = file_state(killed_store, "embeddings")
    assert {k: after[k] for k in finished} == finished, "finished shards were embedded again"
    assert len(after) == 4
    assert "embeddings: " in out and "current, skipped" in out

    clean_db = tmp_path / "clean" / "curation.duckdb"
    clean = _curate(clean_db, inbox, tmp_path / "home2", CURATION_POSTGRES_URL=None)  # the reference: SQLite
    out = clean.communicate(timeout=600)[0].decode()
    assert clean.returncode == 0, out[-3000:]
    a = killed_store.read_latest_version("sensitivity_subset").sort_by("example_id")
    b = CurationStore(database_path=str(clean_db)).read_latest_version("sensitivity_subset").sort_by("example_id")
    assert a.column("example_id").equals(b.column("example_id"))
    np.testing.assert_allclose(a.column("weight").to_numpy(), b.column("weight").to_numpy(), rtol=1e-9)
    assert a.column("draws").equals(b.column("draws"))
