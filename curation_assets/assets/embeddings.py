
import time

import numpy as np
from dagster import AssetExecutionContext, MaterializeResult, asset

from resources.embedder import SentenceEmbedder
from resources.storage import CurationStore

from .. import lineage
from ..algorithms.validation import as_embedding_matrix
from ..arrays import embedding_matrix, embedding_table
from ..partitions import shards
from ..plots import histogram
from ..progress import Progress


PROGRESS_CHUNK = 2048  # texts per encode call: a progress line at most every few seconds


def encode_with_progress(embedder: SentenceEmbedder, texts: list[str], label: str, log) -> np.ndarray:
    """Encode in chunks so the run's log says how far it is, at what rate, and when it ends."""
    progress = Progress(len(texts), label, log, unit="texts")
    parts = []
    for start in range(0, len(texts), PROGRESS_CHUNK):
        chunk = texts[start:start + PROGRESS_CHUNK]
        parts.append(embedder.encode(chunk))
        progress.update(len(chunk))
    return np.concatenate(parts) if parts else embedder.encode([])


@asset(
    partitions_def=shards,
    deps=["raw_examples"],
    group_name="curation",
    kinds={"torch", "parquet"},
    pool="accelerator",  # GPU steps can be capped per GPU: see resources/compute_device.py
    description="One vector per example: the embedder's output, or the validated precomputed vectors.",
)
def embeddings(context: AssetExecutionContext, embedder: SentenceEmbedder, store: CurationStore) -> MaterializeResult:
    for shard in context.partition_keys:  # one shard, or a range of them in one run
        context.add_asset_metadata(_embed_shard(context, embedder, store, shard), partition_key=shard)
    return MaterializeResult()


def _embed_shard(context: AssetExecutionContext, embedder: SentenceEmbedder, store: CurationStore, shard: str) -> dict:
    # Read only what this shard needs: its vectors when the source carries them, else its texts.
    stored = store.schema("raw_examples", shard).names
    raw = store.read("raw_examples", [shard], columns=["example_id", "embedding" if "embedding" in stored else "text"])
    precomputed = "embedding" in raw.column_names and raw.column("embedding").null_count == 0
    if "embedding" in raw.column_names and not precomputed:  # some rows lack a vector: embed every text
        raw = store.read("raw_examples", [shard], columns=["example_id", "text"])
    provenance = lineage.expected(store, "embeddings", shard, [shard], None,
                                  embedder=lineage.embedder_identity(embedder, precomputed), run=context.run.run_id)
    start = time.perf_counter()
    if precomputed:
        vectors = embedding_matrix(raw.column("embedding"))
        model, device = "precomputed", "none"
        precision_meta = {}
    else:
        texts = raw.column("text").to_pylist()
        vectors = encode_with_progress(embedder, texts, f"embeddings [{shard}]", context.log.info)
        model, device = embedder.model, embedder.device
        report = embedder.precision_report()
        precision_meta = {"precision": str(report["precision"]), "precision_requested": report["requested"],
                          "precision_min_cosine_to_float32": report["min_cosine"], **embedder.runtime_report()}
    seconds = time.perf_counter() - start
    vectors = as_embedding_matrix(vectors, f"embeddings of shard {shard!r}")
    if vectors.shape[0] != raw.num_rows:
        raise RuntimeError(f"embeddings: {vectors.shape[0]} vectors for {raw.num_rows} examples in shard {shard!r}")
    table = embedding_table(raw.column("example_id"), vectors)
    # Float data barely compresses; uncompressed Parquet reads and writes near disk speed.
    store.write("embeddings", table, shard, compression="none", provenance=provenance)
    norms = np.linalg.norm(vectors, axis=1)
    return {
        "dagster/row_count": raw.num_rows,
        "dimension": int(vectors.shape[1]),
        "model": model,
        "device": device,
        "normalized": bool(embedder.normalize) if model != "precomputed" else False,
        "seconds": round(seconds, 3),
        "examples_per_second": round(raw.num_rows / max(seconds, 1e-9), 1),
        **{k: v for k, v in precision_meta.items() if v is not None},
        "norms": histogram(norms, f"embedding norms, shard {shard}", "L2 norm"),
    }
