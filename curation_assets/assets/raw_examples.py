
import collections

import pyarrow.compute as pc
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from resources.data_source import ExampleSource
from resources.storage import CurationStore

from .. import lineage
from ..partitions import shards
from ..plots import histogram, markdown_table
from ..shard_admission import (ADMITTED_TAG, Admission, current_shards, raw_provenance, split_vectors,
                               take_staged)


@asset(
    partitions_def=shards,
    group_name="curation",
    kinds={"duckdb", "parquet"},
    description="Examples of one shard: a stable id, the text, an optional label, and the shard (precomputed "
                "vectors are stored once, in embeddings).",
)
def raw_examples(context: AssetExecutionContext, source: ExampleSource, store: CurationStore) -> MaterializeResult:
    for shard in context.partition_keys:  # one shard, or a range of them in one run
        context.add_asset_metadata(_load_shard(context, source, store, shard), partition_key=shard)
    return MaterializeResult()


def _load_shard(context: AssetExecutionContext, source: ExampleSource, store: CurationStore, shard: str) -> dict:
    admitted = context.run.tags.get(ADMITTED_TAG) == "1"  # a run the pipeline planned was admitted as a whole
    if admitted and take_staged(source, store, shard):  # admit() loaded, checked and staged it: moved in place
        table = store.read("raw_examples", [shard], columns=["example_id", "text", "label"])
    else:
        table = source.load_shard(shard)  # validates ids, texts, labels, vectors; raises before any write
        # ... and against the other registered shards whose stored rows are current (stale ones are
        # reloaded, and checked with this one, by the run that planned them: shard_admission.admit)
        if not admitted:
            others = [k for k in context.instance.get_dynamic_partitions(shards.name) if k != shard]
            with Admission(source, store, current_shards(source, store, others)) as admission:
                admission.check(shard, table)
        provenance = raw_provenance(source, shard, table)
        table, _ = split_vectors(table)  # precomputed vectors are stored once, by `embeddings`
        store.write("raw_examples", table, shard, provenance=provenance)
    precomputed = lineage.shard_has_precomputed(store, shard)

    labels = table.column("label")
    counts = collections.Counter(x for x in labels.to_pylist() if x is not None)
    lengths = pc.utf8_length(pc.fill_null(table.column("text"), "")).to_numpy(zero_copy_only=False)
    meta = {
        "dagster/row_count": table.num_rows,
        "source": source.kind,
        "labelled_rows": table.num_rows - labels.null_count,
        "precomputed_embeddings": precomputed,
        "mean_text_chars": float(lengths.mean()),
        "labels": MetadataValue.md(markdown_table(["label", "count"], sorted(counts.items()))) if counts else "none",
        "text_length": histogram(lengths, f"text length, shard {shard}", "characters"),
        "preview": MetadataValue.md(
            markdown_table(
                ["example_id", "label", "text"],
                [[r["example_id"], r["label"], (r["text"] or "")[:80].replace("|", "/").replace("\n", " ")]
                 for r in table.slice(0, 5).select(["example_id", "label", "text"]).to_pylist()],
            )
        ),
    }
    return meta
