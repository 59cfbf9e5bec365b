"""CURATION_EXECUTOR=k8s: the executor, the run config shipped in deploy/, the Helm values.

No cluster here: the executor config is checked against dagster-k8s's own config schema, and the
step pods' Job objects are built with dagster-k8s's own functions, the way its step handler does.
"""

import importlib
from pathlib import Path

import pytest
import yaml

pytest.importorskip("dagster_k8s", reason="dagster-k8s not installed (pip install '.[k8s]')")

from dagster import DagsterInvalidConfigError, validate_run_config  # noqa: E402
from dagster_k8s.container_context import K8sContainerContext  # noqa: E402
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job  # noqa: E402
from kubernetes.client import ApiClient  # noqa: E402

from curation_assets import definitions  # noqa: E402

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RUN_CONFIG = yaml.safe_load((DEPLOY / "k8s" / "executor.yaml").read_text())
GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def k8s_defs():
    """curation_assets.definitions re-imported under CURATION_EXECUTOR=k8s, restored afterwards."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CURATION_EXECUTOR", "k8s")
    mp.delenv("CURATION_K8S_GPUS", raising=False)
    try:
        yield importlib.reload(definitions).defs
    finally:
        mp.undo()
        importlib.reload(definitions)


def _executor_config(job, run_config) -> dict:
    return validate_run_config(job, run_config)["execution"]["k8s"]


def _step_container(executor_config: dict, step: str):
    """The container of `step`'s pod, merged as K8sStepHandler does (executor, then per step)."""
    context = K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_config.get("step_k8s_config", {}))
    ).merge(K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_config["per_step_k8s_config"].get(step, {}))
    ))
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="registry/curation-assets:test", dagster_home="/opt/dagster/dagster_home"),
        args=["dagster", "api", "execute_step"], job_name=f"dagster-step-{step.replace('_', '-')}",
        user_defined_k8s_config=context.run_k8s_config,
    )
    pod = ApiClient().sanitize_for_serialization(job)["spec"]["template"]["spec"]  # as sent to the API
    return pod["containers"][0], pod


def test_executor_follows_the_environment():
    assert definitions.executor_from_env({}) is None  # Dagster's default (multiprocess)
    assert definitions.executor_from_env({"CURATION_EXECUTOR": "multiprocess"}) is None
    assert definitions.executor_from_env({"CURATION_EXECUTOR": "in_process"}).name == "in_process"
    assert definitions.executor_from_env({"CURATION_EXECUTOR": "k8s"}).name == "k8s"
    with pytest.raises(ValueError, match="CURATION_EXECUTOR: 'bogus' is not one of multiprocess, in_process, k8s"):
        definitions.executor_from_env({"CURATION_EXECUTOR": "bogus"})
    with pytest.raises(ValueError, match="CURATION_K8S_GPUS"):
        definitions.executor_from_env({"CURATION_EXECUTOR": "k8s", "CURATION_K8S_GPUS": "one"})


def test_definitions_pick_up_the_k8s_executor(k8s_defs):
    backfill = k8s_defs.resolve_job_def(definitions.BACKFILL_JOB)
    everything = k8s_defs.resolve_implicit_global_asset_job_def()
    assert backfill.executor_def.name == everything.executor_def.name == "k8s"
    # per_step_k8s_config is keyed by op name: the GPU steps are ops of these jobs
    assert set(definitions.GPU_STEPS) <= {node.name for node in everything.graph.nodes}
    assert {"embeddings", "cluster_assignments"} <= {node.name for node in backfill.graph.nodes}


def test_shipped_executor_config_is_valid_and_puts_gpus_on_the_heavy_steps(k8s_defs):
    job = k8s_defs.resolve_job_def(definitions.BACKFILL_JOB)
    config = _executor_config(job, RUN_CONFIG)
    assert config["max_concurrent"] == RUN_CONFIG["execution"]["config"]["max_concurrent"]
    for step in ("embeddings", "cluster_assignments"):  # the backfill job's GPU steps
        container, pod = _step_container(config, step)
        assert container["resources"]["limits"][GPU] == "1", step
        assert container["resources"]["limits"]["memory"], step  # step_k8s_config deep-merged in
        assert any(t["key"] == GPU for t in pod["tolerations"]), step
    container, _ = _step_container(config, "sensitivities")
    assert GPU not in container["resources"]["limits"]
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}


def test_gpu_defaults_without_run_config_and_overridable(k8s_defs):
    job = k8s_defs.resolve_implicit_global_asset_job_def()
    config = _executor_config(job, {})
    for step in definitions.GPU_STEPS:
        assert _step_container(config, step)[0]["resources"]["limits"][GPU] == "1", step
    assert not _step_container(config, "raw_examples")[0].get("resources", {}).get("limits")
    # a step named in run config replaces its default entry
    config = _executor_config(job, {"execution": {"config": {"per_step_k8s_config": {"embeddings": {}}}}})
    assert not _step_container(config, "embeddings")[0].get("resources", {}).get("limits")
    assert _step_container(config, "centroids")[0]["resources"]["limits"][GPU] == "1"
    assert definitions.gpu_step_k8s_config(0) == {}


def test_invalid_executor_config_fails(k8s_defs):
    job = k8s_defs.resolve_job_def(definitions.BACKFILL_JOB)
    bad = {"execution": {"config": {**RUN_CONFIG["execution"]["config"], "max_concurent": 4}}}
    with pytest.raises(DagsterInvalidConfigError, match="max_concurent"):
        validate_run_config(job, bad)
    bad = {"execution": {"config": {"step_k8s_config": {"container_confg": {}}}}}
    with pytest.raises(DagsterInvalidConfigError, match="container_confg"):
        validate_run_config(job, bad)


def test_helm_values_name_the_image_module_and_executor():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["image"]["repository"].endswith("/curation-assets") and deployment["image"]["tag"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "curation_assets.definitions"]
    assert deployment["env"]["CURATION_EXECUTOR"] == "k8s"
    assert all(isinstance(v, str) for v in deployment["env"].values())  # ConfigMap values
    mount = {m["name"]: m["mountPath"] for m in deployment["volumeMounts"]}
    claim = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]}
    assert deployment["env"]["CURATION_DATABASE"].startswith(mount["curation-data"] + "/")
    pvc = yaml.safe_load((DEPLOY / "k8s" / "pvc.yaml").read_text())
    assert claim["curation-data"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    assert coordinator["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] == 4
    assert "curation_assets.definitions" in (DEPLOY / "Dockerfile").read_text()
