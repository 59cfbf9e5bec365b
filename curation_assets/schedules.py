"""The daily refresh: recompute what is stale, in dependency order, with the last-used settings.

One run of `refresh_stale` asks the stored provenance what is not current (new or changed
shards, shards assigned to older centroids, a drift past the refit threshold, a changed
config) and materialises exactly that, one recorded run per asset partition, through the same
planner `curate run` uses. The `refit_on_drift` sensor launches the same job as soon as a
shard's drift passes the refit threshold.
"""

from dagster import (
    Config,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    job,
    op,
    sensor,
)
from pydantic import Field

from resources.drift_policy import DriftPolicy
from resources.storage import CurationStore

from . import graph, lineage
from .pipeline import drift_refit_requested, run_pipeline

DAILY_CRON = "0 3 * * *"


class RefreshConfig(Config):
    evaluate: bool = Field(default=False, description="Also refresh subset_evaluation (minutes).")
    extras: bool = Field(default=True, description="Also refresh the hierarchical and baseline subsets.")


@op(required_resource_keys={"source", "store", "compute", "embedder", "drift"},
    description="Materialise every stale asset partition, upstream first, with the settings each asset "
                "was last computed with.")
def refresh_stale_assets(context: OpExecutionContext, config: RefreshConfig) -> int:
    r = context.resources
    resources = {"source": r.source, "store": r.store, "compute": r.compute, "embedder": r.embedder, "drift": r.drift}
    keys = r.source.list_shards()
    settings = lineage.last_config(r.store, keys, graph.config_classes())
    results = run_pipeline(context.instance, resources, settings, log=context.log.info,
                           evaluate=config.evaluate, extras=config.extras)
    context.log.info(f"refresh: {len(results)} asset partition run(s) launched")
    return len(results)


@job(description="Recompute whatever is stale (new shards, drift, changed settings), upstream first.")
def refresh_stale():
    refresh_stale_assets()


daily_refresh = ScheduleDefinition(
    name="daily_refresh", job=refresh_stale, cron_schedule=DAILY_CRON, execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every day at 03:00 UTC: materialise what is stale.",
)


@sensor(job=refresh_stale, minimum_interval_seconds=300, default_status=DefaultSensorStatus.STOPPED,
        description="Refits the clustering (and recomputes what depends on it) once a shard's drift passes "
                    "the refit threshold of the `drift` resource.")
def refit_on_drift(context: SensorEvaluationContext, store: CurationStore, drift: DriftPolicy):
    drifted = drift_refit_requested(store, drift)
    if not drifted:
        return SkipReason("no shard has drifted past the refit threshold")
    version = store.read("centroids", columns=["version"]).column("version")[0].as_py()
    return RunRequest(run_key=f"refit-{version}", tags={"curation/drifted_shards": ",".join(drifted[:20])})
