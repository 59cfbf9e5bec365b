"""README's main command, run as a newcomer would: a subprocess with an empty home directory."""

import os
import subprocess
import sys

import duckdb


def _env(home):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DAGSTER_HOME", "MPLCONFIGDIR", "HF_HUB_OFFLINE", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    return env


def test_curate_run_writes_the_subset_and_nothing_to_the_home_directory(tmp_path):
    home, project = tmp_path / "home", tmp_path / "my project"  # a space: the hint must quote it
    home.mkdir()
    project.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "curation_assets.cli", "run", "--num-shards", "2", "--max-examples-per-shard", "10",
         "--budget", "6", "--seed", "1", "--no-evaluation"],
        cwd=project, env=_env(home), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sensitivity_subset:" in proc.stdout and "Traceback" not in proc.stderr
    # the store's own instance, beside its database
    assert "telemetry:\n  enabled: false" in (project / "data" / ".curation.duckdb.dagster" / "dagster.yaml").read_text()
    with duckdb.connect(str(project / "data" / "curation.duckdb"), read_only=True) as con:
        draws, n = con.execute("SELECT sum(draws), (SELECT count(*) FROM raw_examples) FROM sensitivity_subset").fetchone()
    assert (draws, n) == (6, 20)
    assert [p for p in home.rglob("*")] == []  # no telemetry, caches or model downloads in ~
    # the last line is a command that works as printed, with the venv's Python, from any folder
    hint = proc.stdout.strip().splitlines()[-1]
    assert hint.startswith("Query it: ")
    shown = subprocess.run(hint.removeprefix("Query it: "), shell=True, cwd=home, capture_output=True, text=True,
                           env=_env(home), timeout=120)
    assert shown.returncode == 0 and "example_id" in shown.stdout and "weight" in shown.stdout, shown.stderr


def test_curate_run_reports_bad_input_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "curation_assets.cli", "run", "--files", str(tmp_path / "none" / "*.csv")],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("curate: error: source.path: no files match")
    assert "Traceback" not in proc.stderr


def test_curate_run_refuses_an_unknown_storage_url_before_writing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "curation_assets.cli", "run", "--tables", "gs://bucket/curation"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "curate: error: store.tables_dir: 'gs://bucket/curation' is not a local folder or an s3:// URL "
        "(object storage supported: s3://)")
    assert not (tmp_path / "data").exists()
