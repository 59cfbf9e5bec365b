"""One graph: what the planner recomputes is the lineage Dagster shows, derived from one declaration."""

import pytest
from dagster import AllPartitionMapping, AssetKey, IdentityPartitionMapping, asset

from curation_assets import graph
from curation_assets.assets.centroids import CentroidsConfig
from curation_assets.definitions import GPU_STEPS, PARTITIONED_ASSETS, backfill_shards, defs
from curation_assets.partitions import shards
from curation_assets.pipeline import partition_runs, pipeline_order

MAPPING = {IdentityPartitionMapping: "same", AllPartitionMapping: "all"}


def _dagster_view() -> dict[str, dict[str, str]]:
    """{op: {upstream op: how}} from the code location's resolved asset graph and its partition mappings."""
    g = defs.resolve_asset_graph()
    op_of = {k: g.get(k).assets_def.op.name for k in g.get_all_asset_keys()}
    view: dict[str, dict[str, str]] = {}
    for key in g.get_all_asset_keys():
        ups = view.setdefault(op_of[key], {})
        for parent in g.get(key).parent_keys:
            if op_of[parent] == op_of[key]:
                continue
            if not g.get(parent).is_partitioned:
                how = "global"
            else:
                how = MAPPING[type(g.get_partition_mapping(key, parent))]
            assert ups.get(op_of[parent], how) == how, (key, parent)
            ups[op_of[parent]] = how
    return view


def test_the_planner_and_the_ui_see_the_same_graph():
    assert {op: node.upstream for op, node in graph.nodes().items()} == _dagster_view()
    g = defs.resolve_asset_graph()
    partitioned = {g.get(k).assets_def.op.name for k in g.get_all_asset_keys() if g.get(k).is_partitioned}
    assert set(PARTITIONED_ASSETS) == partitioned
    assert set(backfill_shards.selection.resolve(g)) == {k for k in g.get_all_asset_keys()
                                                          if g.get(k).is_partitioned}


def test_the_disagreements_once_found_between_the_two_views_are_gone():
    # The planner used to miss that the probe's readers read the embeddings, and to think the
    # evaluation read every baseline: now both come from the asset's own deps.
    assert graph.node("centroids").upstream == {"embeddings": "all", "raw_examples": "all"}
    assert graph.node("centroids").keys == ("centroids", "probe")  # one gather of the vectors serves both
    assert graph.node("subset_evaluation").upstream == {"embeddings": "all", "raw_examples": "all", "subsets": "global"}
    assert graph.node("cluster_assignments").upstream == {"embeddings": "same", "centroids": "global",
                                                          "raw_examples": "same"}


def test_the_method_is_a_path_through_the_graph():
    chain = ["raw_examples", "embeddings", "centroids", "cluster_assignments", "representative_losses",
             "sensitivities", "subsets", "subset_evaluation", "recommended_subset", "subset_export"]
    for parent, child in zip(chain, chain[1:]):
        if parent != "subset_evaluation":
            assert parent in graph.node(child).upstream or any(
                parent in graph.node(mid).upstream for mid in graph.node(child).upstream), (parent, child)
    assert "subset_evaluation" in graph.node("recommended_subset").upstream


def test_every_asset_runs_in_some_pipeline_and_in_dependency_order():
    assert set(pipeline_order(extras=True, evaluate=True)) == set(graph.ops())
    for extras in (False, True):
        for evaluate in (False, True):
            order = pipeline_order(extras, evaluate)
            for i, op in enumerate(order):  # an upstream left out of a run is read as stored
                assert not set(graph.node(op).upstream) & set(order[i:]), (op, extras, evaluate)
    assert "subset_evaluation" not in pipeline_order(extras=True, evaluate=False)
    assert pipeline_order(extras=False, evaluate=False) == graph.ops(["curation"])


def test_derived_facts_sit_on_the_assets():
    assert {"embeddings", "centroids", "cluster_assignments"} <= set(GPU_STEPS)
    assert "raw_examples" not in GPU_STEPS and "subsets" not in GPU_STEPS
    assert graph.node("centroids").config_class is CentroidsConfig
    assert graph.node("baseline_subsets").config_class is None
    assert graph.node("subsets").keys[0] == "sensitivity_subset" and graph.node("subsets").stored == "versioned"
    assert graph.node("subset_export").stored == "files"
    assert {op for op, n in graph.nodes().items() if n.keeps_fit_on_new_shards} == {"centroids",
                                                                                      "representative_losses"}
    assert set(graph.config_classes()) == {op for op, n in graph.nodes().items()
                                           if n.asset.op.compute_fn.has_config_arg()}


def test_the_graph_refuses_an_asset_listed_before_what_it_reads_or_reading_nothing_known():
    @asset(partitions_def=shards)
    def first(): ...

    @asset(deps=["first"], partitions_def=shards)
    def second(): ...

    @asset(deps=["second"])
    def third(): ...

    built = graph.build([first, second, third])
    assert built["second"].upstream == {"first": "same"} and built["third"].upstream == {"second": "all"}
    with pytest.raises(ValueError, match="second: listed before its upstream 'first'"):
        graph.build([second, first])

    @asset(deps=["nowhere"])
    def orphan(): ...

    with pytest.raises(ValueError, match="orphan: depends on 'nowhere', which no asset makes"):
        graph.build([orphan])


def test_checks_jobs_and_sensor_are_registered():
    g = defs.resolve_asset_graph()
    checks = {(c.asset_key.to_user_string(), c.name) for c in g.asset_check_keys}
    assert ("sensitivity_subset", "sensitivity_subset_weights_are_sane") in checks
    assert ("centroids", "centroids_have_no_empty_clusters") in checks
    assert g.get(AssetKey("sensitivity_subset")).group_name == "curation"
    assert defs.resolve_job_def("refresh_stale").name == "refresh_stale"
    assert defs.resolve_schedule_def("daily_refresh").cron_schedule == "0 3 * * *"
    assert defs.resolve_sensor_def("refit_on_drift").job_name == "refresh_stale"
    assert defs.resolve_sensor_def("register_new_shards").name == "register_new_shards"


def test_stale_shards_run_as_ranges_of_consecutive_registered_partitions():
    registered = ["a", "b", "c", "d", "e"]
    assert partition_runs(["a", "b", "c", "d", "e"], registered) == [("a", "e")]
    assert partition_runs(["e", "a", "b", "d"], registered) == [("a", "b"), ("d", "e")]  # registered order
    assert partition_runs(["c"], registered) == [("c", "c")]
    assert partition_runs([None], registered) == [(None, None)]  # a global asset: one run
    with pytest.raises(ValueError, match=r"shards: \['z'\] are not registered"):
        partition_runs(["a", "z"], registered)
