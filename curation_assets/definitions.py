"""The code location: assets, checks, sensors and the resources they use.

The store and the source are read from environment variables, so every process that loads this
module (a multiprocess-executor step, a run launched from the UI, `curate backfill`, a test)
uses the same data without a code edit. Unset or empty variables keep the defaults:

    CURATION_DATABASE               store.database_path (data/curation.duckdb)
    CURATION_SOURCE_KIND            source.kind: bbc_news, files or duckdb_table (bbc_news)
    CURATION_SOURCE_PATH            source.path, the glob of a `files` source
    CURATION_SOURCE_DATABASE        source.database of a `duckdb_table` source
    CURATION_SOURCE_TABLE           source.table of a `duckdb_table` source
    CURATION_ID_COLUMN              source.id_column (id)
    CURATION_TEXT_COLUMN            source.text_column (text)
    CURATION_LABEL_COLUMN           source.label_column (label)
    CURATION_EMBEDDING_COLUMN       source.embedding_column (none: the model embeds the text)
    CURATION_NUM_SHARDS             source.num_shards (4)
    CURATION_MAX_EXAMPLES_PER_SHARD source.max_examples_per_shard (none)
"""

import os
from collections.abc import Mapping

from dagster import Definitions, JobDefinition, define_asset_job

from resources import ComputeDevice, CurationStore, ExampleSource, SentenceEmbedder
from resources.drift_policy import DriftPolicy

from .assets import all_assets
from .checks import all_checks
from .schedules import daily_refresh, refit_on_drift, refresh_stale
from .sensors import register_new_shards

SOURCE_KINDS = ("bbc_news", "files", "duckdb_table")
# environment variable -> (ExampleSource field, parser)
SOURCE_ENV = {
    "CURATION_SOURCE_KIND": ("kind", str),
    "CURATION_SOURCE_PATH": ("path", str),
    "CURATION_SOURCE_DATABASE": ("database", str),
    "CURATION_SOURCE_TABLE": ("table", str),
    "CURATION_ID_COLUMN": ("id_column", str),
    "CURATION_TEXT_COLUMN": ("text_column", str),
    "CURATION_LABEL_COLUMN": ("label_column", str),
    "CURATION_EMBEDDING_COLUMN": ("embedding_column", str),
    "CURATION_NUM_SHARDS": ("num_shards", int),
    "CURATION_MAX_EXAMPLES_PER_SHARD": ("max_examples_per_shard", int),
}
DATABASE_ENV = "CURATION_DATABASE"
ENV_VARS = (DATABASE_ENV, *SOURCE_ENV)

# Every asset partitioned by shard: the only ones a per-shard backfill may select.
PARTITIONED_ASSETS = ("raw_examples", "embeddings", "cluster_assignments", "sensitivities")
BACKFILL_JOB = "backfill_shards"
backfill_shards = define_asset_job(
    BACKFILL_JOB, selection=list(PARTITIONED_ASSETS),
    description="Every per-shard asset of one shard (narrow it with an asset selection).",
)


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def source_from_env(environ: Mapping[str, str] | None = None) -> ExampleSource:
    """The source the CURATION_SOURCE_* / CURATION_*_COLUMN variables describe; errors name the variable."""
    environ = os.environ if environ is None else environ
    kwargs = {}
    for name, (field, parse) in SOURCE_ENV.items():
        raw = _env(environ, name)
        if raw is None:
            continue
        try:
            value = parse(raw)
        except ValueError:
            raise ValueError(f"{name}: expected a whole number, got {raw!r}") from None
        if parse is int and value < 1:
            raise ValueError(f"{name}: must be at least 1, got {value}")
        kwargs[field] = value
    kind = kwargs.get("kind", "bbc_news")
    if kind not in SOURCE_KINDS:
        raise ValueError(f"CURATION_SOURCE_KIND: {kind!r} is not one of {', '.join(SOURCE_KINDS)}")
    if kind == "files" and "path" not in kwargs:
        raise ValueError("CURATION_SOURCE_PATH: required when CURATION_SOURCE_KIND=files (a glob of data files)")
    if kind == "duckdb_table":
        for name, field in (("CURATION_SOURCE_DATABASE", "database"), ("CURATION_SOURCE_TABLE", "table")):
            if field not in kwargs:
                raise ValueError(f"{name}: required when CURATION_SOURCE_KIND=duckdb_table")
    return ExampleSource(**kwargs)


def store_from_env(environ: Mapping[str, str] | None = None) -> CurationStore:
    environ = os.environ if environ is None else environ
    path = _env(environ, DATABASE_ENV)
    return CurationStore(database_path=path) if path else CurationStore()


def default_resources(**overrides) -> dict:
    """The resources from the environment (see the module docstring); keyword overrides win."""
    compute = overrides.pop("compute", None) or ComputeDevice()
    resources = {
        "source": overrides.pop("source", None) or source_from_env(),
        "store": overrides.pop("store", None) or store_from_env(),
        "compute": compute,
        "embedder": SentenceEmbedder(compute=compute),
        "drift": DriftPolicy(),
    }
    resources.update(overrides)
    return resources


def backfill_shards_job() -> JobDefinition:
    """The per-shard job with resources read from the environment *now*.

    `reconstructable` calls this again in every step process, so a run sees the environment it
    was launched with, not the one this module was first imported under.
    """
    return Definitions(
        assets=all_assets, asset_checks=all_checks, jobs=[backfill_shards], resources=default_resources()
    ).resolve_job_def(BACKFILL_JOB)


defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[backfill_shards, refresh_stale],
    schedules=[daily_refresh],
    sensors=[register_new_shards, refit_on_drift],
    resources=default_resources(),
)
