"""Faults the way users meet them: kill -9 at random points of a run, a full disk, a path that
cannot be written. Nothing stored is ever half-written, and a rerun ends where an uninterrupted
run with the same seed ends."""

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import clustered_vectors, write_examples
from resources import CurationStore

CONFIG = {"centroids": {"config": {"n_clusters": 3, "seed": 4}},
          "subsets": {"config": {"budget_fraction": 0.3, "seed": 4}}}
TRIALS = 20


def _pipeline(db: str, inbox: str, _home: str) -> None:
    """Child process: the core graph on a `files` source of precomputed vectors. The instance is
    in memory (what is under test is the store; a new SQLite instance per run costs seconds)."""
    from dagster import DagsterInstance

    from curation_assets.definitions import default_resources
    from curation_assets.pipeline import run_pipeline
    from resources import CurationStore, ExampleSource

    resources = default_resources(
        source=ExampleSource(kind="files", path=f"{inbox}/*.parquet", embedding_column="vec"),
        store=CurationStore(database_path=db))
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, resources, CONFIG, log=lambda _: None, extras=False)


@pytest.fixture(scope="module")
def forkserver():
    """Children fork from a server that imported the project once: each run starts in ~0.1 s,
    so 20 kill-and-rerun trials fit in the suite."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["curation_assets.pipeline", "curation_assets.definitions", "dagster"])
    return ctx


def _start(ctx, root: Path, inbox: Path):
    proc = ctx.Process(target=_pipeline, args=(str(root / "db" / "c.duckdb"), str(inbox), ""))
    proc.start()
    return proc


def _subset(root: Path):
    t = CurationStore(database_path=str(root / "db" / "c.duckdb")).read_latest_version("sensitivity_subset")
    return t.sort_by("example_id").select(["example_id", "weight", "draws"])


def _all_whole(root: Path) -> int:
    """Every stored table file reads completely (a half-written Parquet file has no footer)."""
    files = list((root / "db" / "tables").rglob("*.parquet")) if (root / "db" / "tables").exists() else []
    for f in files:
        pq.read_table(f)
    return len(files)


def test_sigkill_at_random_points_then_rerun_matches_an_uninterrupted_run(tmp_path, forkserver):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # One shard keeps a full run short (7 Dagster runs), so 20 trials fit in the suite; resuming
    # over several shards is tested in test_incremental.py.
    write_examples(inbox / "p0.parquet", [f"p0-{i}" for i in range(80)], clustered_vectors(80, 0))
    clean = tmp_path / "clean"
    start = time.monotonic()
    proc = _start(forkserver, clean, inbox)
    proc.join(300)
    full = time.monotonic() - start
    assert proc.exitcode == 0
    want = _subset(clean)

    rng = np.random.default_rng(0)
    killed_with_data = 0
    # Two trials at a time (one per core), each on its own store.
    for pair in range(0, TRIALS, 2):
        trials = list(range(pair, min(pair + 2, TRIALS)))
        # Stratified kill times: together the trials cover the whole run, start to end.
        delays = {t: full * (t + rng.random()) / TRIALS for t in trials}
        roots = {t: tmp_path / f"t{t}" for t in trials}
        t0 = time.monotonic()
        procs = {t: _start(forkserver, roots[t], inbox) for t in trials}
        for t in sorted(trials, key=delays.get):
            time.sleep(max(0.0, t0 + delays[t] - time.monotonic()))
            if procs[t].is_alive():
                os.kill(procs[t].pid, signal.SIGKILL)
        for t in trials:
            procs[t].join(60)
            killed_with_data += _all_whole(roots[t]) > 0 and procs[t].exitcode == -signal.SIGKILL
        reruns = {t: _start(forkserver, roots[t], inbox) for t in trials}
        for t in trials:
            reruns[t].join(300)
            assert reruns[t].exitcode == 0, f"trial {t}: the rerun failed"
            assert _all_whole(roots[t]) > 0
            assert _subset(roots[t]).equals(want), f"trial {t} (killed after {delays[t]:.2f}s): the subset differs"
            shutil.rmtree(roots[t])
    # Most kills landed after something was stored, so the resume path was really exercised.
    assert killed_with_data >= TRIALS // 2


def test_full_disk_is_a_clear_error_and_keeps_what_was_stored(tmp_path):
    """A 256 KB filesystem fills up while the embeddings are written."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        write_examples(inbox / "a.parquet", [f"a{i}" for i in range(10)], clustered_vectors(10, 0))
        big = np.random.default_rng(0).normal(size=(4000, 32)).astype(np.float32)
        write_examples(inbox / "b.parquet", [f"b{i}" for i in range(4000)], big)
        env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
        cmd = [str(Path(os.sys.executable)), "-m", "curation_assets.cli", "run", "--database",
               str(mount / "c.duckdb"), "--files", str(inbox / "*.parquet"), "--embedding-column", "vec",
               "--no-evaluation", "--core-only", "--n-clusters", "2"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1],
                             timeout=300)
        assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
        message = out.stderr.strip().splitlines()[-1]
        assert message.startswith("curate: error:") and "No space left on device" in message, message
        assert "could not write" in message and str(mount) in message
        # Whatever was stored before the disk filled up is whole and readable.
        for f in mount.rglob("*.parquet"):
            pq.read_table(f)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_unwritable_output_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the store's folder should be")
    from dagster import DagsterInstance

    from conftest import make_resources
    from curation_assets.pipeline import run_pipeline
    from resources import ExampleSource

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_examples(inbox / "a.parquet", [f"a{i}" for i in range(10)], clustered_vectors(10, 0))
    store = CurationStore(database_path=str(blocker / "db" / "c.duckdb"))
    resources = make_resources(store, ExampleSource(kind="files", path=str(inbox / "*.parquet"),
                                                    embedding_column="vec"))
    with DagsterInstance.ephemeral() as instance, pytest.raises(OSError, match=r"could not write .*not_a_folder"):
        run_pipeline(instance, resources, CONFIG, log=lambda _: None, extras=False)
    assert blocker.read_text().startswith("a file")
