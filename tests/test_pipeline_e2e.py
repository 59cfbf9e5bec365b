"""The whole lineage graph through Dagster's own `materialize`, on a small real slice."""

import duckdb
import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from conftest import make_resources, small_bbc, snapshot
from curation_assets.assets import (
    centroids,
    embeddings,
    raw_examples,
    representative_losses,
    sensitivities,
    subsets,
)
from curation_assets.algorithms.robust_sensitivity import ALPHA_GRID
from curation_assets.assets import all_assets as ALL_ASSETS
from curation_assets.pipeline import run_pipeline
from resources import CurationStore

CONFIG = {
    "centroids": {"config": {"pilot_size": 20}},
    "subsets": {"config": {"budget_fraction": 0.25, "seed": 7}},
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    store = CurationStore(database_path=str(root / "curation.duckdb"))
    resources = make_resources(store, small_bbc(per_shard=20, num_shards=2))
    instance = DagsterInstance.ephemeral()
    results = run_pipeline(instance, resources, CONFIG, log=lambda _: None)
    yield instance, store, resources, results
    instance.dispose()


def _db(store):
    return duckdb.connect(str(store.db_path), read_only=True)


def test_every_stage_succeeds_and_every_asset_is_a_view(pipeline):
    instance, store, _, results = pipeline
    # one run over both shards for each of the 4 per-shard assets, one for each of the 8 global ones
    assert len(results) == 4 + 8
    assert all(r.success for r in results)
    per_shard = [r for r in results if r.dagster_run.tags.get("dagster/asset_partition_range_start")]
    assert len(per_shard) == 4 and all(r.dagster_run.tags["dagster/asset_partition_range_end"] == "bbc-1"
                                       for r in per_shard)
    with _db(store) as con:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"raw_examples", "embeddings", "centroids", "probe", "cluster_assignments", "representative_losses",
            "sensitivities", "sensitivity_subset", "uniform_subset", "sensitivity_subset_history"} <= views
    # Dagster recorded a materialization of every asset, per partition where partitioned.
    ev = instance.get_latest_materialization_event
    from dagster import AssetKey
    assert ev(AssetKey("sensitivity_subset")).asset_materialization.metadata["budget"].value == 10
    assert set(instance.get_materialized_partitions(AssetKey("embeddings"))) == {"bbc-0", "bbc-1"}
    # each shard's materialization carries that shard's own metadata, though one run made both
    records = instance.fetch_materializations(AssetKey("raw_examples"), limit=10).records
    rows = {r.partition_key: r.asset_materialization.metadata["dagster/row_count"].value for r in records}
    with _db(store) as con:
        stored = dict(con.execute("SELECT shard, count(*) FROM raw_examples GROUP BY shard").fetchall())
    assert rows == stored


def test_without_an_evaluation_the_recommended_subset_is_the_default_and_says_so(pipeline):
    instance, store, _, _ = pipeline
    from dagster import AssetKey
    from curation_assets.algorithms.recommendation import default_method

    # the training default at this budget (10 of 40) and k: k-means medoids below 2 picks per cluster,
    # else the cluster-stratified, equal-weight subset
    wanted = default_method("train", 10, store.read("centroids").num_rows)
    asset = {"kmeans_centroids": "kmeans_centroids_subset", "stratified": "stratified_subset"}[wanted]
    rec = store.read_latest_version("recommended_subset")
    default = store.read_latest_version(asset)
    assert set(rec.column("source_subset").to_pylist()) == {asset}
    assert rec.column("example_id").to_pylist() == default.column("example_id").cast("string").to_pylist()
    assert rec.column("weight").to_pylist() == default.column("weight").to_pylist()
    meta = instance.get_latest_materialization_event(AssetKey("recommended_subset")).asset_materialization.metadata
    assert meta["default"].value == asset
    assert "no held-out evaluation" in meta["reason"].value and "evidence" not in meta
    assert (store.root / "subset_export" / "files" / "recommended_subset.parquet").exists()


def test_tables_hold_the_expected_rows(pipeline):
    instance, store, _, _ = pipeline
    with _db(store) as con:
        n, ids, labels, shards = con.execute(
            "SELECT count(*), count(DISTINCT example_id), count(label), count(DISTINCT shard) FROM raw_examples"
        ).fetchone()
        assert (n, ids, labels, shards) == (40, 40, 40, 2)
        emb = con.execute("SELECT len(embedding) AS d, list_dot_product(embedding, embedding) AS sq "
                          "FROM embeddings").fetchall()
        assert len(emb) == 40 and {d for d, _ in emb} == {384}
        assert np.allclose([sq for _, sq in emb], 1.0, atol=1e-4)  # normalised by default
        k = con.execute("SELECT count(*) FROM centroids").fetchone()[0]
        assert k == round(np.sqrt(40 / 2))
        a = con.execute("SELECT count(*), min(cluster_id), max(cluster_id), min(sq_distance) FROM cluster_assignments").fetchone()
        assert a[0] == 40 and a[1] >= 0 and a[2] < k and a[3] >= 0
        rep = con.execute("SELECT count(*), min(loss), any_value(scorer), sum(size) FROM representative_losses").fetchone()
        assert rep[0] == k and rep[1] > 0 and rep[2] == "linear_probe" and rep[3] == 40
        # each representative is the member of its cluster nearest the centroid
        bad = con.execute(
            "SELECT r.cluster_id FROM representative_losses r JOIN cluster_assignments a "
            "ON a.cluster_id = r.cluster_id WHERE a.sq_distance < r.representative_sq_distance"
        ).fetchall()
        assert bad == []
        # the stored lambda is the balanced one over all shards: sum v_a(i) = lambda * sum d_i^2
        lam, balanced = con.execute(
            "SELECT (SELECT min(lambda_) FROM sensitivities), (SELECT max(lambda_) FROM sensitivities), "
            "sum(r.loss) / sum(a.sq_distance) FROM cluster_assignments a JOIN representative_losses r USING (cluster_id)"
        ).fetchone()[1:]
        assert lam == pytest.approx(balanced, rel=1e-9)
        count, total, lo = con.execute("SELECT count(*), sum(probability), min(probability) FROM sensitivities").fetchone()
        assert count == 40 and abs(total - 1) < 1e-9 and lo > 0
        sub = con.execute("SELECT count(*), sum(draws), any_value(budget), min(weight) FROM sensitivity_subset").fetchone()
        assert sub[1] == 10 and sub[2] == 10 and sub[0] <= 10 and sub[3] > 0
        # weights are 1 / (m p) per draw, p the defensive mixture alpha/n + (1 - alpha) s/sum(s), with
        # s (the clusters' sensitivity or the probe's expected loss, both stored) and alpha chosen on
        # the probe's losses at held-out labelled rows (one of the grid's values)
        meta = instance.get_latest_materialization_event(AssetKey("sensitivity_subset")).asset_materialization.metadata
        alpha, source = meta["alpha"].value, meta["sensitivity_source"].value
        assert alpha in ALPHA_GRID and meta["alpha_rule"].value == "auto (labelled holdout)"
        assert con.execute("SELECT count(expected_loss), min(expected_loss) >= 0 FROM sensitivities").fetchone() \
            == (40, True)
        column = {"clusters": "sensitivity", "probe": "expected_loss"}[source]
        off = con.execute(
            f"SELECT max(abs(s.weight - s.draws / (s.budget * (? / 40 + (1 - ?) * p.{column} / "
            f"(SELECT sum({column}) FROM sensitivities))))) "
            "FROM sensitivity_subset s JOIN sensitivities p USING (example_id)", [alpha, alpha]
        ).fetchone()[0]
        assert off < 1e-9
        held = con.execute("SELECT count(*), min(loss) FROM holdout_losses JOIN raw_examples USING (example_id)").fetchone()
        assert held[0] == 20 and held[1] > 0  # the 40 - 20 rows outside the configured pilot_size
        # the probe's losses stored with the assignments are the stored probe's, recomputed here from
        # its coefficients and the embeddings, and v_j is that loss at each representative
        probe = con.execute("SELECT class, coefficients, intercept FROM probe ORDER BY class").fetchall()
        rows = con.execute("SELECT a.label_loss, a.expected_loss, r.label, e.embedding FROM cluster_assignments a "
                           "JOIN raw_examples r USING (example_id) JOIN embeddings e USING (example_id)").fetchall()
        w, b = np.array([c for _, c, _ in probe]), np.array([i for _, _, i in probe])
        t = np.array([e for *_, e in rows]) @ w.T + b
        log_p = t - t.max(axis=1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        at = [[c for c, _, _ in probe].index(label) for _, _, label, _ in rows]
        np.testing.assert_allclose([r[0] for r in rows], -log_p[np.arange(len(rows)), at], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose([r[1] for r in rows], -(np.exp(log_p) * log_p).sum(axis=1), rtol=1e-4, atol=1e-6)
        assert con.execute("SELECT count(*), max(abs(r.loss - a.label_loss)) FROM representative_losses r "
                           "JOIN cluster_assignments a ON a.example_id = r.representative_id").fetchone()[1] < 1e-12
        u = con.execute("SELECT count(*), count(DISTINCT example_id), min(weight), max(weight) FROM uniform_subset").fetchone()
        assert u[0] == u[1] == 10 and u[2] == u[3] == pytest.approx(40 / 10)
        orphans = con.execute("SELECT count(*) FROM sensitivity_subset LEFT JOIN raw_examples r USING (example_id) "
                          "WHERE r.example_id IS NULL").fetchone()[0]
        assert orphans == 0
        # every baseline is stored like the subsets, at the same budget, its weights standing for n
        for name in ("stratified", "kmeans_centroids", "k_center", "semdedup"):
            rows, distinct, budget, weight_sum, unknown = con.execute(
                f"SELECT count(*), count(DISTINCT example_id), any_value(budget), sum(weight), "
                f"count(*) FILTER (WHERE r.example_id IS NULL) FROM {name}_subset "
                f"LEFT JOIN raw_examples r USING (example_id)").fetchone()
            assert budget == 10 and rows == distinct and 1 <= rows <= 10 and unknown == 0, name
            assert weight_sum == pytest.approx(40, rel=0.35), name
        assert con.execute("SELECT count(*) FROM stratified_subset").fetchone()[0] == 10  # largest remainders: exactly m
        k_rows = con.execute("SELECT count(*), sum(weight) FROM k_center_subset").fetchone()
        assert k_rows == (10, 40.0)  # each center weighs the points nearest it


def test_same_seed_same_subset_and_old_versions_stay_readable(pipeline):
    instance, store, resources, _ = pipeline
    first = store.read_latest_version("sensitivity_subset").select(["example_id", "weight"])
    materialize(ALL_ASSETS, selection=[*subsets.keys], instance=instance, resources=resources,
                run_config={"ops": {"subsets": CONFIG["subsets"]}})
    again = store.read_latest_version("sensitivity_subset").select(["example_id", "weight"])
    assert again.equals(first)
    materialize(ALL_ASSETS, selection=[*subsets.keys], instance=instance, resources=resources,
                run_config={"ops": {"subsets": {"config": {"budget_fraction": 0.25, "seed": 8}}}})
    other = store.read_latest_version("sensitivity_subset").select(["example_id", "weight"])
    assert not other.equals(first)
    with _db(store) as con:
        runs = con.execute("SELECT count(DISTINCT run) FROM sensitivity_subset_history").fetchone()[0]
    assert runs == 3


def test_adaptive_sampling_through_the_asset(pipeline):
    instance, store, resources, _ = pipeline
    cfg = {"ops": {"subsets": {"config": {"budget_fraction": 0.25, "seed": 7, "sampling": "adaptive", "rounds": 2}}}}
    first = materialize(ALL_ASSETS, selection=[*subsets.keys], instance=instance, resources=resources, run_config=cfg)
    meta = first.asset_materializations_for_node("subsets")[0].metadata
    assert meta["rounds"].value == 2 and sum(meta["round_sizes"].value) == 10
    assert meta["alpha_rule"].value == "auto (adaptive pilot)" and 0 < meta["alpha"].value <= 1
    t = store.read_latest_version("sensitivity_subset")
    assert set(t.column("sampling").to_pylist()) == {"adaptive"}
    assert sum(t.column("draws").to_pylist()) == 10 and min(t.column("weight").to_pylist()) > 0
    ids = set(store.read("raw_examples").column("example_id").to_pylist())
    assert set(t.column("example_id").to_pylist()) <= ids
    materialize(ALL_ASSETS, selection=[*subsets.keys], instance=instance, resources=resources, run_config=cfg)
    again = store.read_latest_version("sensitivity_subset")
    assert again.select(["example_id", "weight"]).equals(t.select(["example_id", "weight"]))


def test_z_other_than_2_uses_the_balanced_lambda_of_d_to_the_z(pipeline):
    instance, store, resources, _ = pipeline
    for key in ("bbc-0", "bbc-1"):
        materialize(ALL_ASSETS, selection=[*sensitivities.keys], partition_key=key, instance=instance,
                    resources=resources, run_config={"ops": {"sensitivities": {"config": {"z": 1.0}}}})
    with _db(store) as con:
        lo, hi, balanced, worst = con.execute(
            "SELECT min(s.lambda_), max(s.lambda_), "
            "(SELECT sum(r.loss) / sum(sqrt(a.sq_distance)) FROM cluster_assignments a "
            " JOIN representative_losses r USING (cluster_id)), "
            "max(abs(s.sensitivity - r.loss - s.lambda_ * sqrt(a.sq_distance))) "
            "FROM sensitivities s JOIN cluster_assignments a USING (example_id) JOIN representative_losses r "
            "ON r.cluster_id = a.cluster_id"
        ).fetchone()
    assert lo == hi == pytest.approx(balanced, rel=1e-9)
    assert worst < 1e-9  # s_i = v_a(i) + lambda * d_i^1
    for key in ("bbc-0", "bbc-1"):  # back to the default for the tests that follow
        materialize(ALL_ASSETS, selection=[*sensitivities.keys], partition_key=key, instance=instance,
                    resources=resources)


def test_rematerializing_one_shard_touches_nothing_else(pipeline):
    instance, store, resources, _ = pipeline
    before = snapshot(store.root)
    materialize(ALL_ASSETS, selection=[*raw_examples.keys, *embeddings.keys], partition_key="bbc-1",
                instance=instance, resources=resources)
    after = snapshot(store.root)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed <= {"raw_examples/bbc-1.parquet", "embeddings/bbc-1.parquet"}
    assert set(after) == set(before)


def test_stale_shards_are_named_before_anything_is_written(pipeline):
    instance, store, resources, _ = pipeline
    # New centroids make every shard's assignments stale; the next global step must refuse.
    materialize(ALL_ASSETS, selection=[*centroids.keys], instance=instance, resources=resources,
                run_config={"ops": {"centroids": {"config": {"seed": 99}}}})
    before = snapshot(store.root)
    with pytest.raises(Exception, match=r"cluster_assignments: shard\(s\) \['bbc-0', 'bbc-1'\].*older centroids"):
        materialize(ALL_ASSETS, selection=[*representative_losses.keys], instance=instance, resources=resources)
    assert snapshot(store.root) == before
