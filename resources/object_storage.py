"""Where the store's files live: a local folder or an S3-compatible bucket, behind one interface.

pyarrow's filesystem layer (bundled with pyarrow, so nothing from the network at run time) reads
and writes both. DuckDB reads the same objects through fsspec's wrapper of that filesystem,
registered on each connection: DuckDB's own httpfs extension would have to be downloaded, and
this way DuckDB, pyarrow and the store see one configuration (endpoint, region, credentials).

An object store has no rename, but a single upload is atomic: readers see the old object or the
new one, never part of it, and an upload cut short leaves nothing. So a local file is written
to a temporary name, fsynced and renamed, while an object is uploaded whole from memory.
"""

import functools
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

# S3 and S3-compatible services (MinIO, Ceph, Cloudflare R2, Google Cloud Storage's XML API).
SCHEMES = ("s3",)


def is_url(location: str) -> bool:
    return "://" in location


@dataclass(frozen=True)
class ObjectLocation:
    """A bucket prefix: `filesystem` paths are "bucket/prefix/...", DuckDB's are "s3://bucket/prefix/..."."""

    filesystem: pafs.FileSystem
    scheme: str
    base: str  # "bucket/prefix", no trailing slash

    def url(self, path: str) -> str:
        return f"{self.scheme}://{path}"

    def duckdb_filesystem(self):
        """The same filesystem as fsspec sees it, to register on a DuckDB connection."""
        return _duckdb_wrapper()(self.filesystem)  # protocol "s3": DuckDB routes s3:// paths to it


@functools.cache
def _duckdb_wrapper():
    """fsspec's wrapper of a pyarrow filesystem, with reads DuckDB can rely on.

    Through fsspec's own ArrowFile (pyarrow's seek + read) DuckDB got short reads ("Failed to read
    2097152 bytes ... only 2036263 bytes returned") and corrupt pages ("TProtocolException:
    Invalid data") on objects of a few MB, with one DuckDB thread as with four. Reads here are
    positional (pyarrow's read_at) behind fsspec's buffered file, the way fsspec's S3
    implementation serves DuckDB; tests/test_object_storage.py fails with the stock wrapper.
    """
    from fsspec.implementations.arrow import ArrowFSWrapper
    from fsspec.spec import AbstractBufferedFile

    class RangeReadFile(AbstractBufferedFile):
        def __init__(self, fs, path, arrow_file, block_size):
            self._arrow_file = arrow_file
            super().__init__(fs, path, mode="rb", size=arrow_file.size(), block_size=block_size,
                             cache_type="none")

        def _fetch_range(self, start, end):
            return self._arrow_file.read_at(end - start, start)

        def close(self):
            super().close()
            self._arrow_file.close()

    class DuckDBArrowFS(ArrowFSWrapper):
        def _open(self, path, mode="rb", block_size=None, **kwargs):
            if mode != "rb":
                return super()._open(path, mode, block_size, **kwargs)
            path = self._strip_protocol(path)
            return RangeReadFile(self, path, self.fs.open_input_file(path), block_size or 4 * 2**20)

    return DuckDBArrowFS


def check_object_url(url: str, setting: str = "store.tables_dir") -> str:
    """Refuse what cannot be a bucket prefix, by its text alone (no request is made)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{setting}: {url!r} is not a local folder or an s3:// URL "
                         f"(object storage supported: {', '.join(s + '://' for s in SCHEMES)})")
    if not parts.netloc:
        raise ValueError(f"{setting}: {url!r} names no bucket (expected s3://bucket/prefix)")
    return url


@functools.lru_cache(maxsize=32)
def open_object_location(url: str, setting: str = "store.tables_dir") -> ObjectLocation:
    """Parse `s3://bucket/prefix?region=...&endpoint_override=host:port&scheme=http` (pyarrow's
    URI options). Credentials come from the usual AWS sources (environment, profile, pod role);
    name the region, or pyarrow asks AWS for the bucket's."""
    parts = urlsplit(check_object_url(url, setting))
    try:
        filesystem, path = pafs.FileSystem.from_uri(url)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{setting}: could not open {url!r} ({exc})") from exc
    return ObjectLocation(filesystem, parts.scheme, path.rstrip("/"))


def _glob_regex(pattern: str) -> re.Pattern:
    """Shell glob as Python's glob reads it: * and ? stay inside one folder, **/ spans folders,
    [abc] / [!abc] are character classes."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:end]
            negate, body = body.startswith("!"), body.removeprefix("!")
            out.append("[" + "^" * negate + "".join(c if c == "-" else re.escape(c) for c in body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _split_glob(url: str) -> tuple[str, str]:
    """`s3://b/in/**/*.csv?opts` -> ("s3://b/in?opts", "**/*.csv"): the fixed folder and the rest."""
    parts = urlsplit(url)
    folders = parts.path.split("/")
    fixed = next((i for i, f in enumerate(folders) if any(c in f for c in "*?[")), len(folders))
    return (urlunsplit((parts.scheme, parts.netloc, "/".join(folders[:fixed]), parts.query, "")),
            "/".join(folders[fixed:]))


def glob_location(url: str, setting: str = "source.path") -> ObjectLocation:
    """Where a glob's objects are (opened once per process)."""
    return open_object_location(_split_glob(url)[0], setting)


def glob_objects(url: str, setting: str = "source.path") -> tuple[ObjectLocation, list[str]]:
    """The objects matching `s3://bucket/folder/*.parquet?options`: (their location, sorted
    filesystem paths). Lists only below the last folder without a wildcard. In a URL "?" starts
    the options, so it cannot be a one-character wildcard there: use [..] instead."""
    location, rest = glob_location(url, setting), _split_glob(url)[1]
    if not rest:  # no wildcard: one object
        return location, [location.base] if location.filesystem.get_file_info(location.base).is_file else []
    pattern = _glob_regex(location.base + "/" + rest)
    try:
        infos = location.filesystem.get_file_info(pafs.FileSelector(location.base, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise ValueError(f"{setting}: could not list {location.url(location.base)} ({exc})") from exc
    return location, sorted(i.path for i in infos if i.is_file and pattern.match(i.path))
