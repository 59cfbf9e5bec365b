"""faiss's bundled OpenBLAS gets the fastest safe core type, only when nobody said otherwise.

OpenBLAS reads OPENBLAS_CORETYPE once, when faiss first loads it, so every check of the tuning
runs in a fresh interpreter (this test process imported faiss long ago, through conftest).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resources.blas import blas_report, cpu_features, openblas_coretype_for, prepare_faiss_blas

ROOT = Path(__file__).resolve().parents[1]
SKX = {f: True for f in ("SSE3", "AVX", "FMA3", "AVX2", "AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL")}

# Run in a fresh interpreter: import the project, then faiss, and report what faiss runs with.
_PROBE = """
import json, os
import curation_assets
import faiss
from resources.blas import blas_report
r = blas_report()
r["env_after"] = os.environ.get("OPENBLAS_CORETYPE")
print(json.dumps(r))
"""


def _env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "CURATION_BLAS_TUNING")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


def _run(code: str, **env) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _probe(**env) -> dict:
    return json.loads(_run(_PROBE, **env))


def _expected_coretype():
    features = cpu_features()
    return None if features is None else openblas_coretype_for(features)


# (a) the decision ---------------------------------------------------------------------------

def test_avx512_server_set_gets_skylakex():
    assert openblas_coretype_for(SKX) == "SkylakeX"
    assert openblas_coretype_for({**SKX, "AVX512_SPR": True, "AVX512FP16": True}) == "SkylakeX"


def test_avx2_fma_without_full_avx512_gets_haswell():
    avx2 = {"SSE3": True, "AVX": True, "FMA3": True, "AVX2": True}
    assert openblas_coretype_for(avx2) == "Haswell"
    # AVX512F alone (Knights Landing has no BW/DQ/VL) must not get SkylakeX kernels.
    assert openblas_coretype_for({**avx2, "AVX512F": True, "AVX512CD": True, "AVX512ER": True}) == "Haswell"
    assert openblas_coretype_for({**SKX, "AVX512BW": False}) == "Haswell"


def test_old_or_non_x86_cpus_are_left_alone():
    assert openblas_coretype_for({}) is None
    assert openblas_coretype_for({"SSE3": True, "SSE41": True, "SSE42": True, "AVX": True}) is None
    assert openblas_coretype_for({"AVX2": True}) is None  # no FMA3 (and no AVX): not Haswell-safe
    assert openblas_coretype_for({"NEON": True, "ASIMD": True, "SVE": True}) is None  # aarch64 names


def test_prepare_is_idempotent_and_reports_flat_values():
    first = prepare_faiss_blas()
    assert prepare_faiss_blas() == first == blas_report()
    assert all(v is None or isinstance(v, (str, bool)) for v in first.values())


# (b) the tuning in a fresh interpreter ---------------------------------------------------------

def test_project_import_tunes_faiss_and_restores_the_environment():
    expected = _expected_coretype()
    if expected is None:
        pytest.skip("this CPU has neither AVX-512 nor AVX2+FMA3: nothing to tune")
    r = _probe()
    assert r["openblas_coretype_set"] == expected
    assert r["faiss_openblas_corename"] is not None, r["faiss_openblas_note"]
    assert r["faiss_openblas_corename"].lower() == expected.lower()
    assert r["env_after"] is None  # child processes are not forced


def test_avx512_machine_does_not_run_prescott_kernels():
    if _expected_coretype() != "SkylakeX":
        pytest.skip("this CPU lacks the AVX-512 server set")
    assert _probe()["faiss_openblas_corename"] not in (None, "Prescott")


def test_user_coretype_is_respected():
    if cpu_features() is None:
        pytest.skip("not x86-64")
    r = _probe(OPENBLAS_CORETYPE="Prescott")  # SSE3: runs on any x86-64 that faiss supports
    assert r["openblas_coretype_set"] is None
    assert "user" in r["reason"]
    assert r["faiss_openblas_corename"] == "Prescott"
    assert r["env_after"] == "Prescott"


def test_switch_off_leaves_openblas_detection_alone():
    plain = _run("import faiss\nfrom resources.blas import faiss_openblas_corename\n"
                 "print(faiss_openblas_corename()[0])")
    r = _probe(CURATION_BLAS_TUNING="off")
    assert r["openblas_coretype_set"] is None
    assert "CURATION_BLAS_TUNING" in r["reason"]
    assert r["faiss_openblas_corename"] == plain
    assert r["env_after"] is None


def test_faiss_imported_first_is_reported_not_tuned():
    r = json.loads(_run("import faiss, json\nimport curation_assets\nfrom resources.blas import blas_report\n"
                        "print(json.dumps(blas_report()))"))
    assert r["openblas_coretype_set"] is None
    assert "already loaded" in r["reason"]


# (c) same k-means with and without the tuning ------------------------------------------------

_FIT = """
import sys
import numpy as np
from curation_assets.algorithms.kmeans import assign_to_centroids, fit_kmeans, kmeans_cost
from resources.blas import blas_report
out = sys.argv[1]
rng = np.random.default_rng(7)
centers = rng.normal(scale=3.0, size=(50, 64))
x = (centers[rng.integers(50, size=20000)] + rng.normal(size=(20000, 64))).astype(np.float32)
fit = fit_kmeans(x, 50, seed=3, n_iter=20)
labels, sq = assign_to_centroids(x, fit.centroids)
np.save(out + "_centroids.npy", fit.centroids)
np.save(out + "_labels.npy", labels)
np.save(out + "_cost.npy", np.array([kmeans_cost(sq)]))
print(blas_report()["faiss_openblas_corename"])
"""


@pytest.mark.parametrize("other", ["off", "prescott"])
def test_tuned_and_untuned_kmeans_agree(tmp_path, other):
    """`off` is OpenBLAS's own detection; `prescott` the SSE3 fallback it takes on CPUs it does not
    know (the case the tuning is for), forced so that the kernels really differ on any machine."""
    if other == "prescott" and cpu_features() is None:
        pytest.skip("not x86-64")
    envs = {"tuned": {}, "off": {"CURATION_BLAS_TUNING": "off"}, "prescott": {"OPENBLAS_CORETYPE": "Prescott"}}
    cores = {}
    for name in ("tuned", other):
        env = envs[name]
        done = subprocess.run([sys.executable, "-c", _FIT, str(tmp_path / name)], cwd=ROOT, env=_env(**env),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        cores[name] = done.stdout.strip()
    load = lambda name, what: np.load(tmp_path / f"{name}_{what}.npy")  # noqa: E731
    agreement = np.mean(load("tuned", "labels") == load(other, "labels"))
    cost_t, cost_o = float(load("tuned", "cost")[0]), float(load(other, "cost")[0])
    assert agreement >= 0.999, (agreement, cores)
    assert abs(cost_t - cost_o) <= 1e-4 * cost_o, (cost_t, cost_o, cores)
    if other == "prescott":
        assert cores["prescott"] == "Prescott"


def test_other_blas_pools_run_serially_beside_faiss_and_are_restored():
    from threadpoolctl import threadpool_info

    from resources import ComputeDevice
    from resources.blas import _faiss_openblas_path

    faiss_lib = os.path.realpath(_faiss_openblas_path())
    np.ones((64, 64)) @ np.ones((64, 64))  # numpy's BLAS is loaded
    blas = lambda: {os.path.realpath(i["filepath"]): i["num_threads"]  # noqa: E731
                    for i in threadpool_info() if i["user_api"] == "blas"}
    before = blas()
    assert faiss_lib in before and len(before) >= 2, before
    with ComputeDevice().faiss_owns_cores():
        inside = blas()
    assert inside[faiss_lib] == before[faiss_lib]  # faiss keeps every core it had
    assert all(n == 1 for lib, n in inside.items() if lib != faiss_lib), inside
    assert blas() == before
