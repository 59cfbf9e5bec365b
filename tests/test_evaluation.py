"""Held-out evaluation: the split, the weighted downstream models, and the asset end to end."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance

from conftest import clustered_vectors, make_resources, write_examples
from curation_assets.algorithms.downstream import fit_predict_logreg, fit_predict_mlp, scores
from curation_assets.algorithms.evaluation import holdout_mask, selectors
from curation_assets.pipeline import run_pipeline
from resources import CurationStore, ExampleSource


def test_holdout_is_stable_and_of_the_asked_size():
    ids = [f"doc-{i}" for i in range(5000)]
    a, b = holdout_mask(ids, 0.2), holdout_mask(list(reversed(ids)), 0.2)[::-1]
    assert np.array_equal(a, b)  # a property of the id, not of the order
    assert abs(a.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 5000)
    with pytest.raises(ValueError, match="test_fraction"):
        holdout_mask(ids, 1.0)


def _blobs(seed, n=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[4, 0, 0, 0], [0, 4, 0, 0], [0, 0, 4, 0]], dtype=np.float32)
    return (centers[y] + rng.normal(size=(n, 4))).astype(np.float32), np.array(["a", "b", "c"], dtype=object)[y]


def test_integer_weights_train_like_duplicated_rows():
    x, y = _blobs(0, 60)
    w = np.random.default_rng(1).integers(1, 4, 60).astype(float)
    xt, _ = _blobs(2, 200)
    dup = np.repeat(np.arange(60), w.astype(int))
    weighted = fit_predict_logreg(x, y, w, xt)
    duplicated = fit_predict_logreg(x[dup], y[dup], None, xt)
    assert np.mean(weighted == duplicated) > 0.99
    flat = fit_predict_logreg(x, y, None, xt)
    assert not np.array_equal(fit_predict_logreg(x, y, np.where(y == "a", 50.0, 1.0), xt), flat)


def test_mlp_learns_and_is_seeded():
    x, y = _blobs(3)
    xt, yt = _blobs(4)
    p1 = fit_predict_mlp(x, y, None, xt, classes=["a", "b", "c"], seed=5, epochs=100)
    p2 = fit_predict_mlp(x, y, None, xt, classes=["a", "b", "c"], seed=5, epochs=100)
    assert np.array_equal(p1, p2)
    assert scores(yt, p1).accuracy > 0.9
    single = fit_predict_logreg(x[:1], y[:1], None, xt)
    assert set(single) == {y[0]}


def test_subset_evaluation_asset_end_to_end(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    write_examples(data / "a.parquet", [f"a{i}" for i in range(60)], clustered_vectors(60, 0))
    write_examples(data / "b.parquet", [f"b{i}" for i in range(60)], clustered_vectors(60, 1))
    source = ExampleSource(kind="files", path=str(data / "*.parquet"), embedding_column="vec")
    store = CurationStore(database_path=str(tmp_path / "db" / "c.duckdb"))
    methods = sorted(selectors())
    config = {"centroids": {"config": {"n_clusters": 4}}, "subsets": {"config": {"budget": 20}},
              "subset_evaluation": {"config": {"budgets": [0.1, 0.3], "seeds": 2, "estimate_seeds": 7,
                                               "mlp_epochs": 20}}}
    with DagsterInstance.ephemeral() as instance:
        results = run_pipeline(instance, make_resources(store, source), config, log=lambda _: None, evaluate=True)
    assert all(r.success for r in results)
    evaluation = next(r for r in results if any(e.asset_key.to_user_string() == "subset_evaluation"
                                                for e in r.get_asset_materialization_events()))
    checks = {e.check_name: e for e in evaluation.get_asset_check_evaluations()}
    assert "sensitivity_estimates_beat_uniform" in checks
    rows = store.query(
        "SELECT metric, model, method, count(*) AS n, min(value) AS lo, max(value) AS hi "
        "FROM subset_evaluation GROUP BY ALL").to_pylist()
    by = {(r["metric"], r["model"], r["method"]): r for r in rows}
    for method in methods:
        assert by[("estimate_rel_error", "probe", method)]["n"] == 2 * 7
        for model in ("logreg", "mlp"):
            for metric in ("accuracy", "macro_f1"):
                r = by[(metric, model, method)]
                assert r["n"] == 2 * 2 and 0.0 <= r["lo"] <= r["hi"] <= 1.0
    assert by[("accuracy", "logreg", "full")]["n"] == 1
    assert by[("estimate_rel_error", "probe", "uniform")]["lo"] >= 0
    # the pool and the held-out side partition the data, and budgets count pool rows only
    test = holdout_mask([f"{s}{i}" for s in "ab" for i in range(60)], 0.2)
    ms = store.query("SELECT DISTINCT budget_fraction, m FROM subset_evaluation WHERE method <> 'full'").to_pylist()
    assert {(r["budget_fraction"], r["m"]) for r in ms} == {(f, round(f * (~test).sum())) for f in (0.1, 0.3)}
    for png in ("estimate_error_vs_budget.png", "accuracy_vs_budget_logreg.png", "accuracy_vs_budget_mlp.png"):
        assert (store.root / "subset_evaluation" / "files" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recommended_subset_follows_the_evaluation_and_is_exported(tmp_path):
    """With labels and an evaluation, the recommended subset is a copy of the stored subset the
    evaluation's evidence picks at the nearest budget; the export carries it by default."""
    from dagster import AssetKey

    from curation_assets.algorithms.recommendation import default_method, recommend
    from curation_assets.assets.recommended_subset import EVALUATED_AS, SAMPLING_EVALUATED_AS, evaluated_scores

    data = tmp_path / "in"
    data.mkdir()
    write_examples(data / "a.parquet", [f"a{i}" for i in range(90)], clustered_vectors(90, 0))
    source = ExampleSource(kind="files", path=str(data / "*.parquet"), embedding_column="vec")
    store = CurationStore(database_path=str(tmp_path / "db" / "c.duckdb"))
    config = {"centroids": {"config": {"n_clusters": 12}}, "subsets": {"config": {"budget": 9}},
              "subset_evaluation": {"config": {"budgets": [0.05, 0.1, 0.3], "seeds": 3, "estimate_seeds": 5,
                                               "models": ["logreg"]}}}
    with DagsterInstance.ephemeral() as instance:
        assert all(r.success for r in run_pipeline(instance, make_resources(store, source), config,
                                                   log=lambda _: None, evaluate=True))
        meta = instance.get_latest_materialization_event(AssetKey("recommended_subset")).asset_materialization.metadata
    rec = store.read_latest_version("recommended_subset")
    source_subset = rec.column("source_subset")[0].as_py()
    # the same rule on the stored evaluation picks the same subset, at budget 9 of 90 -> 10%
    evaluated = {SAMPLING_EVALUATED_AS["stratified"]: "sensitivity_subset",
                 **{e: a for a, e in EVALUATED_AS.items() if store.has_versions(a)}}
    scores, budget, test_se = evaluated_scores(store.read("subset_evaluation"), 0.1, "train", set(evaluated))
    assert budget == 0.1 and 0 < test_se < 0.2
    k = store.read("centroids").num_rows
    assert k == 12 and meta["default"].value == "kmeans_centroids_subset"  # 9 picks < 12 clusters
    want = recommend(scores, default_method("train", 9, k), test_se=test_se)
    assert source_subset == evaluated[want.method] and meta["reason"].value.endswith(want.reason)
    assert "gain over default" in meta["evidence"].value
    copied = store.read_version(source_subset, rec.column("source_version")[0].as_py())
    assert rec.column("example_id").to_pylist() == copied.column("example_id").cast("string").to_pylist()
    assert rec.column("weight").to_pylist() == copied.column("weight").to_pylist()
    export = pq.read_table(store.root / "subset_export" / "files" / "recommended_subset.parquet")
    assert sorted(export.column("example_id").to_pylist()) == sorted(rec.column("example_id").to_pylist())
