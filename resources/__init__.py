"""Dagster resources: every piece of I/O and hardware choice lives here."""

from .compute_device import ComputeDevice
from .data_source import ExampleSource
from .embedder import SentenceEmbedder
from .storage import CurationStore

__all__ = ["ComputeDevice", "CurationStore", "ExampleSource", "SentenceEmbedder"]
