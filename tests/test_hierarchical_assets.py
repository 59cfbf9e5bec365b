"""`hierarchical_centroids` and `balanced_subset` through the real pipeline, checked in DuckDB."""

import duckdb
import faiss
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from conftest import clustered_vectors, make_resources, write_examples
from curation_assets.assets import balanced_subset, hierarchical_centroids
from curation_assets.checks import all_checks
from curation_assets.assets import all_assets as ALL_ASSETS
from curation_assets.pipeline import run_pipeline
from resources import CurationStore, ExampleSource

N_PER_FILE = 45
CONFIG = {
    "centroids": {"config": {"n_clusters": 4}},
    "hierarchical_centroids": {"config": {"clusters_per_level": [12, 5, 2], "seed": 1}},
    "subsets": {"config": {"budget": 10}},
    "balanced_subset": {"config": {"budget": 17, "seed": 4}},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    # small k-means on a busy 2-core machine: one faiss thread avoids OpenMP spin-waits (see
    # test_hierarchical.one_faiss_thread); results are identical
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    root = tmp_path_factory.mktemp("hier")
    data = root / "in"
    data.mkdir()
    write_examples(data / "a.parquet", [f"a{i:02d}" for i in range(N_PER_FILE)], clustered_vectors(N_PER_FILE, 0))
    write_examples(data / "b.parquet", [f"b{i:02d}" for i in range(N_PER_FILE)], clustered_vectors(N_PER_FILE, 1))
    source = ExampleSource(kind="files", path=str(data / "*.parquet"), embedding_column="vec")
    store = CurationStore(database_path=str(root / "db" / "c.duckdb"))
    resources = make_resources(store, source)
    instance = DagsterInstance.ephemeral()
    run_pipeline(instance, resources, CONFIG, log=lambda _: None)
    yield instance, store, resources
    instance.dispose()
    faiss.omp_set_num_threads(threads)


def _rebuild(instance, resources, config):
    """Re-materialise the two hierarchical assets in one run (they need nothing else rebuilt)."""
    return materialize(
        [*ALL_ASSETS, *all_checks], selection=[*hierarchical_centroids.keys, *balanced_subset.keys],
        instance=instance, resources=resources, raise_on_error=True,
        run_config={"ops": {k: v for k, v in config.items() if k in ("hierarchical_centroids", "balanced_subset")}},
    )


def test_the_hierarchy_is_a_consistent_tree_over_all_examples(built):
    _, store, _ = built
    with duckdb.connect(str(store.db_path), read_only=True) as con:
        per_level = con.execute("SELECT level, count(*), min(cluster_id), max(cluster_id), sum(size), "
                                "count(parent_id), count(DISTINCT version) FROM hierarchical_centroids "
                                "GROUP BY level ORDER BY level").fetchall()
        assert [r[:4] for r in per_level] == [(1, 12, 0, 11), (2, 5, 0, 4), (3, 2, 0, 1)]
        assert all(r[4] == 2 * N_PER_FILE for r in per_level)  # every level covers every example once
        assert [r[5] for r in per_level] == [12, 5, 0]  # the top level has no parent
        assert {r[6] for r in per_level} == {1}
        # every parent exists one level up, and its size is the sum of its children's
        orphans = con.execute("SELECT count(*) FROM hierarchical_centroids c LEFT JOIN hierarchical_centroids p "
                              "ON p.level = c.level + 1 AND p.cluster_id = c.parent_id "
                              "WHERE c.parent_id IS NOT NULL AND p.cluster_id IS NULL").fetchone()[0]
        assert orphans == 0
        mismatched = con.execute(
            "SELECT count(*) FROM hierarchical_centroids p JOIN (SELECT level + 1 AS level, parent_id AS cluster_id, "
            "sum(size) AS s FROM hierarchical_centroids WHERE parent_id IS NOT NULL GROUP BY ALL) c "
            "USING (level, cluster_id) WHERE c.s <> p.size").fetchone()[0]
        assert mismatched == 0
        dims = con.execute("SELECT DISTINCT len(centroid) FROM hierarchical_centroids").fetchall()
        assert dims == [(8,)]


def test_the_balanced_subset_is_a_valid_draw_from_the_hierarchy(built):
    instance, store, _ = built
    with duckdb.connect(str(store.db_path), read_only=True) as con:
        n, distinct, budget, seeds, known = con.execute(
            "SELECT count(*), count(DISTINCT example_id), any_value(budget), count(DISTINCT seed), "
            "count(r.example_id) FROM balanced_subset b LEFT JOIN raw_examples r USING (example_id)").fetchone()
        assert (n, distinct, budget, seeds, known) == (17, 17, 17, 1, 17)  # budget met exactly, no repeats
        # the path runs top-down along the stored parent links and ends at the row's leaf
        paths = con.execute("SELECT path, leaf_cluster FROM balanced_subset").fetchall()
        parent = {(lv, c): p for lv, c, p in con.execute(
            "SELECT level, cluster_id, parent_id FROM hierarchical_centroids").fetchall()}
        for path, leaf in paths:
            top, mid, low = map(int, path.split("/"))
            assert low == leaf and parent[(1, low)] == mid and parent[(2, mid)] == top and parent[(3, top)] is None
        # weight = leaf size / rows drawn from that leaf; probability its inverse
        rows = con.execute(
            "SELECT b.weight, b.probability, c.size, count(*) OVER (PARTITION BY b.leaf_cluster) "
            "FROM balanced_subset b JOIN hierarchical_centroids c ON c.level = 1 AND c.cluster_id = b.leaf_cluster").fetchall()
        for w, p, size, drawn in rows:
            assert w == pytest.approx(size / drawn) and p == pytest.approx(drawn / size)
        # the top-level split is equal up to one row, except clusters smaller than their share
        tops = con.execute("SELECT c.cluster_id, c.size, count(b.example_id) FROM hierarchical_centroids c "
                           "LEFT JOIN balanced_subset b ON split_part(b.path, '/', 1)::INT = c.cluster_id "
                           "WHERE c.level = 3 GROUP BY ALL").fetchall()
        unsaturated = [got for _, size, got in tops if got < size]
        assert sum(got for _, _, got in tops) == 17 and max(unsaturated) - min(unsaturated) <= 1
    meta = instance.get_latest_materialization_event(AssetKey("balanced_subset")).asset_materialization.metadata
    assert meta["budget"].value == 17 and meta["dagster/row_count"].value == 17


def test_same_seed_same_subset_and_the_seed_matters(built):
    instance, store, resources = built
    first = store.read_latest_version("balanced_subset").select(["example_id", "weight", "path"])
    _rebuild(instance, resources, CONFIG)
    again = store.read_latest_version("balanced_subset").select(["example_id", "weight", "path"])
    assert again.equals(first)
    other = {**CONFIG, "balanced_subset": {"config": {"budget": 17, "seed": 5}}}
    _rebuild(instance, resources, other)
    changed = store.read_latest_version("balanced_subset")
    assert changed.num_rows == 17 and not changed.column("example_id").equals(first.column("example_id"))
    # every run stays readable in the history view
    runs = store.query("SELECT count(DISTINCT run) AS runs FROM balanced_subset_history").column("runs")[0].as_py()
    assert runs == 3


def test_a_bad_level_count_names_the_config_field(built):
    instance, _, resources = built
    bad = {"hierarchical_centroids": {"config": {"clusters_per_level": [5, 5]}}}
    with pytest.raises(Exception, match=r"hierarchical_centroids: clusters_per_level: level 2 asks for 5"):
        _rebuild(instance, resources, bad)
