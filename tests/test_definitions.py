"""The code location loads and shows the lineage graph the README describes."""

from dagster import AssetKey

from curation_assets.definitions import defs

EDGES = {
    "raw_examples": set(),
    "embeddings": {"raw_examples"},
    "centroids": {"embeddings"},
    "cluster_assignments": {"embeddings", "centroids"},
    "representative_losses": {"cluster_assignments", "raw_examples", "embeddings"},
    "sensitivities": {"cluster_assignments", "representative_losses"},
    "sensitivity_subset": {"sensitivities"},
    "uniform_subset": {"raw_examples"},
    "subset_evaluation": {"embeddings", "raw_examples", "sensitivity_subset", "uniform_subset"},
    "recommended_subset": {"sensitivity_subset", "uniform_subset", "balanced_subset", "subset_evaluation",
                           *(f"{name}_subset" for name in ("stratified", "kmeans_centroids", "k_center", "semdedup"))},
    "subset_export": {"recommended_subset", "raw_examples"},
    "hierarchical_centroids": {"embeddings"},
    "balanced_subset": {"hierarchical_centroids", "embeddings"},
    **{f"{name}_subset": {"embeddings", "cluster_assignments", "sensitivity_subset"}
       for name in ("stratified", "kmeans_centroids", "k_center", "semdedup")},
}
PARTITIONED = {"raw_examples", "embeddings", "cluster_assignments", "sensitivities"}


def test_lineage_graph_matches_the_design():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == set(EDGES)
    for asset, parents in EDGES.items():
        node = graph.get(AssetKey(asset))
        assert {p.to_user_string() for p in node.parent_keys} == parents, asset
        assert (node.partitions_def is not None) == (asset in PARTITIONED), asset


def test_checks_jobs_and_sensor_are_registered():
    graph = defs.resolve_asset_graph()
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("sensitivity_subset", "sensitivity_subset_weights_are_sane") in checks
    assert ("centroids", "centroids_have_no_empty_clusters") in checks
    assert defs.resolve_job_def("refresh_stale").name == "refresh_stale"
    assert defs.resolve_schedule_def("daily_refresh").cron_schedule == "0 3 * * *"
    assert defs.resolve_sensor_def("refit_on_drift").job_name == "refresh_stale"
    assert defs.resolve_sensor_def("register_new_shards").name == "register_new_shards"
