"""Drift of new shards from the clustering, and the daily refresh that folds them in."""

import numpy as np
import pytest
from dagster import DagsterInstance, Definitions, build_sensor_context

from conftest import make_resources
from conftest import write_examples as _write
from curation_assets.algorithms.drift import expected_share_shift, measure_drift
from curation_assets.pipeline import run_pipeline
from curation_assets.schedules import refit_on_drift, refresh_stale
from resources import CurationStore, ExampleSource
from resources.drift_policy import DriftPolicy


def test_share_shift_noise_matches_sampling_noise_over_many_seeds():
    """Batches drawn from the fit's own shares: TV minus its predicted noise averages ~0. A noise
    term off by a factor of two (or a missing 1/2 in TV) moves the mean far outside the bound."""
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(30))
    excess = []
    for seed in range(300):
        labels = np.random.default_rng(seed).choice(30, size=400, p=q)
        d = measure_drift(labels, np.ones(400), q, 1.0)
        excess.append(d.share_shift - d.share_shift_noise)
    noise = expected_share_shift(q, 400)
    assert abs(np.mean(excess)) < 0.1 * noise
    assert np.mean(np.array(excess) > 0.5 * noise) < 0.05


def test_drift_grows_with_shift_and_far_points():
    q = np.full(10, 0.1)
    same = measure_drift(np.arange(1000) % 10, np.ones(1000), q, 1.0)
    assert same.share_shift == pytest.approx(0.0) and same.cost_ratio == pytest.approx(1.0)
    skewed = measure_drift(np.zeros(1000, dtype=int), np.full(1000, 3.0), q, 1.0)
    assert skewed.share_shift == pytest.approx(0.9) and skewed.cost_ratio == pytest.approx(3.0)
    assert DriftPolicy().verdict(skewed.cost_ratio, skewed.excess_share_shift) == "refit"
    assert DriftPolicy().verdict(1.3, 0.0) == "warn"
    assert DriftPolicy().verdict(1.0, 0.0) == "ok"
    assert DriftPolicy().verdict(9.0, 0.9, examples=50) == "ok"  # too small to act on
    assert DriftPolicy().verdict(9.0, 0.9, examples=500) == "refit"
    with pytest.raises(ValueError, match="drift.refit_cost_ratio"):
        DriftPolicy(refit_cost_ratio=0).verdict(1.0, 0.0)
    with pytest.raises(ValueError, match="cluster_ids"):
        measure_drift([0, 12], [1.0, 1.0], q, 1.0)


def _vectors(n, seed, centers):
    rng = np.random.default_rng(seed)
    return (centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, centers.shape[1]))).astype(np.float32)


def test_drifted_shard_warns_then_the_refresh_refits(tmp_path):
    rng = np.random.default_rng(1)
    home_centers = rng.normal(size=(4, 8)) * 5
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for s in range(3):
        ids = [f"s{s}-{i}" for i in range(250)]
        _write(inbox / f"part{s}.parquet", ids, _vectors(250, s, home_centers))
    store = CurationStore(database_path=str(tmp_path / "db" / "curation.duckdb"))
    source = ExampleSource(kind="files", path=str(inbox / "*.parquet"), embedding_column="vec")
    resources = make_resources(store, source)
    config = {"centroids": {"config": {"n_clusters": 4, "seed": 0}}, "subsets": {"config": {"budget_fraction": 0.2}}}
    defs = Definitions(jobs=[refresh_stale], sensors=[refit_on_drift], resources=resources)
    job = defs.resolve_job_def("refresh_stale")
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, resources, config, log=lambda _: None, extras=False)
        first_version = store.read("centroids").column("version")[0].as_py()
        sensor_ctx = build_sensor_context(instance=instance, resources={"store": store, "drift": DriftPolicy()})
        assert refit_on_drift(sensor_ctx).__class__.__name__ == "SkipReason"

        # A shard from a region the clustering never saw arrives; the refresh folds it in.
        far = rng.normal(size=(1, 8)) * 5 + 40
        _write(inbox / "part3.parquet", [f"s3-{i}" for i in range(250)], _vectors(250, 3, far))
        assert job.execute_in_process(instance=instance).success
        assert store.read("centroids").column("version")[0].as_py() == first_version
        drift = store.query("SELECT * FROM assignment_drift ORDER BY shard").to_pylist()
        by_shard = {r["shard"]: r for r in drift}
        assert by_shard["part3"]["cost_ratio"] > 10
        assert all(by_shard[f"part{s}"]["cost_ratio"] < 1.25 for s in range(3))
        # The refresh kept the settings of the last run (4 clusters, 20% budget).
        subset = store.read_latest_version("sensitivity_subset")
        assert subset.column("budget")[0].as_py() == round(0.2 * 1000)

        # The sensor asks for a refit; the next refresh refits and reassigns every shard.
        request = refit_on_drift(sensor_ctx)
        assert request.run_key == f"refit-{first_version}"
        assert job.execute_in_process(instance=instance).success
    second_version = store.read("centroids").column("version")[0].as_py()
    assert second_version != first_version
    versions = store.query("SELECT DISTINCT centroids_version FROM cluster_assignments").column(0).to_pylist()
    assert versions == [second_version]
    after = store.query("SELECT shard, cost_ratio FROM assignment_drift WHERE centroids_version = ?",
                        [second_version]).to_pylist()
    assert len(after) == 4 and max(r["cost_ratio"] for r in after) < 3


def test_drift_check_warns_on_the_drifted_shard(tmp_path):
    from dagster import materialize

    from curation_assets.assets import centroids, cluster_assignments, embeddings, raw_examples
    from curation_assets.checks import cluster_assignments_drift

    rng = np.random.default_rng(2)
    centers = rng.normal(size=(3, 8)) * 5
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _write(inbox / "a.parquet", [f"a{i}" for i in range(200)], _vectors(200, 0, centers))
    store = CurationStore(database_path=str(tmp_path / "db" / "curation.duckdb"))
    source = ExampleSource(kind="files", path=str(inbox / "*.parquet"), embedding_column="vec")
    resources = make_resources(store, source)
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, resources, {"centroids": {"config": {"n_clusters": 3}}}, log=lambda _: None,
                     extras=False)
        _write(inbox / "b.parquet", [f"b{i}" for i in range(200)], _vectors(200, 1, centers[:1] + 30))
        instance.add_dynamic_partitions("shards", ["b"])
        everything = [raw_examples, embeddings, centroids, cluster_assignments, cluster_assignments_drift]
        for sel in ([raw_examples, embeddings], [cluster_assignments]):
            result = materialize(everything, selection=[k for a in sel for k in a.keys], partition_key="b",
                                 instance=instance, resources=resources)
    evals = result.get_asset_check_evaluations()
    assert [e.check_name for e in evals] == ["cluster_assignments_drift"]
    assert not evals[0].passed
    assert evals[0].metadata["drifted_shards"].value == "b"
    assert evals[0].metadata["refit_requested"].value is True
