"""Reading what the upstream assets stored: the shards a global asset spans, shard-by-shard
reads that hold one shard at a time, and each upstream's loader (checked to be in step).

Assets read their inputs through here, never through another asset's module."""

import datetime as dt
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext

from resources.storage import CurationStore

from .algorithms.representatives import nearest_members_per_cluster
from .arrays import embedding_matrix, sort_by_id
from .partitions import shards
from .progress import Progress

T = TypeVar("T")


def registered_shards(context: AssetExecutionContext) -> list[str]:
    keys = sorted(context.instance.get_dynamic_partitions(shards.name))
    if not keys:
        raise ValueError(
            "shards: no shards are registered; run `curate run` or the `register_new_shards` sensor "
            "to register the source's shards first"
        )
    return keys


def require_partitions(store: CurationStore, asset: str, keys: list[str]) -> None:
    have = set(store.partitions(asset))
    missing = [k for k in keys if k not in have]
    if missing:
        more = " ..." if len(missing) > 10 else ""
        raise ValueError(f"{asset}: not materialized for shard(s) {missing[:10]}{more}; materialize it for them first")


def read_shards(store: CurationStore, asset: str, keys: list[str], columns: list[str] | None = None,
                version_column: str | None = None, expected_version: str | None = None,
                upstream: str = "") -> pa.Table:
    """All given shards of `asset`, sorted by example_id.

    With `version_column`, every shard must have been computed from `expected_version` of its
    upstream asset; stale shards are named in the error, so the user knows what to re-run.
    """
    require_partitions(store, asset, keys)
    tables, stale = [], []
    for key in keys:
        t = store.read(asset, [key], columns=columns)
        if version_column is not None:
            if set(t.column(version_column).unique().to_pylist()) != {expected_version}:
                stale.append(key)
        tables.append(t)
    if stale:
        raise ValueError(
            f"{asset}: shard(s) {stale[:10]} were computed from an older {upstream}; "
            f"re-materialize {asset} for them"
        )
    return sort_by_id(pa.concat_tables(tables, promote_options="permissive"))


def read_ahead(items: Iterable[T]) -> Iterator[T]:
    """The items of `items` in order, the next one produced in a thread while the caller works on
    this one (Parquet reads release the GIL, as do faiss and BLAS): a loop over shards or batches
    overlaps I/O with compute and holds at most two items. An error surfaces at its item, and
    nothing after it is produced."""
    it, done = iter(items), object()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, it, done)
        while (value := pending.result()) is not done:
            pending = pool.submit(next, it, done)
            yield value


def prefetched(keys: list[str], read: Callable[[str], object]) -> Iterator[tuple[str, object]]:
    """(key, read(key)) for each key in order, the next shard's read ahead (read_ahead)."""
    return read_ahead((key, read(key)) for key in keys)


def vector_batches(store: CurationStore, shard: str, n: int) -> Iterator[np.ndarray]:
    """The shard's vectors in stored order, a batch at a time, the next batch read ahead: a pass
    over them never holds the shard's whole column. Raises unless they are `n` (its ids' count)."""
    batches = store.iter_batches("embeddings", shard, ["embedding"])
    seen = 0
    for x in read_ahead(embedding_matrix(t.column("embedding")) for t in batches):
        seen += x.shape[0]
        if seen > n:
            break
        yield x
    if seen != n:
        raise ValueError(f"embeddings of shard {shard!r}: {'more than ' if seen > n else ''}{seen} vectors for "
                         f"{n} example ids; re-materialize embeddings")


def shard_row_counts(store: CurationStore, asset: str, keys: list[str]) -> np.ndarray:
    """Rows per shard from the Parquet footers: sizes the global draws without reading data."""
    require_partitions(store, asset, keys)
    return np.array([store.row_count(asset, k) for k in keys], dtype=np.int64)


def split_rows(global_rows, counts) -> list[np.ndarray]:
    """Global row numbers (over the shards in order) -> sorted local row numbers per shard."""
    rows = np.sort(np.asarray(global_rows, dtype=np.int64))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [rows[(rows >= lo) & (rows < hi)] - lo for lo, hi in zip(bounds[:-1], bounds[1:])]


def gather_rows(store: CurationStore, asset: str, keys: list[str], local_rows: list[np.ndarray],
                columns: list[str]) -> pa.Table:
    """The chosen rows of every shard, a few shards at a time (read_rows_of): memory holds a batch
    of each shard being read plus the rows kept."""
    parts = list(store.read_rows_of(asset, [(key, rows) for key, rows in zip(keys, local_rows) if rows.size], columns))
    return pa.concat_tables(parts) if parts else store.read_rows(asset, keys[0], [], columns=columns)


def gather_embeddings(store: CurationStore, keys: list[str], local_rows: list[np.ndarray],
                      progress=None) -> np.ndarray:
    chosen = [(key, rows) for key, rows in zip(keys, local_rows) if rows.size]
    parts = []
    for table in store.read_rows_of("embeddings", chosen, ["embedding"]):
        parts.append(embedding_matrix(table.column("embedding")))
        if progress is not None:
            progress.update(1)
    if progress is not None and len(chosen) < len(keys):
        progress.update(len(keys) - len(chosen))  # shards with no chosen row: nothing to read
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def embedding_dimension(store: CurationStore, key: str) -> int:
    field = store.schema("embeddings", key).field("embedding")
    return field.type.list_size if pa.types.is_fixed_size_list(field.type) else -1


def load_centroids(store: CurationStore) -> tuple[np.ndarray, str]:
    table = store.read("centroids").sort_by("cluster_id")
    return embedding_matrix(table.column("centroid")), table.column("version")[0].as_py()


def load_fit_summary(store: CurationStore) -> tuple[np.ndarray, float]:
    """Cluster shares and cost per point of the data the centroids were fit on."""
    t = store.read("centroids", columns=["cluster_id", "fit_share", "fit_cost_per_point"]).sort_by("cluster_id")
    return t.column("fit_share").to_numpy(), float(t.column("fit_cost_per_point")[0].as_py())


def load_losses(store: CurationStore) -> tuple[pa.Table, np.ndarray, str, str]:
    """representative_losses sorted by cluster, v_j as float64 (NaN for empty clusters), versions."""
    t = store.read("representative_losses").sort_by("cluster_id")
    v = np.asarray(t.column("loss").to_numpy(zero_copy_only=False), dtype=np.float64)
    return t, v, t.column("version")[0].as_py(), t.column("centroids_version")[0].as_py()


def losses_probe(losses: pa.Table) -> str | None:
    """The version of the probe representative_losses took its losses from (None: another scorer,
    or a store from before the probe was its own asset)."""
    return losses.column("probe_version")[0].as_py() if "probe_version" in losses.column_names else None


def load_hierarchy(store: CurationStore) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Centroids and parent links per level (bottom-up), and the hierarchy's version."""
    t = store.read("hierarchical_centroids").sort_by([("level", "ascending"), ("cluster_id", "ascending")])
    level = t.column("level").to_numpy()
    centroids, parents = [], []
    for lv in np.unique(level):
        rows = t.filter(pa.array(level == lv))
        centroids.append(embedding_matrix(rows.column("centroid")))
        parents.append(rows.column("parent_id").fill_null(-1).to_numpy().astype(np.int64))
    return centroids, parents[:-1], t.column("version")[0].as_py()


def load_holdout(store: CurationStore, probe_version: str | None) -> tuple[pa.Table | None, str]:
    """The probe's losses on held-out rows (the probe of `probe_version`: the one representative_losses
    used, None when it used none), and the alpha rule they give."""
    holdout, state = None, "none"
    if probe_version is not None and store.exists("holdout_losses"):
        holdout, state = store.read("holdout_losses"), "current"
        if holdout.num_rows == 0:  # the pilot took every row
            holdout, state = None, "none"
        elif set(holdout.column("version").unique().to_pylist()) != {probe_version}:
            holdout, state = None, "older"
    return holdout, {"none": "default (no labelled holdout)",
                     "older": "default (holdout from an older probe)",
                     "current": "auto (labelled holdout)"}[state]


@dataclass(frozen=True)
class StoredProbe:
    """The probe's p(y | x) = softmax(W x + b) over `classes`, and the run that fit it."""

    classes: list[str]
    w: np.ndarray
    b: np.ndarray
    version: str

    def label_index(self, labels: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Each label's row of W: -1 where there is no label, -2 for a label the probe never saw."""
        at = pc.index_in(labels, value_set=pa.array(self.classes, pa.string()))
        out = at.fill_null(-2).to_numpy(zero_copy_only=False).astype(np.int64)
        out[labels.is_null().to_numpy(zero_copy_only=False)] = -1
        return out


def load_probe(store: CurationStore) -> StoredProbe | None:
    """The probe the centroids step stored, or None when it fit none (not every example has a
    label, or fewer than two classes)."""
    if not store.exists("probe"):
        return None
    t = store.read("probe")
    if t.num_rows == 0:
        return None
    return StoredProbe(t.column("class").to_pylist(), np.array(t.column("coefficients").to_pylist(), dtype=np.float64),
                       t.column("intercept").to_numpy(), t.column("version")[0].as_py())


def label_summary(store: CurationStore, keys: list[str]) -> tuple[int, set]:
    """Examples without a label, and up to two distinct labels (whether a probe can be fit), from
    raw_examples' label column alone."""
    require_partitions(store, "raw_examples", keys)
    missing, distinct = 0, set()
    for key in keys:
        labels = store.read("raw_examples", [key], columns=["label"]).column("label")
        missing += labels.null_count
        if len(distinct) < 2:
            distinct.update(x for x in labels.unique().to_pylist() if x is not None)
    return missing, distinct


def version_name(run_id: str) -> str:
    """A subset version: UTC time (sorts in write order) and the run that wrote it."""
    return f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{run_id[:8]}"


class RowsByNumber:
    """Columns of chosen rows (global row numbers over the shards in order), read shard by shard;
    `x` their vectors (empty without `with_vectors`)."""

    def __init__(self, store: CurationStore, keys: list[str], counts: np.ndarray, rows, with_text: bool,
                 with_vectors: bool = True):
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        local = split_rows(self.rows, counts)
        cols = ["example_id", "label"] + (["text"] if with_text else [])
        raw = gather_rows(store, "raw_examples", keys, local, cols)
        self.ids = raw.column("example_id").to_pylist()
        self.labels = raw.column("label").to_pylist()
        self.texts = raw.column("text").to_pylist() if with_text else None
        self.x = np.zeros((len(self.ids), 0), dtype=np.float32)
        if with_vectors:
            emb = gather_rows(store, "embeddings", keys, local, ["example_id", "embedding"])
            if emb.column("example_id").to_pylist() != self.ids:
                raise ValueError("raw_examples and embeddings hold different examples at the same rows; "
                                 "re-materialize embeddings")
            self.x = embedding_matrix(emb.column("embedding"))

    def positions(self, rows) -> np.ndarray:
        return np.searchsorted(self.rows, np.asarray(rows, dtype=np.int64))


def scan_assignments(store: CurationStore, keys: list[str], k: int, r: int, centroids_version: str,
                     probe_version: str | None = None, log=lambda _: None):
    """One pass over the shards: cluster sizes and costs, the r members nearest each centroid
    (as global row numbers) and the probe's loss at their labels (NaN without one), and label
    statistics. Memory holds one shard at a time. With `probe_version`, every shard must have been
    scored by that probe."""
    require_partitions(store, "cluster_assignments", keys)
    sizes, sum_sq = np.zeros(k, dtype=np.int64), np.zeros(k)
    cand_cluster, cand_dist, cand_row, cand_loss = [], [], [], []
    counts, stale, unscored, null_labels, distinct = [], [], [], 0, set()
    offset = 0
    progress = Progress(len(keys), "representative_losses: scanning assignments", log, unit="shards")
    def read(key):
        scored = "label_loss" in store.schema("cluster_assignments", key).names  # older stores: none
        columns = ["example_id", "cluster_id", "sq_distance", "centroids_version"]
        return (store.read("cluster_assignments", [key], columns=columns + ["label_loss", "probe_version"] * scored),
                store.read("raw_examples", [key], columns=["example_id", "label"]),
                store.read("embeddings", [key], columns=["example_id"]).column("example_id"))

    for key, (a, raw, emb_ids) in prefetched(keys, read):
        if set(a.column("centroids_version").unique().to_pylist()) != {centroids_version}:
            stale.append(key)
        if probe_version is not None and ("probe_version" not in a.column_names or
                                          set(a.column("probe_version").unique().to_pylist()) != {probe_version}):
            unscored.append(key)
        if not (a.column("example_id").equals(raw.column("example_id")) and a.column("example_id").equals(emb_ids)):
            raise ValueError(
                f"raw_examples, embeddings and cluster_assignments hold different examples in shard {key!r}; "
                "re-materialize embeddings and cluster_assignments for it"
            )
        cid = a.column("cluster_id").to_numpy().astype(np.int64)
        d2 = a.column("sq_distance").to_numpy()
        sizes += np.bincount(cid, minlength=k)
        sum_sq += np.bincount(cid, weights=d2, minlength=k)
        local = nearest_members_per_cluster(cid, d2, k, r)
        j, rank = np.nonzero(local >= 0)
        rows = local[j, rank]
        cand_cluster.append(j)
        cand_dist.append(d2[rows].astype(np.float64))
        cand_row.append(rows + offset)
        loss = a.column("label_loss").to_numpy(zero_copy_only=False) if "label_loss" in a.column_names else None
        cand_loss.append(np.full(rows.size, np.nan) if loss is None else np.asarray(loss[rows], dtype=np.float64))
        labels = raw.column("label")
        null_labels += labels.null_count
        if len(distinct) < 2:
            distinct.update(x for x in labels.unique().to_pylist() if x is not None)
        counts.append(a.num_rows)
        offset += a.num_rows
        progress.update(1)
    if stale:
        raise ValueError(f"cluster_assignments: shard(s) {stale[:10]} were computed from older centroids; "
                         "re-materialize cluster_assignments for them")
    if unscored:
        raise ValueError(f"cluster_assignments: shard(s) {unscored[:10]} were not scored by the current probe; "
                         "re-materialize cluster_assignments for them")
    cluster, dist, row, loss = (np.concatenate(v) for v in (cand_cluster, cand_dist, cand_row, cand_loss))
    order = np.lexsort((row, dist, cluster))  # by (cluster, distance, row): ties to the earliest row
    cluster, dist, row, loss = cluster[order], dist[order], row[order], loss[order]
    starts = np.searchsorted(cluster, np.arange(k))
    rank = np.arange(cluster.size) - starts[cluster]
    take = rank < r
    members = np.full((k, r), -1, dtype=np.int64)
    member_dist = np.full((k, r), np.nan)
    members[cluster[take], rank[take]] = row[take]
    member_dist[cluster[take], rank[take]] = dist[take]
    member_loss = np.full((k, r), np.nan)
    member_loss[cluster[take], rank[take]] = loss[take]
    return (members, member_dist, member_loss, sizes, sum_sq, np.array(counts, dtype=np.int64), null_labels,
            distinct)
