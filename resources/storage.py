"""Parquet files behind DuckDB views: the storage and query layer of every asset.

Layout under `tables_dir` (default: `<name>_tables/` beside the database file `<name>.duckdb`; a local folder or an
`s3://bucket/prefix` URL, see object_storage.py):

    <asset>/<partition>.parquet          one file per shard (partitioned assets)
    <asset>/_all.parquet                 one file (unpartitioned assets)
    <asset>/versions/<version>.parquet   one file per run (versioned assets, e.g. subsets)
    .retired/<UTC time>/<asset>/<partition>.parquet
                                         shards that left the source (no view reads them)

Each file is written to a temporary name and renamed into place (an object is uploaded whole),
so a killed run leaves the previous file whole. The DuckDB database holds only views over these files (one per asset,
under the asset's name, plus `<asset>_history` for versioned ones), so readers never hold the
database's single write lock, and several runs can write different shards at once.
"""


import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from pydantic import Field, field_validator

from .object_storage import ObjectLocation, check_object_url, is_url, open_object_location
from .parquet_rows import BATCH_ROWS, take_rows
from .vector_references import (POINTER_MAX_BYTES, iter_reference, pointer_table, read_reference, reference_of,
                                reference_sql)

# Partitions a sparse read decodes at once (read_rows_of): one a core, at most 8.
READ_THREADS = min(8, os.cpu_count() or 1)

# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*\Z")
UNPARTITIONED = "_all"
# Hidden folder (no view reads it) holding the files of shards that left the source, by date.
RETIRED = ".retired"
STAGING = ".staging"
# Parquet footer key under which each file records what it was computed from (see lineage.py).
PROVENANCE_KEY = b"curation.provenance"

# Views that add columns derived over all partitions. p_i = s_i / sum(s) needs every shard, so
# shards store s_i alone and the view normalises: a re-materialised shard can never leave a
# stale probability behind.
VIEW_SQL = {
    "sensitivities": "SELECT *, sensitivity / SUM(sensitivity) OVER () AS probability FROM {source}",
}


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"table name: {name!r} is not a plain identifier")
    return name


def check_partition_key(key: str) -> str:
    if not _PARTITION.match(key) or len(key) > 200:
        raise ValueError(
            f"partition key: {key!r} must start with a letter or digit and hold only letters, "
            "digits, '_', '-', '.', '=' (at most 200 characters)"
        )
    return key


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _write_error(exc: Exception, where) -> OSError:
    """A full disk, an unwritable folder or a refused upload as one OSError naming the place."""
    reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
    return OSError(getattr(exc, "errno", None) or 0,
                   f"store: could not write {where} ({reason}); the stored data there is unchanged")


def _is_vector(field: pa.Field) -> bool:
    t = field.type
    return (pa.types.is_fixed_size_list(t) or pa.types.is_list(t)) and pa.types.is_floating(t.value_type)


def _parquet_options(compression: str, schema: pa.Schema) -> dict:
    # Float vectors barely compress: stored plain (no codec, dictionary pages or min/max
    # statistics) they write ~2x and read ~2.5x faster, whatever codec the other columns get; and
    # version-2 data pages (which DuckDB and pyarrow read) decode a list column ~2x faster again.
    # Dictionary pages only where values repeat (versions, cluster ids, labels): scalar floats
    # (distances, losses, sensitivities) and example ids (unique in a shard, shard_admission.py)
    # fill a dictionary until it overflows, then drop it; without one a shard of assignments
    # writes ~2x faster and ~20% smaller.
    plain = [f.name for f in schema if compression == "none" or _is_vector(f)]
    rest = [f.name for f in schema if f.name not in plain]
    dictionary = [f.name for f in schema if f.name in rest and f.name != "example_id"
                  and not pa.types.is_floating(f.type)]
    if not plain:
        return {"compression": compression, "use_dictionary": dictionary}
    return {"compression": {**{c: compression for c in rest}, **{c: "none" for c in plain}},
            "use_dictionary": dictionary, "write_statistics": rest,
            "data_page_version": "2.0" if any(_is_vector(f) for f in schema) else "1.0"}


def atomic_write(path: Path, fill: Callable[[Path], object]) -> None:
    """`fill(tmp)` writes a temporary file in the same folder; it is fsynced, then renamed over `path`.

    A full disk or an unwritable folder is reported as one OSError naming the path and the
    cause; the previous file at `path` is untouched either way.
    """
    try:
        _write_then_rename(path, fill)
    except (OSError, pa.ArrowException) as exc:
        raise _write_error(exc, path) from exc


def atomic_write_parquet(table: pa.Table, path: Path, *, compression: str = "zstd") -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, **_parquet_options(compression, table.schema)))


def upload_whole(location: ObjectLocation, path: str, data) -> None:
    """One upload of bytes already in memory: the object appears complete or not at all."""
    try:
        with location.filesystem.open_output_stream(path) as out:
            out.write(data)
    except (OSError, pa.ArrowException) as exc:
        raise _write_error(exc, location.url(path)) from exc


def parquet_bytes(table: pa.Table, compression: str = "zstd") -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **_parquet_options(compression, table.schema))
    return sink.getvalue()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (the new name survives a power cut, not just a kill)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_then_rename(path: Path, fill: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fill(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _with_provenance(table: pa.Table, provenance: dict | None) -> pa.Table:
    if provenance is None:
        return table
    meta = dict(table.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True).encode()
    return table.replace_schema_metadata(meta)


class CurationStore(ConfigurableResource):
    database_path: str = Field(
        default="data/curation.duckdb", description="DuckDB file holding one view per asset."
    )
    tables_dir: str | None = Field(
        default=None,
        description="Where the Parquet files go: a folder (default: <name>_tables/ beside the database <name>.duckdb) or an "
                    "S3-compatible URL, s3://bucket/prefix[?region=..&endpoint_override=host:port&scheme=http].",
    )
    duckdb_memory_limit: str = Field(
        default="1GB", description="Memory cap of the DuckDB queries over the files (they spill to disk beyond it)."
    )
    lock_timeout_s: float = Field(
        default=60.0, description="How long to retry when another process holds the database's write lock."
    )

    @field_validator("tables_dir")
    @classmethod
    def _known_location(cls, value: str | None) -> str | None:
        return check_object_url(value) if value and is_url(value) else value

    # ---- where things are ----------------------------------------------------------------
    # Internally every file has a filesystem path (pyarrow's: "/abs/path" or "bucket/prefix/..."),
    # DuckDB gets the same place as SQL text (the path, or "s3://bucket/prefix/..."), and users
    # get a Path (local) or the URL (object storage).
    @property
    def db_path(self) -> Path:
        return Path(self.database_path).expanduser().resolve()

    @property
    def view_markers(self) -> Path:
        """Beside the database file: what each of its views was last created as (a cache)."""
        return self.db_path.parent / f".{self.db_path.name}.views"

    @property
    def is_remote(self) -> bool:
        return bool(self.tables_dir) and is_url(self.tables_dir)

    @property
    def _remote(self) -> ObjectLocation | None:
        return open_object_location(self.tables_dir) if self.is_remote else None

    @property
    def root(self) -> Path:
        """The local folder of the files (an object-storage store has none: see `location`)."""
        if self.is_remote:
            raise ValueError(f"store.tables_dir is the object-storage URL {self.tables_dir!r}, not a local folder")
        if self.tables_dir:
            return Path(self.tables_dir).expanduser().resolve()
        # Named after the database file: two stores in one folder never share their files.
        return self.db_path.parent / f"{self.db_path.stem}_tables"

    @property
    def location(self) -> str:
        """Where the files are, as a user would write it: a folder or s3://bucket/prefix."""
        remote = self._remote
        return remote.url(remote.base) if remote else str(self.root)

    def _filesystem(self) -> pafs.FileSystem:
        remote = self._remote
        return remote.filesystem if remote else pafs.LocalFileSystem()

    def _base(self) -> str:
        remote = self._remote
        return remote.base if remote else str(self.root)

    def _folder(self, name: str) -> str:
        return f"{self._base()}/{_check_name(name)}"

    def _file(self, name: str, partition: str | None) -> str:
        key = UNPARTITIONED if partition is None else check_partition_key(partition)
        return f"{self._folder(name)}/{key}.parquet"

    def _version_file(self, name: str, version: str) -> str:
        return f"{self._folder(name)}/versions/{check_partition_key(version)}.parquet"

    def _sql_path(self, path: str) -> str:
        remote = self._remote
        return _sql_string(remote.url(path) if remote else path)

    def _public(self, path: str) -> Path | str:
        remote = self._remote
        return remote.url(path) if remote else Path(path)

    def _is_file(self, path: str) -> bool:
        return self._filesystem().get_file_info(path).type == pafs.FileType.File

    def _listing(self, folder: str) -> list[pafs.FileInfo]:
        return self._filesystem().get_file_info(pafs.FileSelector(folder, allow_not_found=True))

    def _parquet_names(self, folder: str) -> list[str]:
        """Sorted names of the finished Parquet files in `folder` (temporary files end in .tmp)."""
        return sorted(i.base_name for i in self._listing(folder)
                      if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not i.base_name.startswith("."))

    # ---- writes --------------------------------------------------------------------------
    def _put_table(self, table: pa.Table, path: str, compression: str = "zstd") -> None:
        remote = self._remote
        if remote:
            upload_whole(remote, path, parquet_bytes(table, compression))
        else:
            atomic_write_parquet(table, Path(path), compression=compression)

    def write(self, name: str, table: pa.Table, partition: str | None = None, *, compression: str = "zstd",
              provenance: dict | None = None) -> Path | str:
        """Atomically replace one partition (or the whole table) and refresh its view.

        `provenance` (what the data was computed from) goes into the file's own footer, so data
        and provenance are replaced together or not at all.
        """
        path = self._file(name, partition)
        self._put_table(_with_provenance(table, provenance), path, compression)
        self._create_view(name, lambda: self._source_sql(name))
        return self._public(path)

    def write_version(self, name: str, table: pa.Table, version: str,
                      provenance: dict | None = None) -> Path | str:
        """Add a new version; the view `<name>` shows the newest, `<name>_history` all of them."""
        path = self._version_file(name, version)
        if self._is_file(path):
            raise FileExistsError(f"{name}: version {version!r} already exists at {self._public(path)}")
        self._put_table(_with_provenance(table, provenance), path)
        self._create_view(name, f"read_parquet({self._sql_path(self._latest_version_file(name))})")
        self._create_view(f"{name}_history", self._history_sql(name))
        return self._public(path)

    def _source_sql(self, name: str) -> str:
        files = f"read_parquet({self._sql_path(self._folder(name) + '/*.parquet')}, union_by_name=true)"
        refs = [reference_sql(ref, _quote_ident, _sql_string) for ref, _ in self._references(name)]
        if not refs:
            return files
        # Pointers hold no rows; the files they refer to are read beside the stored ones.
        return "(" + " UNION ALL BY NAME ".join([f"SELECT * FROM {files}", *refs]) + ")"

    def _references(self, name: str) -> list[tuple[dict, pa.Schema]]:
        """(reference, pointer schema) of each pointer among the asset's files (vector_references.py)."""
        if self.is_remote:
            return []
        folder = self._folder(name)
        return [p for f in self._parquet_names(folder) if (p := self._pointer(f"{folder}/{f}")) is not None]

    def _pointer(self, path: str) -> tuple[dict, pa.Schema] | None:
        """(reference, schema) if the stored file at `path` is a pointer (a few KB), else None."""
        if self.is_remote or os.path.getsize(path) > POINTER_MAX_BYTES:
            return None
        schema = pq.read_schema(path)
        ref = reference_of(schema)
        return (ref, schema) if ref is not None else None

    def reference(self, name: str, partition: str) -> dict | None:
        """What a stored partition refers to instead of holding rows (vector_references.py); None for a copy."""
        pointer = self._pointer(self._stored_file(name, partition))
        return pointer[0] if pointer else None

    def _read_file(self, path: str, columns: list[str] | None, where: str) -> pa.Table:
        """A stored file's rows, or the rows its pointer refers to."""
        if (pointer := self._pointer(path)) is not None:
            return read_reference(*pointer, columns, where)
        return pq.read_table(path, columns=columns, filesystem=self._filesystem())

    def _history_sql(self, name: str) -> str:
        return f"read_parquet({self._sql_path(self._folder(name) + '/versions/*.parquet')}, union_by_name=true)"

    @staticmethod
    def _view_body(name: str, source_sql: str) -> str:
        return VIEW_SQL.get(name, "SELECT * FROM {source}").format(source=source_sql)

    def write_file(self, name: str, filename: str, data: bytes) -> Path | str:
        """Atomically store a side file of an asset (a plot, a report) under <asset>/files/."""
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z", filename):
            raise ValueError(f"file name: {filename!r} must hold only letters, digits, '_', '-', '.'")
        path = f"{self._folder(name)}/files/{filename}"
        remote = self._remote
        if remote:
            upload_whole(remote, path, data)
            return self._public(path)
        path = Path(path)
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
        return path

    # ---- staging: validated before written, read once ---------------------------------------
    def _staged_file(self, name: str, partition: str) -> str:
        return f"{self._base()}/{STAGING}/{_check_name(name)}/{check_partition_key(partition)}.parquet"

    @property
    def stages(self) -> bool:
        """Whether staging pays: on disk a promotion is a rename; on object storage it would be a
        copy of the file, no cheaper than writing it again."""
        return not self.is_remote

    def stage(self, name: str, table: pa.Table, partition: str, *, compression: str = "zstd",
              provenance: dict | None = None) -> None:
        """Write a partition beside the store (`.staging/`, outside every view) for `promote` to move
        into place later: a run can validate every shard before writing any, and still read each once."""
        self._put_table(_with_provenance(table, provenance), self._staged_file(name, partition), compression)

    def stage_reference(self, name: str, partition: str, schema: pa.Schema, reference: dict, *,
                        provenance: dict | None = None) -> None:
        """Stage a pointer instead of the rows: a partition read from the file `reference` names
        (vector_references.py); promoted, retired and read like any stored partition."""
        self._put_table(_with_provenance(pointer_table(schema, reference), provenance),
                        self._staged_file(name, partition))

    def staged_provenance(self, name: str, partition: str) -> dict | None:
        path = self._staged_file(name, partition)
        if not self._is_file(path):
            return None
        raw = (pq.read_schema(path, filesystem=self._filesystem()).metadata or {}).get(PROVENANCE_KEY)
        return json.loads(raw) if raw else {}

    def promote(self, name: str, partition: str) -> Path | str:
        """Move a staged partition over the stored one (a rename on disk, a move on object storage:
        the view sees the old file or the new one, never a mix) and refresh the view."""
        src, dst = self._staged_file(name, partition), self._file(name, partition)
        self._move(src, dst, where=dst)
        self._create_view(name, lambda: self._source_sql(name))
        return self._public(dst)

    def clear_staged(self) -> None:
        """Drop whatever a run staged and did not promote (a failed or killed run)."""
        fs, path = self._filesystem(), f"{self._base()}/{STAGING}"
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)

    # ---- retirement -----------------------------------------------------------------------
    @property
    def retired_root(self) -> str:
        """Where files of shards that left the source are kept (hidden from every view)."""
        return f"{self._base()}/{RETIRED}"

    def asset_names(self) -> list[str]:
        """Every asset folder in the store."""
        return sorted(i.base_name for i in self._listing(self._base())
                      if i.type == pafs.FileType.Directory and _NAME.match(i.base_name))

    def retire(self, name: str, partition: str, stamp: str) -> Path | str:
        """Move one shard's file of `name` to `.retired/<stamp>/<name>/`, out of every view.

        A rename on disk (a copy and a delete on object storage): a kill leaves the file either
        in place (the next run retires it again) or retired, never half of it in a view.
        """
        src = self._file(name, partition)
        dst = f"{self.retired_root}/{check_partition_key(stamp)}/{_check_name(name)}/{check_partition_key(partition)}.parquet"
        pointer = self._pointer(src)
        self._move(src, dst, where=src)
        if pointer is not None and self.partitions(name):  # the view listed the file it referred to
            self._create_view(name, lambda: self._source_sql(name))
        return self._public(dst)

    def _move(self, src: str, dst: str, *, where: str) -> None:
        """Move one file: a durable rename on disk (both folders fsynced), a move on object
        storage; an OSError becomes one line naming `where`."""
        try:
            if self._remote:
                self._filesystem().move(src, dst)
            else:
                Path(dst).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                _fsync_folder(Path(src).parent)
                _fsync_folder(Path(dst).parent)
        except OSError as exc:
            raise _write_error(exc, self._public(where)) from exc

    def file_exists(self, name: str, filename: str) -> bool:
        """Whether the side file `filename` of asset `name` is stored."""
        return self._is_file(f"{self._folder(name)}/files/{filename}")

    def _duckdb(self, database: str = ":memory:", **kwargs) -> duckdb.DuckDBPyConnection:
        """A connection that can read this store's files (object storage through pyarrow's
        filesystem, registered with DuckDB: no httpfs download at run time)."""
        con = duckdb.connect(database, **kwargs)
        remote = self._remote
        if remote:
            con.register_filesystem(remote.duckdb_filesystem())
        return con

    def database(self, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        """The database file with its views, able to read the files wherever they are (for an
        s3:// store this is how to query it; a plain DuckDB client would need httpfs)."""
        if not self.db_path.exists():
            raise FileNotFoundError(f"store.database_path: {self.db_path} does not exist yet; materialize an asset first")
        return self._duckdb(str(self.db_path), read_only=read_only)

    def _create_view(self, name: str, source_sql: str | Callable[[], str]) -> None:
        """Create or replace a view in the database file, only when its SQL changed.

        Views over a folder's glob stay valid as shards come and go, so most writes need not
        touch the database at all: concurrent shard writers then never queue on its one write
        lock. A marker file beside the database file remembers the last SQL written. SQL that
        lists files (`source_sql` a callable) is listed again while the lock is held, so the last
        writer's view holds every file moved in before it.
        """
        def statement() -> str:
            body = self._view_body(name, source_sql() if callable(source_sql) else source_sql)
            return f"CREATE OR REPLACE VIEW {_quote_ident(_check_name(name))} AS {body}"

        stmt = statement()
        marker = self.view_markers / f"{_check_name(name)}.sql"
        if self.db_path.exists() and marker.exists() and marker.read_text() == f"{self.db_path}\n{stmt}":
            return
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                with self._duckdb(str(self.db_path)) as con:
                    stmt = statement() if callable(source_sql) else stmt
                    con.execute(stmt)
                break
            except duckdb.IOException as exc:  # another process holds the write lock
                if "lock" not in str(exc).lower():
                    raise OSError(f"store.database_path: could not write {self.db_path} "
                                  f"({str(exc).splitlines()[0]})") from exc
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        tmp = marker.with_name(f"{marker.name}.{uuid.uuid4().hex}.tmp")
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(f"{self.db_path}\n{stmt}")
            os.replace(tmp, marker)
        except OSError:  # only a cache: without it the next write re-creates the view
            tmp.unlink(missing_ok=True)

    # ---- reads ---------------------------------------------------------------------------
    def partitions(self, name: str) -> list[str]:
        return [f[: -len(".parquet")] for f in self._parquet_names(self._folder(name))
                if f != f"{UNPARTITIONED}.parquet"]

    def exists(self, name: str, partition: str | None = None) -> bool:
        if partition is None:
            return bool(self._parquet_names(self._folder(name)))
        return self._is_file(self._file(name, partition))

    def has_versions(self, name: str) -> bool:
        """A versioned table (a subset) has at least one version."""
        return bool(self._parquet_names(f"{self._folder(name)}/versions"))

    def _latest_version_file(self, name: str) -> str:
        versions = self._parquet_names(f"{self._folder(name)}/versions")
        if not versions:
            raise FileNotFoundError(f"{name}: no version has been written yet; materialize it first")
        return f"{self._folder(name)}/versions/{versions[-1]}"

    def latest_version_path(self, name: str) -> Path | str:
        return self._public(self._latest_version_file(name))

    def latest_version(self, name: str) -> str:
        """The name of the newest version (versions sort by time)."""
        return self._latest_version_file(name).rsplit("/", 1)[1][: -len(".parquet")]

    def read_version(self, name: str, version: str) -> pa.Table:
        path = self._version_file(name, version)
        if not self._is_file(path):
            raise FileNotFoundError(f"{name}: version {version!r} not found at {self._public(path)}")
        return pq.read_table(path, filesystem=self._filesystem())

    def read(self, name: str, partitions: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        """One table from the given partitions (default: every file of the asset)."""
        if partitions is None:
            files = [f"{self._folder(name)}/{f}" for f in self._parquet_names(self._folder(name))]
            if not files:
                raise FileNotFoundError(f"{name}: nothing stored yet under {self._public(self._folder(name))}; "
                                        "materialize it first")
        else:
            files = [self._file(name, p) for p in partitions]
            missing = [p for p, f in zip(partitions, files) if not self._is_file(f)]
            if missing:
                raise FileNotFoundError(f"{name}: partition(s) {missing} not materialized yet")
        return pa.concat_tables([self._read_file(f, columns, f"{name} {f.rsplit('/', 1)[-1]}") for f in files],
                                promote_options="permissive")

    def _stored_file(self, name: str, partition: str | None) -> str:
        path = self._file(name, partition)
        if not self._is_file(path):
            raise FileNotFoundError(f"{name}: partition {partition!r} not materialized yet")
        return path

    def row_count(self, name: str, partition: str | None = None) -> int:
        """Rows of one stored partition, from the Parquet footer (no data read)."""
        path = self._stored_file(name, partition)
        if (pointer := self._pointer(path)) is not None:
            return pointer[0]["rows"]
        with self._filesystem().open_input_file(path) as fh:
            return pq.ParquetFile(fh).metadata.num_rows

    def schema(self, name: str, partition: str | None = None) -> pa.Schema:
        """Column names and types of one stored partition, from its footer."""
        return pq.read_schema(self._stored_file(name, partition), filesystem=self._filesystem())

    def provenance(self, name: str, partition: str | None = None, *, versioned: bool = False) -> dict | None:
        """What a stored partition (or the newest version) was computed from; None if absent."""
        try:
            path = self._latest_version_file(name) if versioned else self._stored_file(name, partition)
        except FileNotFoundError:
            return None
        meta = pq.read_schema(path, filesystem=self._filesystem()).metadata or {}
        raw = meta.get(PROVENANCE_KEY)
        return json.loads(raw) if raw else None

    def read_rows(self, name: str, partition: str | None, rows, columns: list[str] | None = None) -> pa.Table:
        """The given row positions (in stored order) of one partition, reading only `columns`."""
        path, where = self._stored_file(name, partition), f"{name} [{partition}]"
        if (pointer := self._pointer(path)) is not None:
            return read_reference(*pointer, columns, where, rows=rows)
        with pq.ParquetFile(path, filesystem=self._filesystem()) as parquet:
            return take_rows(parquet, rows, columns, where)

    def read_rows_of(self, name: str, wanted: list[tuple[str | None, object]],
                     columns: list[str] | None = None) -> Iterator[pa.Table]:
        """`read_rows` of each (partition, rows), in order, READ_THREADS partitions at once: a
        Parquet column decodes on one core, and a sparse read over many shards is all decoding."""
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            yield from pool.map(lambda part: self.read_rows(name, part[0], part[1], columns), wanted)

    def iter_batches(self, name: str, partition: str | None, columns: list[str] | None = None,
                     batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
        """One partition's rows in stored order, `batch_rows` at a time: a pass over a shard's
        vectors reuses the same few MB instead of allocating the whole column (parquet_rows.py)."""
        path, where = self._stored_file(name, partition), f"{name} [{partition}]"
        if (pointer := self._pointer(path)) is not None:
            yield from iter_reference(*pointer, columns, where, batch_rows)
            return
        with pq.ParquetFile(path, filesystem=self._filesystem()) as parquet:
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
                yield pa.Table.from_batches([batch])

    def read_latest_version(self, name: str) -> pa.Table:
        return pq.read_table(self._latest_version_file(name), filesystem=self._filesystem())

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per stored asset, reading the Parquet
        files directly, so queries never wait for (or block) the database file's write lock."""
        con = self._duckdb(config={"memory_limit": self.duckdb_memory_limit})
        for folder in self._listing(self._base()):
            name = folder.base_name
            if folder.type != pafs.FileType.Directory or not _NAME.match(name):
                continue
            if self._parquet_names(folder.path):
                body = self._view_body(name, self._source_sql(name))
                con.execute(f"CREATE VIEW {_quote_ident(name)} AS {body}")
            elif self._parquet_names(f"{folder.path}/versions"):
                latest = self._sql_path(self._latest_version_file(name))
                con.execute(f"CREATE VIEW {_quote_ident(name)} AS SELECT * FROM read_parquet({latest})")
                con.execute(f"CREATE VIEW {_quote_ident(name + '_history')} AS SELECT * FROM {self._history_sql(name)}")
        return con

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        with self.connect() as con:
            return con.sql(sql, params=params).to_arrow_table()
