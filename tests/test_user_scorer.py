"""`representative_losses` with the user's own model plugged in by path."""

import pytest
from dagster import DagsterInstance

from conftest import clustered_vectors, make_resources, snapshot, write_examples
from curation_assets.pipeline import run_pipeline
from resources import CurationStore, ExampleSource


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    write_examples(data / "a.parquet", [f"a{i}" for i in range(15)], clustered_vectors(15, 0))
    write_examples(data / "b.parquet", [f"b{i}" for i in range(15)], clustered_vectors(15, 1))
    source = ExampleSource(kind="files", path=str(data / "*.parquet"), embedding_column="vec")
    store = CurationStore(database_path=str(tmp_path / "db" / "c.duckdb"))
    with DagsterInstance.ephemeral() as instance:
        yield instance, make_resources(store, source), store


def _config(fn):
    return {"centroids": {"config": {"n_clusters": 4}},
            "representative_losses": {"config": {"scorer": "function", "scorer_function": fn}},
            "subsets": {"config": {"budget": 8}}}


def test_user_scorer_gives_the_representatives_losses(setup):
    instance, resources, store = setup
    run_pipeline(instance, resources, _config("user_scorers:id_number_loss"), log=lambda _: None)
    rows = store.query("SELECT representative_id, loss, scorer FROM representative_losses").to_pylist()
    assert len(rows) == 4
    for r in rows:
        assert r["loss"] == pytest.approx(int(r["representative_id"][1:]) / 10)
        assert r["scorer"] == "function:user_scorers:id_number_loss"
    # and those losses are what the sensitivities use
    bad = store.query("SELECT count(*) AS n FROM sensitivities s JOIN representative_losses r USING (cluster_id) "
                      "WHERE abs(s.loss_term - r.loss) > 1e-12").column("n")[0].as_py()
    assert bad == 0


@pytest.mark.parametrize("fn, match", [
    ("user_scorers:wrong_length", r"scorer_function: returned 5 losses for 4 representatives"),
    ("user_scorers:nope", r"scorer_function: cannot import 'user_scorers:nope'"),
    ("no_colon", r"scorer_function: expected 'package.module:function'"),
])
def test_a_broken_user_scorer_is_named_and_writes_nothing(setup, fn, match):
    instance, resources, store = setup
    cfg = _config("user_scorers:id_number_loss")
    run_pipeline(instance, resources, cfg, log=lambda _: None)
    before = snapshot(store.root)
    with pytest.raises(Exception, match=match):
        run_pipeline(instance, resources, _config(fn), log=lambda _: None)
    after = snapshot(store.root)
    # the rerun rewrote the earlier stages with identical content; the failing stage wrote nothing
    assert after["representative_losses/_all.parquet"] == before["representative_losses/_all.parquet"]
    assert set(after) == set(before)


def test_several_representatives_per_cluster_are_averaged(setup):
    instance, resources, store = setup
    cfg = _config("user_scorers:id_number_loss")
    cfg["representative_losses"]["config"]["representatives_per_cluster"] = 3
    cfg["centroids"]["config"]["n_clusters"] = 3  # the data has 3 clusters: none smaller than 3
    run_pipeline(instance, resources, cfg, log=lambda _: None)
    want = store.query(
        "SELECT cluster_id, avg(CAST(substr(example_id, 2) AS DOUBLE) / 10) AS v FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY cluster_id ORDER BY sq_distance, example_id) AS rank"
        "  FROM cluster_assignments) WHERE rank <= 3 GROUP BY cluster_id").to_pylist()
    got = {r["cluster_id"]: r["loss"] for r in store.query("SELECT cluster_id, loss FROM representative_losses").to_pylist()}
    assert len(want) == 3
    for r in want:
        assert got[r["cluster_id"]] == pytest.approx(r["v"], rel=1e-12)
    sizes = store.query("SELECT min(size) AS s FROM representative_losses").column("s")[0].as_py()
    assert sizes >= 3  # so every cluster really averaged three members
