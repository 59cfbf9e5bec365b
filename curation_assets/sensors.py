"""Registers files dropped into the source as new shards and folds them into the subset."""

import hashlib

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from resources.data_source import ExampleSource

from .partitions import shards
from .schedules import refresh_stale


@sensor(job=refresh_stale, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED,
        description="Adds shards that appeared in the source as partitions, then launches one refresh that "
                    "embeds, assigns and scores only them and draws a new subset version over all shards.")
def register_new_shards(context: SensorEvaluationContext, source: ExampleSource) -> SensorResult:
    known = set(context.instance.get_dynamic_partitions(shards.name))
    new = [key for key in source.list_shards() if key not in known]
    if not new:
        return SensorResult(skip_reason="no new shards in the source")
    run_key = "ingest-" + hashlib.md5(",".join(new).encode()).hexdigest()[:12]
    return SensorResult(
        run_requests=[RunRequest(run_key=run_key, tags={"curation/new_shards": ",".join(new[:50])})],
        dynamic_partitions_requests=[shards.build_add_request(new)],
    )
