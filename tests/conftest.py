"""Shared fixtures. Nothing here fakes DuckDB, faiss, torch or Dagster: tests run the real parts."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

# Keep caches out of the user's home before matplotlib or transformers are imported.
_CACHE = Path(tempfile.mkdtemp(prefix="curation-test-cache-"))
os.environ.setdefault("MPLCONFIGDIR", str(_CACHE / "matplotlib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv  # noqa: E402,F401  (registers pa.csv)
import pyarrow.parquet as pq  # noqa: E402
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


D = 8


def clustered_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, D)) * 4
    return (centers[rng.integers(0, 3, n)] + rng.normal(size=(n, D))).astype(np.float32)


def write_examples(path, ids, vecs=None, texts=True, labels=True, fmt="parquet"):
    cols = {"id": ids}
    if texts:
        cols["text"] = [f"text of {i}" for i in ids]
    if labels:
        cols["label"] = [("a", "b", "c")[j % 3] for j in range(len(ids))]
    if vecs is not None:
        cols["vec"] = [list(map(float, v)) for v in vecs]
    if fmt == "parquet":
        pq.write_table(pa.table(cols), path)
    elif fmt == "csv":
        pa.csv.write_csv(pa.table({k: v for k, v in cols.items() if k != "vec"}), path)
    else:
        with open(path, "w") as fh:
            for row in range(len(ids)):
                fh.write(json.dumps({k: v[row] for k, v in cols.items()}) + "\n")
