"""The code location: assets, checks, sensors and the resources they use.

The store and the source are read from environment variables, so every process that loads this
module (a multiprocess-executor step, a run launched from the UI, `curate backfill`, a test)
uses the same data without a code edit. Unset or empty variables keep the defaults:

    CURATION_DATABASE               store.database_path (data/curation.duckdb)
    CURATION_TABLES                 store.tables_dir: a folder or s3://bucket/prefix (<name>_tables/ beside <name>.duckdb)
    CURATION_SOURCE_KIND            source.kind: bbc_news, files or duckdb_table (bbc_news)
    CURATION_SOURCE_PATH            source.path, the glob of a `files` source
    CURATION_SOURCE_DATABASE        source.database of a `duckdb_table` source
    CURATION_SOURCE_TABLE           source.table of a `duckdb_table` source
    CURATION_ID_COLUMN              source.id_column (id)
    CURATION_TEXT_COLUMN            source.text_column (text)
    CURATION_LABEL_COLUMN           source.label_column (a column named label, when present)
    CURATION_EMBEDDING_COLUMN       source.embedding_column (none: the model embeds the text)
    CURATION_NUM_SHARDS             source.num_shards (4)
    CURATION_MAX_EXAMPLES_PER_SHARD source.max_examples_per_shard (none)
    CURATION_EXECUTOR               the executor of `defs` (see `executor_from_env`): multiprocess
                                    (Dagster's default), in_process, or k8s (a Kubernetes Job per
                                    step; needs the `k8s` extra)
    CURATION_K8S_GPUS               under k8s, nvidia.com/gpu limit of each GPU_STEPS pod (1; 0: none)

`curate run` and `curate backfill` build their own jobs and ignore CURATION_EXECUTOR.
"""

import os
from collections.abc import Mapping

from dagster import Definitions, ExecutorDefinition, JobDefinition, define_asset_job, in_process_executor

from resources import ComputeDevice, CurationStore, ExampleSource, SentenceEmbedder
from resources.drift_policy import DriftPolicy

from . import graph
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
TABLES_ENV = "CURATION_TABLES"
EXECUTOR_ENV = "CURATION_EXECUTOR"
K8S_GPUS_ENV = "CURATION_K8S_GPUS"
ENV_VARS = (DATABASE_ENV, *SOURCE_ENV, EXECUTOR_ENV, K8S_GPUS_ENV)
EXECUTORS = ("multiprocess", "in_process", "k8s")
# The steps that use the compute device or the embedder: under k8s each gets its own pod with a GPU.
GPU_STEPS = graph.accelerated_ops()

# Every asset partitioned by shard: the only ones a per-shard backfill may select.
PARTITIONED_ASSETS = graph.partitioned_ops()
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
    kwargs = {field: value for field, name in (("database_path", DATABASE_ENV), ("tables_dir", TABLES_ENV))
              if (value := _env(environ, name))}
    return CurationStore(**kwargs)


def gpu_step_k8s_config(gpus: int = 1) -> dict:
    """`per_step_k8s_config` entries giving each GPU_STEPS pod `gpus` NVIDIA GPUs (none for 0).

    The toleration lets the pods onto GPU nodes tainted `nvidia.com/gpu` (GKE, EKS and AKS taint
    GPU node pools so); it is harmless where there is no such taint.
    """
    if gpus == 0:
        return {}
    step = {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": gpus}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    }
    return {name: step for name in GPU_STEPS}


def _k8s_executor(gpus: int) -> ExecutorDefinition:
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as exc:
        raise ImportError(
            f"{EXECUTOR_ENV}=k8s needs dagster-k8s, which is not installed: "
            "pip install 'curation-assets[k8s]' (or unset CURATION_EXECUTOR)"
        ) from exc
    defaults = gpu_step_k8s_config(gpus)

    def with_gpu_steps(config: dict) -> dict:
        # A step named in the run config's per_step_k8s_config replaces its default entry whole.
        return {**config, "per_step_k8s_config": {**defaults, **config.get("per_step_k8s_config", {})}}

    # Same config schema as k8s_job_executor, so every documented key still works in run config.
    return k8s_job_executor.configured(
        with_gpu_steps, name="k8s", config_schema=k8s_job_executor.config_schema.config_type,
        description="k8s_job_executor (a Kubernetes Job per step) with a GPU for " + ", ".join(GPU_STEPS),
    )


def executor_from_env(environ: Mapping[str, str] | None = None) -> ExecutorDefinition | None:
    """The executor CURATION_EXECUTOR names; None (Dagster's default) for multiprocess or unset."""
    environ = os.environ if environ is None else environ
    name = (_env(environ, EXECUTOR_ENV) or "multiprocess").lower()
    if name == "multiprocess":
        return None
    if name == "in_process":
        return in_process_executor
    if name == "k8s":
        raw = _env(environ, K8S_GPUS_ENV) or "1"
        try:
            gpus = int(raw)
        except ValueError:
            raise ValueError(f"{K8S_GPUS_ENV}: expected a whole number, got {raw!r}") from None
        if gpus < 0:
            raise ValueError(f"{K8S_GPUS_ENV}: must be 0 or more, got {gpus}")
        return _k8s_executor(gpus)
    raise ValueError(f"{EXECUTOR_ENV}: {name!r} is not one of {', '.join(EXECUTORS)}")


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
    executor=executor_from_env(),
)
