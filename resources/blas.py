"""Point faiss's bundled OpenBLAS at this CPU's fastest safe kernels, before faiss loads it.

faiss-cpu wheels bundle their own OpenBLAS (0.3.15 in faiss-cpu 1.15.1). Its run-time CPU
detection predates some CPUs (e.g. Sapphire Rapids) and falls back to 'Prescott' (SSE3)
kernels: k-means then runs at ~10% of the machine's sgemm peak. OPENBLAS_CORETYPE overrides the
detection, but OpenBLAS reads it only once, when its library is loaded (the first `import faiss`
in a process), and naming kernels the CPU cannot run kills the process with SIGILL. So:

- read the CPU's features from numpy's run-time dispatch table (it also checks that the OS saves
  the AVX-512/AVX registers, which cpuid alone does not say);
- pick the best core type those features make safe (`openblas_coretype_for`);
- set OPENBLAS_CORETYPE only while faiss is imported, then restore os.environ, so child processes
  and other OpenBLAS copies are not forced. numpy is imported first, so its own OpenBLAS keeps
  its own detection.

A user's own OPENBLAS_CORETYPE is respected; CURATION_BLAS_TUNING=off turns all this off.
`blas_report()` says what was done (and which kernels faiss's OpenBLAS really runs) as a flat
dict that fits into Dagster metadata.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
import threading
from pathlib import Path

SWITCH = "CURATION_BLAS_TUNING"
CORETYPE_VAR = "OPENBLAS_CORETYPE"

# What OpenBLAS's SkylakeX kernels use (AVX512F/CD/BW/DQ/VL: the Skylake-server set).
_AVX512_SKX = ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL")
_AVX2_FMA = ("AVX", "AVX2", "FMA3")
_OFF_VALUES = {"off", "0", "false", "no"}

_lock = threading.Lock()
_report: dict = {}
_corename: tuple[str, str] | None = None  # (name, library path) once found


def openblas_coretype_for(features: dict[str, bool]) -> str | None:
    """The best OpenBLAS core type that `features` (numpy's names) can run; None = leave it alone.

    SkylakeX for the AVX-512 server set, Haswell for AVX2 + FMA3; anything older gains little
    over OpenBLAS's own choice, so it is not overridden.
    """
    if all(features.get(f, False) for f in _AVX512_SKX):
        return "SkylakeX"
    if all(features.get(f, False) for f in _AVX2_FMA):
        return "Haswell"
    return None


def cpu_features() -> dict[str, bool] | None:
    """numpy's run-time CPU feature table on x86-64; None where it is unavailable or another arch."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            module = __import__(name, fromlist=["__cpu_features__"])
        except ImportError:
            continue
        table = getattr(module, "__cpu_features__", None)
        if isinstance(table, dict):
            return {str(k): bool(v) for k, v in table.items()}
    return None


def _faiss_openblas_path() -> str | None:
    """The OpenBLAS library that faiss loaded: a mapped file named like OpenBLAS that lives next
    to the faiss package (faiss_cpu.libs/, faiss/.dylibs/), not numpy's or scipy's copy."""
    faiss = sys.modules.get("faiss")
    if faiss is None or not getattr(faiss, "__file__", None):
        return None
    package = Path(faiss.__file__).resolve().parent
    roots = [package, package.parent / "faiss_cpu.libs", package.parent / "faiss.libs"]

    def ours(path: str) -> bool:
        p = Path(path)
        return "openblas" in p.name.lower() and any(root == p.parent or root in p.parents for root in roots)

    try:
        with open("/proc/self/maps") as maps:
            mapped = {line.split(maxsplit=5)[-1].strip() for line in maps if "openblas" in line.lower()}
    except OSError:  # not Linux: look next to the package instead
        mapped = {str(p) for root in roots if root.is_dir() for p in root.rglob("*openblas*")}
    found = sorted(p for p in mapped if ours(p))
    return found[0] if found else None


def faiss_openblas_corename() -> tuple[str | None, str | None]:
    """(core name, library path) of the OpenBLAS faiss runs with; (None, why) when unknown.

    Opens the library with RTLD_NOLOAD, so it only reads a copy that is already loaded.
    """
    path = _faiss_openblas_path()
    if path is None:
        return None, "no OpenBLAS library of faiss's is loaded" if "faiss" in sys.modules else "faiss is not imported"
    try:
        lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 1))
        get = lib.openblas_get_corename
    except (OSError, AttributeError) as err:
        return None, f"{path}: {err}"
    get.restype = ctypes.c_char_p
    name = get()
    return (name.decode() if name else None), path


def prepare_faiss_blas() -> dict:
    """Import faiss with the best safe OPENBLAS_CORETYPE for this CPU; once per process.

    Call it before anything imports faiss (the `resources` and `curation_assets` packages do so
    on import). Returns `blas_report()`. Never raises: when nothing can be done it says why.
    """
    with _lock:
        if not _report:
            _report.update(_prepare())
    return blas_report()


def _prepare() -> dict:
    record = {"openblas_coretype_set": None, "reason": ""}
    features = None
    user = os.environ.get(CORETYPE_VAR)
    switch = os.environ.get(SWITCH, "").strip().lower()
    if "faiss" in sys.modules:
        record["reason"] = "faiss was imported before prepare_faiss_blas ran; its OpenBLAS is already loaded"
    elif user:
        record["reason"] = f"{CORETYPE_VAR}={user} was set by the user and is respected"
    elif switch in _OFF_VALUES:
        record["reason"] = f"{SWITCH}={os.environ[SWITCH]}"
    else:
        features = cpu_features()
        if features is None:
            record["reason"] = f"no CPU feature table (numpy) on this {platform.machine() or 'unknown'} machine"
        else:
            coretype = openblas_coretype_for(features)
            if coretype is None:
                record["reason"] = "the CPU has neither AVX-512 (SkylakeX set) nor AVX2+FMA3"
            else:
                record["openblas_coretype_set"] = coretype
                record["reason"] = f"chosen from the CPU's features; {CORETYPE_VAR} set only while faiss loaded"
    record["cpu_avx512_skx"] = None if features is None else all(features.get(f, False) for f in _AVX512_SKX)
    record["cpu_avx2_fma3"] = None if features is None else all(features.get(f, False) for f in _AVX2_FMA)

    coretype = record["openblas_coretype_set"]
    if "faiss" not in sys.modules:
        if coretype is not None:
            os.environ[CORETYPE_VAR] = coretype
        try:
            import faiss  # noqa: F401  (loads faiss's OpenBLAS, which reads the variable now)
        except ImportError as err:
            record["openblas_coretype_set"] = None
            record["reason"] = f"faiss could not be imported: {err}"
        finally:
            if coretype is not None:
                os.environ.pop(CORETYPE_VAR, None)  # it was unset (a user's value skips this branch)
    return record


def blas_report() -> dict:
    """What prepare_faiss_blas did, plus the core name faiss's OpenBLAS reports.

    Flat str/bool/None values, ready for Dagster metadata.
    """
    global _corename
    out = dict(_report) if _report else {"openblas_coretype_set": None, "reason": "prepare_faiss_blas has not run"}
    if _corename is None:  # fixed once the library is loaded: look it up once
        name, where = faiss_openblas_corename()
        if name is None:
            out.update(faiss_openblas_corename=None, faiss_openblas_library=None, faiss_openblas_note=where)
            return out
        _corename = (name, where)
    out.update(faiss_openblas_corename=_corename[0], faiss_openblas_library=_corename[1], faiss_openblas_note="")
    return out


@contextlib.contextmanager
def other_blas_serial():
    """Every BLAS thread pool but faiss's runs on one thread inside the block.

    Why: a pass that calls faiss (OpenMP threads on every core) and, between its calls, a small
    numpy product lets two thread pools take turns at the cores; each numpy call then waits for
    faiss's spinning threads and faiss's for numpy's. On 2 cores a (8192 x 384) @ (384 x 10)
    probe product after each assignment batch slowed the pass by ~3.3 s per million rows that
    way, and cost ~0.5 s serial (measured on the 1M store of benchmarks/scale.py). Products that
    small gain nothing from more threads."""
    from threadpoolctl import ThreadpoolController

    faiss_lib = _faiss_openblas_path()
    faiss_lib = os.path.realpath(faiss_lib) if faiss_lib else None
    controller = ThreadpoolController()
    others = [lib.filepath for lib in controller.lib_controllers
              if lib.user_api == "blas" and os.path.realpath(lib.filepath) != faiss_lib]
    if not others:
        yield
        return
    with controller.select(filepath=others).limit(limits=1):
        yield
