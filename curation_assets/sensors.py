"""Registers the source's shards as dynamic partitions and ingests new ones."""


from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, define_asset_job, sensor

from resources.data_source import ExampleSource

from .partitions import shards

ingest_shard_job = define_asset_job(
    "ingest_shard", selection=["raw_examples", "embeddings"],
    description="Load and embed one shard.",
)


@sensor(job=ingest_shard_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED,
        description="Adds shards that appeared in the source as partitions and ingests them.")
def register_new_shards(context: SensorEvaluationContext, source: ExampleSource) -> SensorResult:
    known = set(context.instance.get_dynamic_partitions(shards.name))
    new = [key for key in source.list_shards() if key not in known]
    return SensorResult(
        run_requests=[RunRequest(partition_key=key, run_key=f"ingest-{key}") for key in new],
        dynamic_partitions_requests=[shards.build_add_request(new)] if new else [],
    )
