"""What each stored partition was computed from, so a rerun redoes only what changed.

Every asset writes, into the footer of each Parquet file it stores, a provenance record

    {"config": <hash of the asset's config>, "inputs": {<upstream>: <token or {shard: token}>}}

plus the run that wrote it; an upstream's token is the hash of *its* provenance (so a
recomputed upstream always invalidates what was computed from it; raw examples alone are
identified by their content). The record is written together with
the data (one atomic rename), so it can never describe data that is not there. A partition is
current when its stored record equals the one it would get now; the pipeline (and the daily
schedule) recompute exactly the partitions that are not current, after their upstreams.

Global assets tagged `curation/new-shards: kept` (`centroids` and `probe`, `representative_losses`) stay
current while every shard they were fit on is unchanged, so new data is assigned to the existing
clusters instead of refitting them (drift past the configured threshold forces a refit).
"""

import hashlib
import json

from resources.storage import CurationStore

from . import graph

# The graph itself (each op's upstream ops and how it reads them, which ops are per shard, which
# keep their fit when shards are added, where each stores its provenance) is read from the asset
# definitions: see graph.py.


def digest(obj) -> str:
    return hashlib.md5(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_values(config) -> dict | None:
    if config is None:
        return None
    return config.model_dump() if hasattr(config, "model_dump") else dict(config)


def config_hash(config) -> str:
    """Hash of a Dagster Config (or plain dict): every field, defaults included."""
    return digest(config_values(config))


def embedder_identity(embedder, precomputed: bool) -> dict | str:
    """What decides the vectors (not batch size or device, which do not change them)."""
    if precomputed:
        return "precomputed"
    return {f: getattr(embedder, f, None) for f in ("model", "normalize", "max_seq_length", "precision")}


def shard_has_precomputed(store: CurationStore, shard: str) -> bool:
    prov = store.provenance("raw_examples", shard) or {}
    return bool(prov.get("precomputed"))


def stored(store: CurationStore, op: str, partition: str | None = None) -> dict | None:
    """The provenance `op` stored: its first asset's file (written last) carries it."""
    node = graph.node(op)
    return store.provenance(node.keys[0], partition, versioned=node.stored == "versioned")


def raw_token(prov: dict) -> str:
    """Raw data is identified by its content, not by where it was read from: a touched file with
    the same rows must not invalidate its embeddings."""
    return digest({key: prov.get(key) for key in ("content", "precomputed")})


def token(store: CurationStore, op: str, partition: str | None = None) -> str | None:
    prov = stored(store, op, partition)
    if prov is None:
        return None
    return raw_token(prov) if op == "raw_examples" else digest(prov)


def record(config, inputs: dict, **extra) -> dict:
    """A provenance record: the config (hash and values), the upstream tokens, and extras."""
    return {"config": config_hash(config), "config_values": config_values(config), "inputs": inputs, **extra}


def precomputed_embeddings(raw_prov: dict, run: str) -> dict:
    """The provenance `embeddings` has for a shard of precomputed vectors whose raw rows have
    `raw_prov`: known when the shard is admitted, so its vectors can be written once, then."""
    return record(None, {"raw_examples": raw_token(raw_prov)}, embedder=embedder_identity(None, True), run=run)


def same_but_run(a: dict | None, b: dict | None) -> bool:
    """Two records equal but for the run that wrote them (which is not what they were computed from)."""
    return a is not None and b is not None and {k: v for k, v in a.items() if k != "run"} == \
        {k: v for k, v in b.items() if k != "run"}


def expected(store: CurationStore, op: str, partition: str | None, keys: list[str], config,
             **extra) -> dict:
    """The provenance `op` gets when computed now from what is stored upstream."""
    inputs = {}
    for upstream, how in graph.node(op).upstream.items():
        if how == "same":
            inputs[upstream] = token(store, upstream, partition)
        elif how == "all":
            inputs[upstream] = {k: token(store, upstream, k) for k in keys}
        else:
            inputs[upstream] = token(store, upstream)
    return record(config, inputs, **extra)


def fit_shards(store: CurationStore) -> set[str]:
    """The shards the current centroids were fit on."""
    prov = stored(store, "centroids") or {}
    return set((prov.get("inputs") or {}).get("embeddings") or {})


def last_config(store: CurationStore, keys: list[str], ops) -> dict:
    """The run config each op was last computed with, so a scheduled refresh keeps the user's
    settings instead of falling back to the defaults."""
    out = {}
    for op in ops:
        prov = stored(store, op, keys[0] if graph.node(op).partitioned and keys else None)
        if prov and prov.get("config_values") is not None:
            out[op] = {"config": prov["config_values"]}
    return out


def is_current(store: CurationStore, op: str, partition: str | None, keys: list[str], config,
               **extra) -> bool:
    have = stored(store, op, partition)
    if have is None:
        return False
    # The run that wrote it is part of its token (a recomputation is new data downstream),
    # not of what it was computed from.
    have = {k: v for k, v in have.items() if k != "run"}
    want = expected(store, op, partition, keys, config, **extra)
    if not graph.node(op).keeps_fit_on_new_shards:
        return have == want
    if {k: v for k, v in have.items() if k != "inputs"} != {k: v for k, v in want.items() if k != "inputs"}:
        return False
    for upstream, how in graph.node(op).upstream.items():
        old, new = have["inputs"].get(upstream), want["inputs"][upstream]
        if how != "all":
            if old != new:
                return False
        # Every shard it was fit on must still be there, unchanged; new shards are fine.
        elif not isinstance(old, dict) or any(new.get(k) != v for k, v in old.items()):
            return False
    return True
