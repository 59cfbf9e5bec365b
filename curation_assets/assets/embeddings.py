
import time

import numpy as np
from dagster import AssetExecutionContext, MaterializeResult, asset

from resources.content_hash import content_hash, whole_table_hash
from resources.data_source import ExampleSource
from resources.embedder import SentenceEmbedder
from resources.storage import CurationStore

from .. import lineage
from ..algorithms.validation import as_embedding_matrix
from ..arrays import embedding_matrix, embedding_table
from ..partitions import shards
from ..plots import histogram
from ..progress import Progress
from ..shard_admission import take_staged_vectors


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
def embeddings(context: AssetExecutionContext, embedder: SentenceEmbedder, source: ExampleSource,
               store: CurationStore) -> MaterializeResult:
    for shard in context.partition_keys:  # one shard, or a range of them in one run
        context.add_asset_metadata(_embed_shard(context, embedder, source, store, shard), partition_key=shard)
    return MaterializeResult()


def _embed_shard(context: AssetExecutionContext, embedder: SentenceEmbedder, source: ExampleSource,
                 store: CurationStore, shard: str) -> dict:
    precomputed = lineage.shard_has_precomputed(store, shard)
    provenance = lineage.expected(store, "embeddings", shard, [shard], None,
                                  embedder=lineage.embedder_identity(embedder, precomputed), run=context.run.run_id)
    start = time.perf_counter()
    if precomputed and take_staged_vectors(store, shard, provenance):
        # admit() checked this shard's vectors and wrote them (or a pointer to them), once: moved into place.
        dimension = store.schema("embeddings", shard).field("embedding").type.list_size
        reference = store.reference("embeddings", shard)
        return {"dagster/row_count": store.row_count("embeddings", shard), "dimension": dimension,
                "model": "precomputed", "device": "none", "normalized": False,
                "seconds": round(time.perf_counter() - start, 3), "written": "when the shard was admitted",
                "stored_as": f"a reference to {reference['path']} (not copied)" if reference else "a copy"}
    if precomputed:
        vectors = _precomputed_vectors(source, store, shard)
        model, device, precision_meta = "precomputed", "none", {}
        ids = store.read("raw_examples", [shard], columns=["example_id"]).column("example_id")
    else:
        raw = store.read("raw_examples", [shard], columns=["example_id", "text"])
        ids = raw.column("example_id")
        vectors = encode_with_progress(embedder, raw.column("text").to_pylist(), f"embeddings [{shard}]",
                                       context.log.info)
        model, device = embedder.model, embedder.device
        report = embedder.precision_report()
        precision_meta = {"precision": str(report["precision"]), "precision_requested": report["requested"],
                          "precision_min_cosine_to_float32": report["min_cosine"], **embedder.runtime_report()}
    seconds = time.perf_counter() - start
    vectors = as_embedding_matrix(vectors, f"embeddings of shard {shard!r}")
    if vectors.shape[0] != len(ids):
        raise RuntimeError(f"embeddings: {vectors.shape[0]} vectors for {len(ids)} examples in shard {shard!r}")
    # Float data barely compresses; uncompressed Parquet reads and writes near disk speed.
    store.write("embeddings", embedding_table(ids, vectors), shard, compression="none", provenance=provenance)
    norms = np.linalg.norm(vectors, axis=1)
    return {
        "dagster/row_count": len(ids),
        "dimension": int(vectors.shape[1]),
        "model": model,
        "device": device,
        "normalized": bool(embedder.normalize) if model != "precomputed" else False,
        "seconds": round(seconds, 3),
        "examples_per_second": round(len(ids) / max(seconds, 1e-9), 1),
        **{k: v for k, v in precision_meta.items() if v is not None},
        "norms": histogram(norms, f"embedding norms, shard {shard}", "L2 norm"),
    }


def _precomputed_vectors(source: ExampleSource, store: CurationStore, shard: str) -> np.ndarray:
    """The shard's precomputed vectors when admit() did not stage them: from raw_examples in stores
    made before the vectors moved out of it, else from the source, which must still hold the rows
    raw_examples loaded."""
    if "embedding" in store.schema("raw_examples", shard).names:
        return embedding_matrix(store.read("raw_examples", [shard], columns=["embedding"]).column("embedding"))
    table = source.load_shard(shard)
    loaded = (store.provenance("raw_examples", shard) or {}).get("content")
    if loaded not in (content_hash(table), whole_table_hash(table)):  # the latter: stores before fixed hash batches
        raise ValueError(f"embeddings: shard {shard!r} changed in the source since raw_examples loaded it; run the "
                         "pipeline again (it reloads the shard first)")
    return embedding_matrix(table.column("embedding"))
