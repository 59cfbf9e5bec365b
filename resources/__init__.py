"""Dagster resources: every piece of I/O and hardware choice lives here.

faiss's bundled OpenBLAS is tuned first (resources.blas), before anything can import faiss.
The resource classes are imported on first use, so that `curation_assets.algorithms` (which
imports this package for the tuning) does not pull in Dagster.
"""

from .blas import prepare_faiss_blas as _prepare_faiss_blas

_prepare_faiss_blas()

from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from .compute_device import ComputeDevice
    from .data_source import ExampleSource
    from .embedder import SentenceEmbedder
    from .storage import CurationStore

__all__ = ["ComputeDevice", "CurationStore", "ExampleSource", "SentenceEmbedder"]

_HOMES = {
    "ComputeDevice": ".compute_device",
    "CurationStore": ".storage",
    "ExampleSource": ".data_source",
    "SentenceEmbedder": ".embedder",
}


def __getattr__(name: str):
    if name in _HOMES:
        from importlib import import_module

        value = getattr(import_module(_HOMES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
