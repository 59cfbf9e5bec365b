"""Parquet files behind DuckDB views: the storage and query layer of every asset.

Layout under `tables_dir` (default: `tables/` beside the database file):

    <asset>/<partition>.parquet          one file per shard (partitioned assets)
    <asset>/_all.parquet                 one file (unpartitioned assets)
    <asset>/versions/<version>.parquet   one file per run (versioned assets, e.g. subsets)

Each file is written to a temporary name and renamed into place, so a killed run leaves the
previous file whole. The DuckDB database holds only views over these files (one per asset,
under the asset's name, plus `<asset>_history` for versioned ones), so readers never hold the
database's single write lock, and several runs can write different shards at once.
"""


import json
import os
import re
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from pydantic import Field

# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*\Z")
UNPARTITIONED = "_all"
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


def atomic_write_parquet(table: pa.Table, path: Path, *, compression: str = "zstd") -> None:
    """Write to a temporary file in the same folder, fsync it, then rename over `path`.

    A full disk or an unwritable folder is reported as one OSError naming the path and the
    cause; the previous file at `path` is untouched either way.
    """
    try:
        _write_then_rename(table, path, compression)
    except (OSError, pa.ArrowException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise OSError(getattr(exc, "errno", None) or 0,
                      f"store: could not write {path} ({reason}); the stored data there is unchanged") from exc


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (the new name survives a power cut, not just a kill)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_then_rename(table: pa.Table, path: Path, compression: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # Uncompressed (float) data gains nothing from dictionary pages or min/max statistics,
        # and skipping both writes embeddings ~1.6x faster.
        plain = compression == "none"
        pq.write_table(table, tmp, compression=compression, use_dictionary=not plain, write_statistics=not plain)
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
        default=None, description="Folder of the Parquet files (default: tables/ beside the database)."
    )
    duckdb_memory_limit: str = Field(
        default="1GB", description="Memory cap of the DuckDB queries over the files (they spill to disk beyond it)."
    )
    lock_timeout_s: float = Field(
        default=60.0, description="How long to retry when another process holds the database's write lock."
    )

    # ---- paths ---------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return Path(self.database_path).expanduser().resolve()

    @property
    def root(self) -> Path:
        if self.tables_dir:
            return Path(self.tables_dir).expanduser().resolve()
        return self.db_path.parent / "tables"

    def _folder(self, name: str) -> Path:
        return self.root / _check_name(name)

    def _file(self, name: str, partition: str | None) -> Path:
        key = UNPARTITIONED if partition is None else check_partition_key(partition)
        return self._folder(name) / f"{key}.parquet"

    def _glob(self, name: str) -> str:
        return str(self._folder(name) / "*.parquet")

    # ---- writes --------------------------------------------------------------------------
    def write(self, name: str, table: pa.Table, partition: str | None = None, *, compression: str = "zstd",
              provenance: dict | None = None) -> Path:
        """Atomically replace one partition (or the whole table) and refresh its view.

        `provenance` (what the data was computed from) goes into the file's own footer, so data
        and provenance are replaced together or not at all.
        """
        path = self._file(name, partition)
        atomic_write_parquet(_with_provenance(table, provenance), path, compression=compression)
        self._create_view(name, self._source_sql(name))
        return path

    def write_version(self, name: str, table: pa.Table, version: str, provenance: dict | None = None) -> Path:
        """Add a new version; the view `<name>` shows the newest, `<name>_history` all of them."""
        check_partition_key(version)
        path = self._folder(name) / "versions" / f"{version}.parquet"
        if path.exists():
            raise FileExistsError(f"{name}: version {version!r} already exists at {path}")
        atomic_write_parquet(_with_provenance(table, provenance), path)
        latest = self.latest_version_path(name)
        self._create_view(name, f"read_parquet({_sql_string(str(latest))})")
        self._create_view(
            f"{name}_history",
            f"read_parquet({_sql_string(str(self._folder(name) / 'versions' / '*.parquet'))}, union_by_name=true)",
        )
        return path

    def _source_sql(self, name: str) -> str:
        return f"read_parquet({_sql_string(self._glob(name))}, union_by_name=true)"

    @staticmethod
    def _view_body(name: str, source_sql: str) -> str:
        return VIEW_SQL.get(name, "SELECT * FROM {source}").format(source=source_sql)

    def write_file(self, name: str, filename: str, data: bytes) -> Path:
        """Atomically store a side file of an asset (a plot, a report) under <asset>/files/."""
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z", filename):
            raise ValueError(f"file name: {filename!r} must hold only letters, digits, '_', '-', '.'")
        path = self._folder(name) / "files" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{filename}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_folder(path.parent)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def _create_view(self, name: str, source_sql: str) -> None:
        """Create or replace a view in the database file, only when its SQL changed.

        Views over a folder's glob stay valid as shards come and go, so most writes need not
        touch the database at all: concurrent shard writers then never queue on its one write
        lock. A marker file beside the Parquet files remembers the last SQL written.
        """
        stmt = f"CREATE OR REPLACE VIEW {_quote_ident(_check_name(name))} AS {self._view_body(name, source_sql)}"
        marker = self.root / ".views" / f"{_check_name(name)}.sql"
        if self.db_path.exists() and marker.exists() and marker.read_text() == f"{self.db_path}\n{stmt}":
            return
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                with duckdb.connect(str(self.db_path)) as con:
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
        folder = self._folder(name)
        if not folder.exists():
            return []
        return sorted(p.stem for p in folder.glob("*.parquet") if p.stem != UNPARTITIONED)

    def exists(self, name: str, partition: str | None = None) -> bool:
        if partition is None:
            return any(self._folder(name).glob("*.parquet"))
        return self._file(name, partition).exists()

    def latest_version_path(self, name: str) -> Path:
        versions = sorted((self._folder(name) / "versions").glob("*.parquet"))
        if not versions:
            raise FileNotFoundError(f"{name}: no version has been written yet; materialize it first")
        return versions[-1]

    def read(self, name: str, partitions: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        """One table from the given partitions (default: every file of the asset)."""
        if partitions is None:
            files = sorted(self._folder(name).glob("*.parquet"))
            if not files:
                raise FileNotFoundError(f"{name}: nothing stored yet under {self._folder(name)}; materialize it first")
        else:
            files = [self._file(name, p) for p in partitions]
            missing = [p for p, f in zip(partitions, files) if not f.exists()]
            if missing:
                raise FileNotFoundError(f"{name}: partition(s) {missing} not materialized yet")
        return pa.concat_tables(
            [pq.read_table(f, columns=columns) for f in files], promote_options="permissive"
        )

    def row_count(self, name: str, partition: str | None = None) -> int:
        """Rows of one stored partition, from the Parquet footer (no data read)."""
        path = self._file(name, partition)
        if not path.exists():
            raise FileNotFoundError(f"{name}: partition {partition!r} not materialized yet")
        return pq.ParquetFile(path).metadata.num_rows

    def schema(self, name: str, partition: str | None = None) -> pa.Schema:
        """Column names and types of one stored partition, from its footer."""
        path = self._file(name, partition)
        if not path.exists():
            raise FileNotFoundError(f"{name}: partition {partition!r} not materialized yet")
        return pq.read_schema(path)

    def provenance(self, name: str, partition: str | None = None, *, versioned: bool = False) -> dict | None:
        """What a stored partition (or the newest version) was computed from; None if absent."""
        if versioned:
            try:
                path = self.latest_version_path(name)
            except FileNotFoundError:
                return None
        else:
            path = self._file(name, partition)
            if not path.exists():
                return None
        meta = pq.read_schema(path).metadata or {}
        raw = meta.get(PROVENANCE_KEY)
        return json.loads(raw) if raw else None

    def read_rows(self, name: str, partition: str | None, rows, columns: list[str] | None = None) -> pa.Table:
        """The given row positions (in stored order) of one partition, reading only `columns`."""
        path = self._file(name, partition)
        if not path.exists():
            raise FileNotFoundError(f"{name}: partition {partition!r} not materialized yet")
        return pq.read_table(path, columns=columns).take(pa.array(rows, pa.int64()))

    def read_latest_version(self, name: str) -> pa.Table:
        return pq.read_table(self.latest_version_path(name))

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per stored asset, reading the Parquet
        files directly, so queries never wait for (or block) the database file's write lock."""
        con = duckdb.connect(config={"memory_limit": self.duckdb_memory_limit})
        if not self.root.exists():
            return con
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not _NAME.match(folder.name):
                continue
            if any(folder.glob("*.parquet")):
                body = self._view_body(folder.name, self._source_sql(folder.name))
                con.execute(f"CREATE VIEW {_quote_ident(folder.name)} AS {body}")
            elif any((folder / "versions").glob("*.parquet")):
                latest = _sql_string(str(self.latest_version_path(folder.name)))
                history = _sql_string(str(folder / "versions" / "*.parquet"))
                con.execute(f"CREATE VIEW {_quote_ident(folder.name)} AS SELECT * FROM read_parquet({latest})")
                con.execute(
                    f"CREATE VIEW {_quote_ident(folder.name + '_history')} AS "
                    f"SELECT * FROM read_parquet({history}, union_by_name=true)"
                )
        return con

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        with self.connect() as con:
            return con.sql(sql, params=params).to_arrow_table()
