"""The store holds exactly the source: a shard enters only after it is checked against the store,
and leaves every view when it leaves the source.

Checking a shard alone (ids, texts, vectors: `ExampleSource.load_shard`) is not enough: a file
whose vectors have another dimension than the stored ones, or whose ids another shard already
holds, is valid on its own and poisons every global step once written. So before a run writes
anything, every shard it will (re)load is loaded, validated and compared with the shards that stay
as they are and with each other; only then are shards registered, retired and written.
"""

import uuid
from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow as pa

from resources.content_hash import content_hash
from resources.data_source import ExampleSource
from resources.storage import CurationStore

from . import lineage
from .arrays import embedding_matrix, embedding_table
from .stored_inputs import prefetched

RAW = "raw_examples"
EMBEDDINGS = "embeddings"
# Run tag of the runs `pipeline.run_pipeline` launches after `admit` checked every shard together.
ADMITTED_TAG = "curation/admitted"


def raw_provenance(source: ExampleSource, shard: str, table: pa.Table, *,
                   streamed: tuple[pa.DataType, str] | None = None) -> dict:
    """What raw_examples records of a loaded shard: its source file, the hash of everything loaded
    (the vectors too, though they are stored in `embeddings` only) and the vectors' type
    (`streamed`: the type and hash load_shard_streamed took as it read them)."""
    mine, content = streamed if streamed is not None else (vector_type(table.schema), content_hash(table))
    return {"config": None, "inputs": {}, "source": source.shard_fingerprint(shard),
            "content": content, "precomputed": mine is not None, "vectors": describe_vectors(mine)}


def vector_type(schema: pa.Schema) -> pa.DataType | None:
    """The type of a shard's precomputed vectors (None when the model embeds its text)."""
    return schema.field("embedding").type if "embedding" in schema.names else None


def stored_vectors(store: CurationStore, shard: str) -> str:
    """A stored shard's vectors as raw_examples described them (stores made before the vectors
    moved out of raw_examples keep them there: described from its schema)."""
    prov = store.provenance(RAW, shard) or {}
    return prov["vectors"] if "vectors" in prov else describe_vectors(vector_type(store.schema(RAW, shard)))


def split_vectors(table: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    """(the rows raw_examples stores, the (example_id, embedding) table `embeddings` stores, or None
    when the source has no vectors): precomputed vectors are stored once, in `embeddings`."""
    if "embedding" not in table.column_names:
        return table, None
    vectors = embedding_table(table.column("example_id"), embedding_matrix(table.column("embedding")))
    return table.drop_columns(["embedding"]), vectors


def describe_vectors(t: pa.DataType | None) -> str:
    if t is None:
        return "no precomputed vectors (text for the model)"
    size = getattr(t, "list_size", None)
    return f"{size}-dimensional {t.value_type} vectors" if size else f"vectors of type {t}"


class Admission:
    """Shards checked so far in one run: their vector type and ids, against the stored ones that stay."""

    def __init__(self, source: ExampleSource, store: CurationStore, staying: list[str]):
        self.source, self.store = source, store
        self.staying = [k for k in staying if store.exists(RAW, k)]
        self.types: dict[str, str] = {k: stored_vectors(store, k) for k in self.staying}
        # Every id seen so far, with its shard: each shard is checked in one join, not one per other shard.
        self.seen = duckdb.connect()
        self.seen.execute("CREATE TABLE seen (example_id VARCHAR, shard VARCHAR)")
        self.stored_loaded = False

    def check(self, shard: str, table: pa.Table, vectors: pa.DataType | None = None) -> None:
        """Raise a one-line ValueError if `table` (shard `shard`, validated alone; `vectors`: the
        type of its vectors when they were read apart) does not fit the store; nothing is written
        either way."""
        mine = describe_vectors(vectors or vector_type(table.schema))
        others = {k: t for k, t in self.types.items() if k != shard}
        clash = sorted(k for k, t in others.items() if t != mine)
        if clash:
            theirs = others[clash[0]]
            setting = f"source.embedding_column={self.source.embedding_column!r}"
            raise ValueError(
                f"{setting}: shard {shard!r} has {mine}, but shard(s) {clash[:5]}"
                f"{' in the store' if clash[0] in self.staying else ''} have {theirs}; give every file vectors of one dimension, or curate it into another "
                "store (--database)")
        self.seen.register("ids", pa.table({"example_id": table.column("example_id").combine_chunks()}))
        dups = self._duplicates(shard)
        if dups:
            raise ValueError(
                f"source.id_column={self.source.id_column!r}: ids in shard {shard!r} already exist in other "
                "shards: " + ", ".join(f"{i!r} (shard {s})" for i, s in dups)
                + "; ids must be unique across all files of the source")
        self.types[shard] = mine
        self.seen.execute("DELETE FROM seen WHERE shard = ?", [shard])
        self.seen.execute("INSERT INTO seen SELECT example_id, ? FROM ids", [shard])

    def _duplicates(self, shard: str) -> list[tuple[str, str]]:
        """Up to five ids of the registered `ids` that another shard already holds, with that shard."""
        if not self.stored_loaded:  # the ids of the stored shards that stay, read once
            for key in self.staying:
                self.seen.register("stored", self.store.read(RAW, [key], columns=["example_id"]))
                self.seen.execute("INSERT INTO seen SELECT example_id, ? FROM stored", [key])
            self.seen.unregister("stored")
            self.stored_loaded = True
        return self.seen.execute("SELECT example_id, shard FROM ids JOIN seen USING (example_id) "
                                 "WHERE shard <> ? ORDER BY 1, 2 LIMIT 5", [shard]).fetchall()

    def close(self) -> None:
        self.seen.close()

    def __enter__(self) -> "Admission":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def admit(source: ExampleSource, store: CurationStore, loading: list[str], shards: list[str], *,
          stage: bool = False) -> dict[str, int]:
    """Load and validate every shard in `loading` and check each against the store's other
    current shards (`shards` minus `loading`) and against each other, before anything is written.
    Holds one shard's rows at a time (and every shard's ids, in DuckDB). With `stage`, each checked
    shard is staged (`CurationStore.stage`, outside every view) for the admitted raw_examples run
    to promote instead of loading it again, and its precomputed vectors for the embeddings run;
    a failure leaves nothing staged. Returns the number of rows of each shard in `loading`."""
    stage = stage and store.stages
    rows_of = {}
    if stage:
        store.clear_staged()
    try:
        with Admission(source, store, [k for k in shards if k not in loading]) as admission:
            def load(key):  # in a thread, the next shard's while this one is checked and staged
                if not stage:
                    return source.load_shard(key), None, None, None
                before = source.vector_reference(key)
                # Vectors the store will read where they are: checked and hashed, never held (data_source.py).
                streamed = source.load_shard_streamed(key) if before is not None else None
                if streamed is not None and source.vector_reference(key) == before:
                    rows, mine, content = streamed
                    return rows, raw_provenance(source, key, rows, streamed=(mine, content)), before, mine
                table = source.load_shard(key)
                # The file validated is the file referred to only if it did not change meanwhile.
                reference = before if before is not None and source.vector_reference(key) == before else None
                return table, raw_provenance(source, key, table), reference, None

            for key, (table, prov, reference, streamed_type) in prefetched(loading, load):
                admission.check(key, table, streamed_type)
                rows_of[key] = table.num_rows
                if stage:
                    if streamed_type is not None:  # referenced: only the pointer's schema is needed
                        rows, vectors = table, embedding_table(table.column("example_id").slice(0, 0),
                                                               np.zeros((0, streamed_type.list_size), np.float32))
                    else:
                        rows, vectors = split_vectors(table)
                    store.stage(RAW, rows, key, provenance=prov)
                    if vectors is not None:  # staged here, once: the embeddings run promotes them
                        vector_prov = lineage.precomputed_embeddings(prov, run=f"admitted-{uuid.uuid4()}")
                        if reference is not None:  # read where they are, not copied
                            store.stage_reference(EMBEDDINGS, key, vectors.schema, {**reference, "rows": table.num_rows},
                                                  provenance=vector_prov)
                        else:
                            store.stage(EMBEDDINGS, vectors, key, compression="none", provenance=vector_prov)
    except BaseException:
        if stage:
            store.clear_staged()
        raise
    return rows_of


def take_staged(source: ExampleSource, store: CurationStore, shard: str) -> bool:
    """Promote the shard `admit` staged, if it is still what the source holds; False if none is."""
    staged = store.staged_provenance(RAW, shard) if store.stages else None
    fingerprint = source.shard_fingerprint(shard)
    if staged is None or fingerprint is None or staged.get("source") != fingerprint:
        return False
    store.promote(RAW, shard)
    return True


def take_staged_vectors(store: CurationStore, shard: str, want: dict) -> bool:
    """Promote the precomputed vectors `admit` staged for the shard if they are what `embeddings`
    would write now (`want`, its expected provenance); False if none are."""
    if not store.stages or not lineage.same_but_run(store.staged_provenance(EMBEDDINGS, shard), want):
        return False
    store.promote(EMBEDDINGS, shard)
    return True


def current_shards(source: ExampleSource, store: CurationStore, shards: list[str]) -> list[str]:
    """The shards among `shards` whose stored raw rows still match the source (no reload due)."""
    out = []
    for key in shards:
        have = lineage.stored(store, RAW, key)
        fingerprint = source.shard_fingerprint(key)
        if have is not None and fingerprint is not None and have.get("source") == fingerprint:
            out.append(key)
    return out


def retire_removed(store: CurationStore, shards: list[str]) -> dict[str, list[str]]:
    """Move every stored per-shard file whose shard is not in `shards` to `.retired/<UTC time>/`:
    it leaves every view, and the global steps see exactly the source. Returns {shard: [assets]}."""
    keep = set(shards)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    retired: dict[str, list[str]] = {}
    for name in store.asset_names():
        for key in store.partitions(name):
            if key not in keep:
                store.retire(name, key, stamp)
                retired.setdefault(key, []).append(name)
    return retired
