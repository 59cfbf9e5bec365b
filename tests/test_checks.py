"""The checks that gate what feeds training: they pass on a real small run, fail on a corrupted
copy of its stored data with metadata naming the problem, and a blocking one stops downstream."""

import shutil

import numpy as np
import pyarrow as pa
import pytest
from dagster import DagsterInstance, build_asset_check_context, materialize

from conftest import make_resources, write_examples
from curation_assets.arrays import embedding_column
from curation_assets.assets import cluster_assignments, embeddings
from curation_assets.checks import (
    MAX_CLUSTER_SHARE,
    _uniform_hit_probability,
    all_checks,
    embeddings_are_finite_and_of_one_dimension,
    largest_cluster_share_is_bounded,
    stored_vector_report,
    subset_covers_clusters,
    subset_size_is_as_asked,
)
from curation_assets.assets import all_assets as ALL_ASSETS
from curation_assets.pipeline import run_pipeline
from resources import CurationStore, ExampleSource

CENTERS = np.random.default_rng(42).normal(size=(3, 8)) * 6


def _vectors(n: int, seed: int) -> np.ndarray:
    """Three well separated, equally filled clusters shared by every shard."""
    noise = np.random.default_rng(seed).normal(size=(n, 8))
    return (CENTERS[np.arange(n) % 3] + noise).astype(np.float32)


NEW = ("embeddings_are_finite_and_of_one_dimension", "largest_cluster_share_is_bounded",
       "subset_size_is_as_asked", "subset_covers_clusters")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The real pipeline over two Parquet shards of precomputed 8-d vectors (no model to load)."""
    root = tmp_path_factory.mktemp("checks")
    data = root / "in"
    data.mkdir()
    write_examples(data / "a.parquet", [f"a{i}" for i in range(30)], _vectors(30, 0))
    write_examples(data / "b.parquet", [f"b{i}" for i in range(30)], _vectors(30, 1))
    source = ExampleSource(kind="files", path=str(data / "*.parquet"), embedding_column="vec")
    store = CurationStore(database_path=str(root / "db" / "curation.duckdb"))
    instance = DagsterInstance.ephemeral()
    # faiss's random init finds the three clusters for seed 2 (seeds 0, 1, 3 merge two of them,
    # which largest_cluster_share_is_bounded rightly flags).
    config = {"centroids": {"config": {"n_clusters": 3, "seed": 2}}, "subsets": {"config": {"budget": 12, "seed": 1}}}
    results = run_pipeline(instance, make_resources(store, source), config, log=lambda _: None, extras=False)
    yield results, store, source, root
    instance.dispose()


def _md(result) -> dict:
    """Plain values of a check result's (or evaluation's) metadata."""
    return {k: v.value for k, v in result.metadata.items()}


def _copy(good, tmp_path) -> CurationStore:
    """A fresh store over a copy of the good run's files: corrupting it leaves the fixture intact."""
    _, store, _, root = good
    shutil.copytree(root / "db", tmp_path / "db")
    return CurationStore(database_path=str(tmp_path / "db" / "curation.duckdb"))


def test_every_new_check_ran_in_the_pipeline_and_passed(good):
    results = good[0]
    evaluations = {e.check_name: e for r in results for e in r.get_asset_check_evaluations()}
    assert set(NEW) <= evaluations.keys()
    for name in NEW:
        assert evaluations[name].passed, (name, _md(evaluations[name]))
    emb = _md(evaluations["embeddings_are_finite_and_of_one_dimension"])
    # in the run over both shards: every stored shard's dimension; the source's own vectors were
    # validated when loaded (a NaN there is refused before anything is stored), so none is read again
    assert (emb["rows_checked"], emb["rows_validated_when_loaded"], emb["non_finite_vectors"],
            emb["dimensions"]) == (0, 60, 0, "8 (60 rows)")
    assert emb["scope"].startswith("shard(s) ")
    size = _md(evaluations["subset_size_is_as_asked"])
    assert (size["budget"], size["draws"], size["sampling"]) == (12, 12, "stratified")  # the default sampler
    assert {c.check_key.name for c in all_checks} >= set(NEW)
    shares = _md(evaluations["largest_cluster_share_is_bounded"])
    assert (shares["largest_share"], shares["clusters"]) == (round(20 / 60, 4), 3)


def test_checks_can_be_called_directly_on_the_good_store(good):
    store = good[1]
    assert embeddings_are_finite_and_of_one_dimension(build_asset_check_context(), store=store).passed
    for check in (largest_cluster_share_is_bounded, subset_size_is_as_asked, subset_covers_clusters):
        result = check(store=store)
        assert result.passed, (check.check_key.name, _md(result))


def test_non_finite_vector_fails_called_alone_and_in_its_shards_run(good, tmp_path):
    _, _, source, _ = good
    store = _copy(good, tmp_path)
    t = store.read("embeddings", ["b"])
    vecs = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    vecs[3, 5], vecs[7, 0] = np.nan, np.inf
    # a file admission did not write (no provenance): its vectors are read
    store.write("embeddings", t.set_column(1, "embedding", embedding_column(vecs)).replace_schema_metadata(None), "b")
    result = embeddings_are_finite_and_of_one_dimension(build_asset_check_context(), store=store)
    assert not result.passed and _md(result)["non_finite_vectors"] == 2
    assert _md(result)["scope"] == "every stored row"
    # what a run for one shard reads: that shard's vectors (b's file lost the provenance admission
    # gave it, so it is read; a's is the source's, validated when loaded), every shard's dimension
    assert stored_vector_report(store, ["b"]) == ({8: 60}, 2, 30)
    assert stored_vector_report(store, ["a"]) == ({8: 60}, 0, 0)
    assert stored_vector_report(store, ["a", "b"]) == ({8: 60}, 2, 30)


def test_an_embedders_vectors_are_read_the_sources_are_counted_as_validated_when_loaded(good, tmp_path):
    """Which shards a shard run reads follows the provenance of the stored vectors: an embedder's
    output is read (a model can emit NaN); the source's own vectors were validated when loaded."""
    store = _copy(good, tmp_path)
    t = store.read("embeddings", ["b"])
    vecs = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    vecs[0, 0] = np.nan
    bad = t.set_column(1, "embedding", embedding_column(vecs))
    bad = bad.replace_schema_metadata(None)
    store.write("embeddings", bad, "b", provenance={"embedder": {"model": "some-model"}})
    assert stored_vector_report(store, ["b"]) == ({8: 60}, 1, 30)
    store.write("embeddings", bad, "b", provenance={"embedder": "precomputed"})
    assert stored_vector_report(store, ["b"]) == ({8: 60}, 0, 0)
    assert stored_vector_report(store, None)[1:] == (1, 60)  # called alone: every stored row, as ever


def test_a_shard_of_another_dimension_blocks_downstream(good, tmp_path):
    """Re-materialising shard a (its vectors are fine) reads every shard's dimension from its
    footer, sees shard b's 9-d vectors, and the blocking failure keeps cluster_assignments[a]
    from running."""
    _, _, source, _ = good
    store = _copy(good, tmp_path)
    t = store.read("embeddings", ["b"])
    store.write("embeddings", t.set_column(1, "embedding", embedding_column(np.ones((t.num_rows, 9), np.float32))), "b")
    before = store.read("cluster_assignments", ["a"])
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shards", ["a", "b"])
        run = materialize([*ALL_ASSETS, *all_checks], selection=[*embeddings.keys, *cluster_assignments.keys],
                          partition_key="a", instance=instance, resources=make_resources(store, source),
                          raise_on_error=False)
    evals = {e.check_name: e for e in run.get_asset_check_evaluations()}
    assert not evals["embeddings_are_finite_and_of_one_dimension"].passed
    assert _md(evals["embeddings_are_finite_and_of_one_dimension"])["dimensions"] == "8 (30 rows), 9 (30 rows)"
    assert [m.asset_key.path[-1] for m in run.get_asset_materialization_events()] == ["embeddings"]
    assert not run.success
    started = [e.step_key for e in run.all_events if e.event_type_value == "STEP_START"]
    assert "cluster_assignments" not in started  # skipped: the failed blocking check is upstream of it
    assert [e.step_key for e in run.get_step_failure_events()] == [
        "embeddings_embeddings_are_finite_and_of_one_dimension"]
    assert store.read("cluster_assignments", ["a"]).equals(before)


def test_mixed_dimensions_fail(good, tmp_path):
    store = _copy(good, tmp_path)
    t = store.read("embeddings", ["b"])
    wider = np.ones((t.num_rows, 9), dtype=np.float32)
    store.write("embeddings", t.set_column(1, "embedding", embedding_column(wider)), "b")
    result = embeddings_are_finite_and_of_one_dimension(build_asset_check_context(), store=store)
    assert not result.passed and _md(result)["non_finite_vectors"] == 0
    assert _md(result)["dimensions"] == "8 (30 rows), 9 (30 rows)"


def test_collapsed_clustering_warns(good, tmp_path):
    store = _copy(good, tmp_path)
    for shard in ("a", "b"):
        t = store.read("cluster_assignments", [shard])
        i = t.schema.get_field_index("cluster_id")
        store.write("cluster_assignments", t.set_column(i, t.schema.field(i), pa.array(
            np.zeros(t.num_rows), t.schema.field(i).type)), shard)
    result = largest_cluster_share_is_bounded(store=store)
    assert not result.passed and result.severity.value == "WARN"
    assert _md(result)["largest_share"] == 1.0 > MAX_CLUSTER_SHARE
    assert _md(result)["largest_cluster"] == 0


def _subset_version(store: CurationStore, version: str, **columns) -> None:
    t = store.read_latest_version("sensitivity_subset")
    for name, values in columns.items():
        i = t.schema.get_field_index(name)
        t = t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type))
    store.write_version("sensitivity_subset", t, version)


def test_wrong_draws_fail_the_size_check(good, tmp_path):
    store = _copy(good, tmp_path)
    t = store.read_latest_version("sensitivity_subset")
    draws = t.column("draws").to_numpy().copy()
    draws[0] += 3
    _subset_version(store, "99990101T000000000000Z-corrupt", draws=draws)
    result = subset_size_is_as_asked(store=store)
    assert not result.passed
    assert _md(result)["draws"] == 15 and _md(result)["budget"] == 12
    assert "draws sum to 15, budget is 12" in _md(result)["problem"]


def test_poisson_size_is_held_to_five_sigma(good, tmp_path):
    store = _copy(good, tmp_path)
    rows = store.read_latest_version("sensitivity_subset").num_rows
    ones = np.ones(rows, dtype=np.int64)
    # Within 5 sqrt(m) of m: passes, although draws != m.
    _subset_version(store, "99990101T000000000000Z-near", draws=ones, sampling=["poisson"] * rows,
                    budget=np.full(rows, rows + 4))
    assert subset_size_is_as_asked(store=store).passed
    # A budget of 100 with ~rows realised: 5 * sqrt(100) = 50 < 100 - rows, fails.
    _subset_version(store, "99990102T000000000000Z-far", draws=ones, sampling=["poisson"] * rows,
                    budget=np.full(rows, 100))
    result = subset_size_is_as_asked(store=store)
    assert not result.passed and _md(result)["sampling"] == "poisson"
    assert "from the budget 100" in _md(result)["problem"]


def test_subset_in_one_cluster_warns_on_coverage(good, tmp_path):
    store = _copy(good, tmp_path)
    sizes = store.query("SELECT cluster_id, count(*) AS n FROM cluster_assignments GROUP BY 1 ORDER BY 1").to_pydict()
    assert len(sizes["cluster_id"]) == 3
    t = store.read_latest_version("sensitivity_subset")
    _subset_version(store, "99990101T000000000000Z-one", cluster_id=np.zeros(t.num_rows))
    result = subset_covers_clusters(store=store)
    assert not result.passed and result.severity.value == "WARN"
    assert (_md(result)["clusters_covered"], _md(result)["clusters_present"]) == (1, 3)
    assert _md(result)["expected_share_uniform"] > 0.9  # 12 of 60 uniform rows all but surely hit each


def test_uniform_hit_probability_matches_the_exact_ratio():
    from math import comb
    for n, n_j, r in [(60, 5, 12), (60, 1, 1), (10, 3, 8), (1000, 2, 30)]:
        exact = 1 - comb(n - n_j, r) / comb(n, r)
        assert _uniform_hit_probability(n, n_j, r) == pytest.approx(exact, rel=1e-9, abs=1e-12)
    assert _uniform_hit_probability(10, 5, 6) == 1.0
    # Large n: no overflow; matches 1 - (1 - n_j/n)^r closely when r << n.
    assert _uniform_hit_probability(10**7, 10, 1000) == pytest.approx(1 - (1 - 1e-6) ** 1000, rel=1e-3)
