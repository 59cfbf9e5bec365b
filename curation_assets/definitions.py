"""The code location: assets, checks, sensors and the resources they use."""


from dagster import Definitions

from resources import ComputeDevice, CurationStore, ExampleSource, SentenceEmbedder

from .assets import all_assets
from .checks import all_checks
from .sensors import ingest_shard_job, register_new_shards


def default_resources(**overrides) -> dict:
    compute = overrides.pop("compute", None) or ComputeDevice()
    resources = {
        "source": ExampleSource(),
        "store": CurationStore(),
        "compute": compute,
        "embedder": SentenceEmbedder(compute=compute),
    }
    resources.update(overrides)
    return resources


defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[ingest_shard_job],
    sensors=[register_new_shards],
    resources=default_resources(),
)
