"""Shared fixtures. Nothing here fakes DuckDB, faiss, torch or Dagster: tests run the real parts."""

import hashlib
import os
import tempfile
from pathlib import Path

# Keep caches out of the user's home before matplotlib or transformers are imported.
_CACHE = Path(tempfile.mkdtemp(prefix="curation-test-cache-"))
os.environ.setdefault("MPLCONFIGDIR", str(_CACHE / "matplotlib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from dagster import DagsterInstance  # noqa: E402

from curation_assets.definitions import default_resources  # noqa: E402
from resources import CurationStore, ExampleSource  # noqa: E402


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def store(tmp_path) -> CurationStore:
    return CurationStore(database_path=str(tmp_path / "db" / "curation.duckdb"))


def make_resources(store: CurationStore, source: ExampleSource | None = None, **kw) -> dict:
    return default_resources(source=source or ExampleSource(), store=store, **kw)


def small_bbc(per_shard: int = 20, num_shards: int = 2) -> ExampleSource:
    """A small real slice of the bundled BBC News corpus."""
    return ExampleSource(num_shards=num_shards, max_examples_per_shard=per_shard)


def snapshot(root: Path) -> dict[str, str]:
    """Content hash of every file under `root` (the stored state)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }
