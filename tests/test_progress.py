"""Progress lines: rate and time left from an injected clock, and at most one line per interval."""

import pytest

from curation_assets.progress import Progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_rate_and_time_left_follow_the_work_done():
    clock, lines = Clock(), []
    p = Progress(1000, "embeddings [s0]", lines.append, interval_s=10, clock=clock)
    clock.t = 5
    p.update(100)  # within the interval: no line
    assert lines == []
    clock.t = 20
    p.update(100)  # 200 rows in 20 s: 10 rows/s, 800 left -> 80 s
    assert lines == ["embeddings [s0]: 200/1,000 rows (20%), 10.0 rows/s, 20s elapsed, ~1m20s left"]
    clock.t = 21
    p.update(800)  # the end is always reported
    assert lines[-1].startswith("embeddings [s0]: 1,000/1,000 rows (100%)") and lines[-1].endswith("~0s left")


def test_one_line_per_interval_however_many_updates():
    clock, lines = Clock(), []
    p = Progress(10_000, "x", lines.append, interval_s=10, clock=clock)
    for i in range(9_999):
        clock.t = i * 0.01  # 100 s in all
        p.update(1)
    assert 9 <= len(lines) <= 11
    with pytest.raises(ValueError, match="total"):
        Progress(-1, "x", lines.append)


def test_long_stages_log_progress_in_the_run(tmp_path):
    """Embedding, the k-means step and assignment write progress lines into the runs' event logs."""
    from dagster import DagsterInstance

    from conftest import make_resources, small_bbc
    from curation_assets.pipeline import run_pipeline
    from resources import CurationStore

    store = CurationStore(database_path=str(tmp_path / "db" / "c.duckdb"))
    with DagsterInstance.ephemeral() as instance:
        results = run_pipeline(instance, make_resources(store, small_bbc(per_shard=12, num_shards=1)),
                               {"centroids": {"config": {"n_clusters": 3}}}, log=lambda _: None, extras=False)
        messages = [e.user_message for r in results for e in instance.all_logs(r.run_id)]
    assert any(m.startswith("embeddings [bbc-0]: 12/12 texts (100%)") and "texts/s" in m and "left" in m
               for m in messages)
    assert any(m.startswith("cluster_assignments [bbc-0]: 12/12 rows (100%)") for m in messages)
    assert any(m.startswith("centroids: k-means on 12 x 384") for m in messages)
    assert any(m.startswith("centroids: k-means done in") for m in messages)
