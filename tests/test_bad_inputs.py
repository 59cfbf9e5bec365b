"""Each bad input gets a clear error naming it, raised before anything stored is overwritten."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from conftest import D, make_resources, snapshot
from conftest import clustered_vectors as _vectors
from conftest import write_examples as _write
from curation_assets.assets import centroids, embeddings, raw_examples, subsets
from curation_assets.assets import all_assets as ALL_ASSETS
from curation_assets.pipeline import run_pipeline
from resources import CurationStore, ExampleSource


def _vector_shards(tmp_path, **rows):
    """One Parquet shard of precomputed vectors per name (`a=12` -> a.parquet, ids a0..a11), the
    source reading them and an empty store: (data folder, source, store)."""
    data = tmp_path / "in"
    data.mkdir()
    for i, (name, n) in enumerate(rows.items()):
        _write(data / f"{name}.parquet", [f"{name}{j}" for j in range(n)], _vectors(n, i))
    source = ExampleSource(kind="files", path=str(data / "*.parquet"), embedding_column="vec")
    return data, source, CurationStore(database_path=str(tmp_path / "db" / "curation.duckdb"))


@pytest.fixture
def good(tmp_path):
    """A stored, successful run over two Parquet shards with precomputed vectors (no model)."""
    data, source, store = _vector_shards(tmp_path, a=12, b=12)
    instance = DagsterInstance.ephemeral()
    config = {"centroids": {"config": {"n_clusters": 3}}, "subsets": {"config": {"budget": 6}}}
    run_pipeline(instance, make_resources(store, source), config, log=lambda _: None)
    yield instance, store, source, data
    instance.dispose()


def _shard(instance, store, source, key, assets=(raw_examples,)):
    return materialize(ALL_ASSETS, selection=[k for a in assets for k in a.keys], partition_key=key,
                       instance=instance, resources=make_resources(store, source))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: _write(d / "a.parquet", ["a0", "a1", "a0"], _vectors(3, 2)),
         r"source.id_column='id': duplicate ids in shard 'a': \['a0'\]"),
        (lambda d: _write(d / "a.parquet", ["b3", "x1"], _vectors(2, 2)),
         r"ids in shard 'a' already exist in other shards: 'b3' \(shard b\)"),
        (lambda d: _write(d / "a.parquet", [], np.zeros((0, D))),
         r"shard 'a' holds no examples"),
        (lambda d: pq.write_table(pa.table({"key": ["x"], "text": ["t"], "vec": [[1.0] * D]}), d / "a.parquet"),
         r"source.id_column='id': column not found in .*a.parquet; available columns: \['key', 'text', 'vec'\]"),
        (lambda d: _write(d / "a.parquet", ["a0", "a1"], np.array([[np.nan] * D, [0.0] * D])),
         r"source.embedding_column='vec': 1 embedding\(s\) in shard 'a' contain NaN"),
        (lambda d: pq.write_table(pa.table({"id": ["a0", "a1"], "text": ["x", "y"],
                                            "vec": [[1.0] * D, [1.0] * (D + 1)]}), d / "a.parquet"),
         r"source.embedding_column='vec': embeddings in shard 'a' differ in dimension"),
        (lambda d: pq.write_table(pa.table({"id": ["a0", "a1"], "text": ["x", None], "vec": [[1.0] * D, None]}),
                                  d / "a.parquet"),
         r"source.embedding_column='vec': 1 example\(s\) in shard 'a' have no embedding"),
    ],
    ids=["duplicate-ids", "duplicate-across-shards", "empty", "missing-id-column", "nan-embedding",
         "ragged-embedding", "null-embedding"],
)
def test_bad_shard_is_refused_and_nothing_stored_changes(good, mutate, match):
    instance, store, source, data = good
    before = snapshot(store.root)
    mutate(data)
    with pytest.raises(Exception, match=match):
        _shard(instance, store, source, "a")
    assert snapshot(store.root) == before


def test_missing_text_column_is_named(tmp_path, store, instance):
    _write(tmp_path / "x.csv", ["1", "2"], texts=False, fmt="csv")
    source = ExampleSource(kind="files", path=str(tmp_path / "*.csv"))
    with pytest.raises(Exception, match=r"source.text_column='text': column not found .*available columns: \['id', 'label'\]"):
        run_pipeline(instance, make_resources(store, source), log=lambda _: None)
    assert not store.root.exists()


def test_missing_files_are_named(tmp_path, store, instance):
    source = ExampleSource(kind="files", path=str(tmp_path / "nowhere" / "*.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"source.path: no files match '.*nowhere/\*.jsonl'"):
        run_pipeline(instance, make_resources(store, source), log=lambda _: None)
    assert not store.root.exists()


def test_wrong_dimension_across_shards_is_refused_before_the_shard_is_written(good):
    """Materialised alone (as from the UI), a shard whose vectors have another dimension than the
    stored shards' is refused by raw_examples itself: it never reaches the store."""
    instance, store, source, data = good
    _write(data / "c.parquet", ["c0", "c1", "c2"], np.ones((3, D + 2)))
    instance.add_dynamic_partitions("shards", ["c"])
    before = snapshot(store.root)
    with pytest.raises(Exception, match=rf"shard 'c' has {D + 2}-dimensional float vectors, but shard\(s\) "
                                        rf"\['a', 'b'\] in the store have {D}-dimensional"):
        _shard(instance, store, source, "c", (raw_examples, embeddings))
    assert snapshot(store.root) == before


@pytest.mark.parametrize("n_clusters", [25, 1000])
def test_more_clusters_than_examples_is_refused(good, n_clusters):
    instance, store, source, _ = good
    before = snapshot(store.root)
    with pytest.raises(Exception, match=rf"centroids.n_clusters: {n_clusters} is larger than the number of examples \(24\)"):
        materialize(ALL_ASSETS, selection=[*centroids.keys], instance=instance, resources=make_resources(store, source),
                    run_config={"ops": {"centroids": {"config": {"n_clusters": n_clusters}}}})
    assert snapshot(store.root) == before


@pytest.mark.parametrize(
    "config, match",
    [
        ({"budget": 0}, r"budget\n +Input should be greater than or equal to 1"),  # declared on the field
        ({"budget": -3}, r"budget\n +Input should be greater than or equal to 1"),
        ({"budget": 25}, r"budget: 25 is larger than the number of examples \(24\)"),
        ({"budget_fraction": 0.0}, r"budget_fraction\n +Input should be greater than 0"),
        ({"budget_fraction": 1.5}, r"budget_fraction\n +Input should be less than or equal to 1"),
        ({"alpha": 1.5}, r"alpha\n +Input should be less than or equal to 1"),
        ({"sampling": "adaptive", "rounds": 0}, r"rounds"),
    ],
)
def test_bad_budget_is_refused_and_the_previous_subset_stays(good, config, match):
    instance, store, source, _ = good
    before = snapshot(store.root)
    previous = store.read_latest_version("sensitivity_subset")
    with pytest.raises(Exception, match=match):
        materialize(ALL_ASSETS, selection=[*subsets.keys], instance=instance, resources=make_resources(store, source),
                    run_config={"ops": {"subsets": {"config": config}}})
    assert snapshot(store.root) == before
    assert store.read_latest_version("sensitivity_subset").equals(previous)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"subsets": {"config": {"budget": 0}}}, "subsets.budget: input should be greater than or equal to 1, got 0"),
        ({"sensitivities": {"config": {"z": 40.0}}}, "sensitivities.z: input should be less than or equal to 16, got 40.0"),
        ({"subset_evaluation": {"config": {"budgets": [0.1, 2.0]}}},
         "subset_evaluation.budgets.1: input should be less than or equal to 1, got 2.0"),
        ({"subsets": {"config": {"bugdet": 5}}}, "subsets.bugdet: not a setting of subsets; it has budget, "),
    ],
)
def test_a_setting_out_of_its_declared_bounds_is_one_line_before_anything_runs(tmp_path, config, message):
    _, source, store = _vector_shards(tmp_path, a=12)
    with DagsterInstance.ephemeral() as instance:
        with pytest.raises(ValueError) as err:
            run_pipeline(instance, make_resources(store, source), config, log=lambda _: None, evaluate=True)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
        assert store.asset_names() == [] and not instance.get_runs()


def test_a_budget_larger_than_the_data_is_refused_before_any_step_runs(tmp_path):
    """The budget is checked against the source's rows once they are admitted: no asset is
    materialised, nothing is stored or left staged (a text source would otherwise embed first)."""
    _, source, store = _vector_shards(tmp_path, a=12, b=8)
    with DagsterInstance.ephemeral() as instance:
        with pytest.raises(ValueError, match=r"^budget: 21 is larger than the number of examples \(20\)"):
            run_pipeline(instance, make_resources(store, source), {"subsets": {"config": {"budget": 21}}},
                         log=lambda _: None)
        assert store.asset_names() == [] and not instance.get_runs()
        assert not (store.root / ".staging").exists()
        assert run_pipeline(instance, make_resources(store, source), {"subsets": {"config": {"budget": 20}}},
                            log=lambda _: None, extras=False)  # all of them is a budget


def test_csv_and_jsonl_sources_work_and_unlabelled_data_gets_the_constant_scorer(tmp_path, store, instance):
    data = tmp_path / "in"
    data.mkdir()
    vecs = _vectors(20, 5)
    _write(data / "p.jsonl", [f"p{i}" for i in range(10)], vecs[:10], labels=False, fmt="jsonl")
    _write(data / "q.jsonl", [f"q{i}" for i in range(10)], vecs[10:], labels=False, fmt="jsonl")
    source = ExampleSource(kind="files", path=str(data / "*.jsonl"), embedding_column="vec")
    run_pipeline(instance, make_resources(store, source),
                 {"centroids": {"config": {"n_clusters": 3}}, "subsets": {"config": {"budget": 5}}}, log=lambda _: None)
    reps = store.query("SELECT DISTINCT scorer, loss FROM representative_losses")
    assert reps.to_pylist() == [{"scorer": "constant", "loss": 1.0}]
    emb = store.query("SELECT example_id, embedding FROM embeddings ORDER BY example_id").to_pylist()
    order = sorted(range(20), key=lambda i: ("p" if i < 10 else "q", str(i % 10)))
    got = np.array([r["embedding"] for r in emb], dtype=np.float32)
    want = vecs[[i for i in order]]
    assert [r["example_id"] for r in emb] == sorted(f"{'p' if i < 10 else 'q'}{i % 10}" for i in range(20))
    assert np.array_equal(got, want)  # precomputed vectors are stored as given; no model ran


@pytest.mark.parametrize("name, content, settings, message", [
    ("latin.csv", "id,text\n1,caf\xe9 au lait\n2,ok\n".encode("latin-1"), {},
     r"source.path: .*latin.csv is not UTF-8 text \(line \d+\); re-save it as UTF-8"),
    ("cut.parquet", None, {}, r"source.path: .*cut.parquet is not a readable Parquet file \(truncated or corrupt\)"),
    ("empty.csv", b"", {}, r"source.path: .*empty.csv is an empty file \(0 bytes\); fill it or remove it"),
    ("mixed.csv", b"id,text,label\r\nt1,hello there,a\r\nt2,good day,b\r\nt3,more words,a\nt4,x y,b\n", {},
     r"source.path: .*mixed.csv: no CSV dialect fits the whole file \(its lines end both in CRLF and LF\); "
     r"make every row alike \(for example: dos2unix mixed.csv\)"),
    ("x.csv", b"id,text,label\n1,a,x\n2,b,y\n", {"label_column": "topic"},
     r"source.label_column='topic': column not found in .*x.csv; available columns: \['id', 'text', 'label'\]"),
    ("blank.jsonl", b'{"id": "1", "text": "  "}\n{"id": "2", "text": ""}\n{"id": "3", "text": "ok"}\n', {},
     r"source.text_column='text': 2 example\(s\) in shard 'blank' have no text \(null, empty or only whitespace\), "
     r"first ids \['1', '2'\]"),
], ids=["latin-1", "truncated-parquet", "0-byte-csv", "mixed-line-endings-csv", "missing-label-column",
                        "blank-jsonl-texts"])
def test_unreadable_files_get_one_line_naming_file_problem_and_fix(tmp_path, store, instance, name, content,
                                                                   settings, message):
    if content is None:  # half of a valid Parquet file
        pq.write_table(pa.table({"id": ["1", "2"], "text": ["a", "b"]}), tmp_path / "whole.parquet")
        data = (tmp_path / "whole.parquet").read_bytes()
        content = data[: len(data) // 2]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(content)
    source = ExampleSource(kind="files", path=str(tmp_path / "in" / name), **settings)
    with pytest.raises(ValueError, match=message) as err:
        run_pipeline(instance, make_resources(store, source), log=lambda _: None)
    assert "\n" not in str(err.value)
    assert not store.root.exists() and instance.get_dynamic_partitions("shards") == []


def test_parquet_source_missing_column_is_one_line_before_anything_is_written(tmp_path, store, instance):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ["1", "2"], "text": ["a b", "c d"], "label": ["x", "y"],
                             "vec": [[0.1, 0.2], [0.3, 0.4]]}), tmp_path / "in" / "p.parquet")
    source = ExampleSource(kind="files", path=str(tmp_path / "in" / "*.parquet"), embedding_column="emb")
    with pytest.raises(ValueError, match=r"^source.embedding_column='emb': column not found in .*p.parquet; "
                                         r"available columns: \['id', 'text', 'label', 'vec'\]$"):
        run_pipeline(instance, make_resources(store, source), log=lambda _: None)
    assert not store.root.exists() and instance.get_dynamic_partitions("shards") == []
