"""Launches a refresh when files appear in (or leave) the source; the refresh registers them."""

import hashlib

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from resources.data_source import ExampleSource

from .partitions import shards
from .schedules import refresh_stale


@sensor(job=refresh_stale, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED,
        description="When shards appear in or leave the source, launches one refresh that validates the new "
                    "ones against the store, registers them, retires the removed ones, embeds, assigns and "
                    "scores only what changed and draws a new subset version over the current shards.")
def register_new_shards(context: SensorEvaluationContext, source: ExampleSource) -> SensorResult:
    # Registration is left to the refresh (pipeline.run_pipeline): a shard is registered only
    # once it has been checked against the store, so a bad file never enters the partition set.
    known = set(context.instance.get_dynamic_partitions(shards.name))
    present = source.list_shards()
    new, gone = [k for k in present if k not in known], sorted(known - set(present))
    if not new and not gone:
        return SensorResult(skip_reason="the source's shards are the registered ones")
    change = ",".join(new) + "|" + ",".join(gone)
    run_key = "ingest-" + hashlib.md5(change.encode()).hexdigest()[:12]
    return SensorResult(run_requests=[RunRequest(
        run_key=run_key, tags={"curation/new_shards": ",".join(new[:50]), "curation/removed_shards": ",".join(gone[:50])})])
