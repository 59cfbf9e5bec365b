"""Property-based tests (hypothesis) over ingestion, storage and configuration.

Every input either works exactly (ids and texts come back as written) or fails with
ValueError / FileNotFoundError / KeyError naming the input; no library error leaks, no
identifier reaches SQL unquoted, nothing is written outside the store, and a refused
configuration leaves every stored byte as it was.
"""

import csv
import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from conftest import make_resources, snapshot
from conftest import clustered_vectors as _vectors
from conftest import write_examples as _write
from curation_assets.pipeline import run_pipeline
from resources import CurationStore, ExampleSource

# derandomize: the same examples on every run, so CI is repeatable (a new find is a deliberate
# change of the seed, not a surprise in someone else's build).
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
ALLOWED = (ValueError, FileNotFoundError, KeyError)

# ---- strategies -------------------------------------------------------------------------
_chars = st.characters(blacklist_categories=("Cs",))  # any code point but lone surrogates
NASTY = ["", " ", "\t \n", "\x00", "a\x00b", "🙂👍🏽", "שלום עולם", "\u202eevil", "'; DROP TABLE x; --",
         '"', "'", "\\", "\\'", "NULL", "null", "True", "1.50", "1e3", "007", "2020-01-01T10:00:00",
         "ABCDEF01-2345-6789-ABCD-EF0123456789", "a,b", "x\r\ny", "[1, 2]", "{\"a\": 1}"]
long_text = st.builds(lambda s, n: (s or "a") * n, st.text(_chars, max_size=4), st.integers(1000, 25_000)).map(
    lambda s: s[:100_000])
texts = st.one_of(st.sampled_from(NASTY), st.text(_chars, max_size=40), long_text)
ids = st.one_of(st.sampled_from(NASTY), st.text(_chars, max_size=20),
                st.integers(-10**12, 10**12).map(str), st.text(_chars, min_size=200, max_size=600))
NAMES = ["id", "text", "label", 'i"d', "it's", "col; DROP TABLE x; --", "a b", "a.b", "Ümlaut", "🙂", "x\ny",
         "select", "1"]
col_names = st.one_of(st.sampled_from(NAMES), st.text(_chars.filter(lambda c: c not in "\r\n\x00"),
                                                      min_size=1, max_size=12))


def _write_file(path: Path, fmt: str, id_col: str, text_col: str, id_values, text_values) -> None:
    if fmt == "parquet":
        pq.write_table(pa.table({id_col: id_values, text_col: text_values}), path)
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow([id_col, text_col])
            w.writerows(zip(id_values, text_values))
    else:
        with open(path, "w", encoding="utf-8") as fh:
            for i, t in zip(id_values, text_values):
                fh.write(json.dumps({id_col: i, text_col: t}) + "\n")


def _check_error(exc: Exception, shard: str) -> None:
    msg = str(exc)
    assert isinstance(exc, ALLOWED), f"{type(exc).__name__} leaked: {msg}"
    assert "source." in msg or f"shard {shard!r}" in msg, f"error names no input: {msg}"


def _load(source: ExampleSource, shard: str):
    try:
        return source.load_shard(shard)
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions come out
        _check_error(exc, shard)
        return exc


# ---- 1. ingestion ----------------------------------------------------------------------
@FAST
@given(fmt=st.sampled_from(["parquet", "csv", "jsonl"]), rows=st.lists(st.tuples(ids, texts), min_size=1, max_size=6),
       id_col=col_names, text_col=col_names)
@example(fmt="csv", rows=[(" ", " ")], id_col="id", text_col="0\x0c")  # found in CI: a form feed is not stripped
def test_files_round_trip_or_fail_naming_the_input(fmt, rows, id_col, text_col):
    """Unique non-empty ids with non-blank text come back exactly; anything else fails naming the input."""
    assume(id_col != text_col)
    id_values, text_values = [r[0] for r in rows], [r[1] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        _write_file(Path(tmp) / f"s.{fmt}", fmt, id_col, text_col, id_values, text_values)
        source = ExampleSource(kind="files", path=str(Path(tmp) / f"*.{fmt}"), id_column=id_col,
                               text_column=text_col)
        got = _load(source, "s")
    # ids unique; every text has a non-whitespace character (the model needs text, in every format)
    valid = len(set(id_values)) == len(id_values) and all(t.strip() for t in text_values)
    if fmt == "csv":  # an empty CSV field is NULL, by the format's own convention
        valid = valid and all(id_values) and all(text_values)
        # and DuckDB strips spaces and tabs around header names (not other whitespace such as a
        # form feed): a blank name becomes column<N>
        valid = valid and all(c.strip(" \t") == c and c for c in (id_col, text_col))
    if isinstance(got, Exception):
        # CSV has no one dialect: content a sniffer cannot parse is refused naming source.path
        sniffed = fmt == "csv" and "source.path" in str(got)
        assert not valid or sniffed, f"valid input refused: {got}"
        assert sniffed or re.search(r"source\.(id_column|text_column)", str(got)), str(got)
    else:
        assert valid, f"invalid input accepted: ids {id_values!r}, texts {text_values!r}"
        assert got.column("example_id").to_pylist() == id_values
        assert got.column("text").to_pylist() == text_values


@FAST
@given(fmt=st.sampled_from(["csv", "jsonl"]), good=texts, junk=st.binary(min_size=1, max_size=8),
       at=st.integers(0, 1))
def test_non_utf8_bytes_fail_naming_the_path(fmt, good, junk, at):
    """Raw bytes that are not UTF-8 are refused with an error naming source.path, or (when the
    bytes happen to be valid UTF-8) decoded exactly."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"s.{fmt}"
        _write_file(path, fmt, "id", "text", ["a", "b"], ["x", "y"])
        raw = path.read_bytes()
        cut = raw.index(b"x" if at == 0 else b"y")
        path.write_bytes(raw[:cut] + junk + raw[cut:])
        got = _load(ExampleSource(kind="files", path=str(Path(tmp) / "*"), id_column="id", text_column="text"), "s")
    try:
        decoded = junk.decode("utf-8")
    except UnicodeDecodeError:
        assert isinstance(got, ValueError) and "source.path" in str(got), got
        return
    if not isinstance(got, Exception):  # valid UTF-8 junk may still break the format (quotes, newlines)
        assert decoded in "".join(got.column("text").to_pylist() + got.column("example_id").to_pylist())


@FAST
@given(fmt=st.sampled_from(["parquet", "csv", "jsonl"]), id_col=col_names, text_col=col_names,
       wanted_id=col_names, wanted_text=col_names)
def test_column_names_from_config_are_quoted_or_named_in_the_error(fmt, id_col, text_col, wanted_id, wanted_text):
    """Any configured column name selects exactly that column, or fails naming the config field."""
    assume(id_col != text_col)
    with tempfile.TemporaryDirectory() as tmp:
        _write_file(Path(tmp) / f"s.{fmt}", fmt, id_col, text_col, ["a", "b"], ["t1", "t2"])
        source = ExampleSource(kind="files", path=str(Path(tmp) / f"*.{fmt}"), id_column=wanted_id,
                               text_column=wanted_text)
        got = _load(source, "s")
    if isinstance(got, Exception) and fmt == "csv" and "source.path" in str(got):
        return  # a header DuckDB cannot parse (a newline inside a quoted name) is refused naming the file
    if isinstance(got, Exception):
        missing = [f for f, w in (("id_column", wanted_id), ("text_column", wanted_text)) if w not in (id_col, text_col)]
        assert missing or wanted_id == wanted_text, f"existing columns refused: {got}"
        assert any(f"source.{f}" in str(got) for f in missing or ["id_column"]), str(got)
    else:
        by_name = {id_col: ["a", "b"], text_col: ["t1", "t2"]}
        assert got.column("example_id").to_pylist() == by_name[wanted_id]
        assert got.column("text").to_pylist() == by_name[wanted_text]


def test_unknown_shard_and_missing_path_are_named(tmp_path):
    _write_file(tmp_path / "s.csv", "csv", "id", "text", ["a"], ["x"])
    with pytest.raises(KeyError, match=r"shard 'nope'"):
        ExampleSource(kind="files", path=str(tmp_path / "*.csv")).load_shard("nope")
    with pytest.raises(FileNotFoundError, match=r"source.path"):
        ExampleSource(kind="files", path=str(tmp_path / "none" / "*.csv")).load_shard("s")
    (tmp_path / "not.duckdb").write_bytes(b"not a database")
    with pytest.raises(ValueError, match=r"source.database: could not open"):
        ExampleSource(kind="duckdb_table", database=str(tmp_path / "not.duckdb"), table="t").load_shard("shard-0")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@FAST
@given(real=st.one_of(st.sampled_from(NAMES), st.text(_chars.filter(lambda c: c != "\x00"), min_size=1, max_size=12)),
       asked=st.one_of(st.just(None), st.sampled_from(["t; DROP TABLE x", 'x"; DROP TABLE x; --', "x; --",
                                                       "main.x", "", ".", "a..b", "\x00"]), col_names),
       rows=st.lists(st.tuples(ids, texts), min_size=1, max_size=5), id_col=col_names, text_col=col_names)
def test_duckdb_table_names_are_quoted_and_round_trip(real, asked, rows, id_col, text_col):
    """A configured table name is an identifier, never SQL: the sentinel table x survives and the
    named table's rows come back exactly, or the error names source.table / a column field."""
    assume(id_col != text_col and real.lower() != "x")
    table = real if asked is None else asked
    id_values, text_values = [r[0] for r in rows], [r[1] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "src.duckdb")
        with duckdb.connect(db) as con:
            con.execute("CREATE TABLE x (v INTEGER)")
            con.execute("INSERT INTO x VALUES (42)")
            con.execute(f"CREATE TABLE {_q(real)} ({_q(id_col)} VARCHAR, {_q(text_col)} VARCHAR)")
            con.executemany(f"INSERT INTO {_q(real)} VALUES (?, ?)", list(zip(id_values, text_values)))
        source = ExampleSource(kind="duckdb_table", database=db, table=table, id_column=id_col,
                               text_column=text_col, num_shards=1)
        got = _load(source, "shard-0")
        with duckdb.connect(db, read_only=True) as con:
            assert con.execute("SELECT v FROM x").fetchall() == [(42,)]
            assert con.execute(f"SELECT count(*) FROM {_q(real)}").fetchone()[0] == len(rows)
    valid = (table == real and "." not in real and len(set(id_values)) == len(id_values)
             and all(t.strip() for t in text_values))  # blank text is refused from every source alike
    if valid:
        assert not isinstance(got, Exception), f"valid table refused: {got}"
        assert sorted(zip(got.column("example_id").to_pylist(), got.column("text").to_pylist())) == sorted(rows)
    elif isinstance(got, Exception):
        assert re.search(r"source\.(table|id_column|text_column)", str(got)), str(got)
    else:  # a dotted name read as schema.table, or the sentinel itself: only ever the exact rows of one table
        assert table in (real, "main.x", "x") or "." in table


# ---- 2. storage ------------------------------------------------------------------------
PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]*")
store_names = st.one_of(st.sampled_from(["ok", "_x", "a\n", "../x", "a/b", "..", "x y", "a;DROP", 'a"b', "", "é"]),
                        st.text(_chars, max_size=12))
partition_keys = st.one_of(st.none(), st.sampled_from(["a", "p-1", "a=1.b", "../x", "..", ".hidden", "a/../../b",
                                                       "a\n", "/abs", "a\\b", "x" * 201, "", "🙂"]),
                           st.text(_chars, max_size=12))


@FAST
@given(name=store_names, key=partition_keys)
def test_store_writes_only_safe_names_inside_its_root(name, key):
    """Plain names and safe keys are stored under the root; anything else is a ValueError naming
    `table name` / `partition key`, and no file appears outside the root."""
    ok_name = PLAIN.fullmatch(name) is not None
    ok_key = key is None or (SAFE_KEY.fullmatch(key) is not None and len(key) <= 200)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "outer"
        store = CurationStore(database_path=str(base / "db" / "curation.duckdb"))
        try:
            path = store.write(name, pa.table({"v": [1, 2]}), key)
        except ValueError as exc:
            named = re.match(r"(table name|partition key): ", str(exc))
            assert named, str(exc)
            assert not (ok_name if named.group(1) == "table name" else ok_key), f"{name!r}/{key!r}: {exc}"
        else:
            assert ok_name and ok_key, f"accepted {name!r} / {key!r}"
            assert path.resolve().parent == store.root / name
            assert store.read(name, None if key is None else [key]).column("v").to_pylist() == [1, 2]
        outside = [p for p in Path(tmp).rglob("*") if p.is_file()
                   and not p.is_relative_to(store.root) and p != store.db_path
                   and p.parent != store.view_markers]
        assert outside == []


# ---- 3. configuration ------------------------------------------------------------------
GOOD_CONFIG = {"centroids": {"config": {"n_clusters": 3}}, "subsets": {"config": {"budget": 6}}}


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    """One successful core run over 2 Parquet shards x 30 rows (d=8, precomputed vectors)."""
    base = tmp_path_factory.mktemp("good")
    data = base / "in"
    data.mkdir()
    _write(data / "a.parquet", [f"a{i}" for i in range(30)], _vectors(30, 0))
    _write(data / "b.parquet", [f"b{i}" for i in range(30)], _vectors(30, 1))
    source = ExampleSource(kind="files", path=str(data / "*.parquet"), embedding_column="vec")
    store = CurationStore(database_path=str(base / "db" / "curation.duckdb"))
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance, make_resources(store, source), GOOD_CONFIG, log=lambda _: None, extras=False)
        yield base / "db", source, instance


nasty_numbers = st.sampled_from([0, -1, -3, 0.0, -0.5, 1.5, 2.0, float("nan"), float("inf"), float("-inf"),
                                 10**12, 2**63, 1e300, True, "3"])
PARAMS = {  # op -> {parameter: values, mostly bad}
    "subsets": {"budget": st.one_of(nasty_numbers, st.integers(-2, 70)),
                "budget_fraction": st.one_of(nasty_numbers, st.floats(-1, 2))},
    "centroids": {"n_clusters": st.one_of(nasty_numbers, st.integers(-2, 70)),
                  "n_iter": st.one_of(nasty_numbers, st.integers(-2, 3)),
                  "training_sample_size": st.one_of(nasty_numbers, st.integers(-2, 70)),
                  "pilot_size": st.one_of(nasty_numbers, st.integers(-2, 70))},
    "sensitivities": {"lambda_": st.one_of(nasty_numbers, st.floats(-2, 5)),
                      "z": st.one_of(nasty_numbers, st.floats(-2, 5))},
    "representative_losses": {"representatives_per_cluster": st.one_of(nasty_numbers, st.integers(-2, 40))},
}


# Found by this property, in asset code this change may not touch: huge finite values reach
# numpy / faiss / matplotlib unchecked and fail with errors that do not name the parameter.
KNOWN_UNNAMED: set = set()  # found by the property once (z, representatives_per_cluster, n_iter); now bounded


def _huge(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and abs(value) > 10**6


@st.composite
def asset_configs(draw):
    op = draw(st.sampled_from(sorted(PARAMS)))
    param = draw(st.sampled_from(sorted(PARAMS[op])))
    value = draw(PARAMS[op][param].filter(lambda v: not ((op, param) in KNOWN_UNNAMED and _huge(v))))
    return op, param, value


def _run_case(good_store, op, param, value):
    db_dir, source, instance = good_store
    config = {k: {"config": dict(v["config"])} for k, v in GOOD_CONFIG.items()}
    config.setdefault(op, {"config": {}})["config"][param] = value
    if param == "budget_fraction":  # an explicit budget would win over it
        del config["subsets"]["config"]["budget"]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "db"
        shutil.copytree(db_dir, copy)
        store = CurationStore(database_path=str(copy / "curation.duckdb"))
        before = snapshot(copy)
        try:
            run_pipeline(instance, make_resources(store, source), config, log=lambda _: None, extras=False)
        except Exception as exc:  # noqa: BLE001
            assert snapshot(copy) == before, f"{op}.{param}={value!r} failed but changed stored files"
            msg = f"{exc} {exc.__cause__ or ''}"
            assert param in msg, f"{op}.{param}={value!r}: error does not name it: {type(exc).__name__}: {msg[:500]}"
        else:
            assert not (isinstance(value, float) and not math.isfinite(value)), f"{op}.{param}={value!r} accepted"
            w = store.query("SELECT sum(weight) AS w FROM sensitivity_subset").column("w")[0].as_py()
            assert math.isfinite(w) and w > 0


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(case=asset_configs())
def test_bad_parameters_are_named_and_nothing_stored_changes(good_store, case):
    """Each parameter value either runs or fails naming the parameter, with every stored byte as before."""
    _run_case(good_store, *case)


@pytest.mark.parametrize("op, param, value", [("sensitivities", "z", 10**12),
                                              ("representative_losses", "representatives_per_cluster", 10**12),
                                              ("centroids", "n_iter", 10**12)])
def test_known_unnamed_huge_parameters(good_store, op, param, value):
    """Falsifying examples the property found: huge values used to reach numpy/faiss/matplotlib unchecked."""
    _run_case(good_store, op, param, value)
