"""subset_export on a small real pipeline: its files read back the same in every common reader,
and the training helpers use the weights as documented (real torch, no fakes)."""


import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from conftest import make_resources, small_bbc
from curation_assets.assets.subset_export import subset_export
from curation_assets.assets import all_assets as ALL_ASSETS
from curation_assets.pipeline import run_pipeline
from curation_assets.training import load_subset, loss_weights, weighted_sampler
from resources import CurationStore

CONFIG = {
    "centroids": {"config": {"pilot_size": 20}},
    "subsets": {"config": {"budget_fraction": 0.25, "seed": 7}},
}


def _export(instance, resources, subset="sensitivity_subset", raise_on_error=True):
    run_config = {"ops": {"subset_export": {"config": {"subset": subset}}}}
    return materialize([*ALL_ASSETS, subset_export], selection=[subset_export.key], instance=instance,
                       resources=resources, run_config=run_config, raise_on_error=raise_on_error)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    store = CurationStore(database_path=str(root / "curation.duckdb"))
    resources = make_resources(store, small_bbc(per_shard=20, num_shards=2))
    instance = DagsterInstance.ephemeral()
    assert all(r.success for r in run_pipeline(instance, resources, CONFIG, log=lambda _: None, extras=False))
    assert _export(instance, resources).success
    subset = store.read_latest_version("sensitivity_subset").to_pandas()
    subset = subset.sort_values("example_id", kind="stable").reset_index(drop=True)
    raw = store.query("SELECT example_id, text, label FROM raw_examples").to_pandas().set_index("example_id")
    yield instance, store, resources, subset, raw
    instance.dispose()


def _files(store, name="sensitivity_subset"):
    folder = store.root / "subset_export" / "files"
    return folder / f"{name}.parquet", folder / f"{name}.jsonl"


def _assert_rows(df, subset, raw):
    """df holds exactly the subset's rows, in example_id order, with raw_examples' texts."""
    assert list(df.columns) == ["example_id", "text", "label", "weight", "draws", "probability", "cluster_id"]
    assert list(df["example_id"]) == list(subset["example_id"])
    assert df["example_id"].is_unique and len(df) == len(subset) > 0
    np.testing.assert_allclose(np.asarray(df["weight"], dtype=np.float64), subset["weight"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(df["probability"], dtype=np.float64), subset["probability"],
                               rtol=1e-12, atol=0)
    assert list(df["draws"]) == list(subset["draws"])
    assert list(df["cluster_id"]) == list(subset["cluster_id"])
    assert list(df["text"]) == list(raw.loc[subset["example_id"], "text"])
    assert list(df["label"]) == list(raw.loc[subset["example_id"], "label"])


def test_metadata_and_parquet_schema(exported):
    instance, store, _, subset, _ = exported
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = instance.get_latest_materialization_event(AssetKey("subset_export")).asset_materialization.metadata
    assert meta["dagster/row_count"].value == meta["subset_rows"].value == len(subset)
    assert meta["weight_sum"].value == pytest.approx(subset["weight"].sum(), rel=1e-12)
    assert meta["subset_run"].value == subset["run"].iloc[0]
    parquet, jsonl = _files(store)
    assert meta["parquet_path"].value == str(parquet) and meta["jsonl_path"].value == str(jsonl)
    assert meta["preview"].value.count("\n") == 1 + min(5, len(subset))
    assert sorted(p.name for p in parquet.parent.iterdir()) == [jsonl.name, parquet.name]  # no temp files left
    schema = pq.read_schema(parquet)
    assert schema.field("weight").type == pa.float64() and schema.field("text").type == pa.string()


def test_pandas_pyarrow_and_jsonl_read_back_the_subset(exported):
    import pandas as pd
    import pyarrow.parquet as pq

    _, store, _, subset, raw = exported
    parquet, jsonl = _files(store)
    _assert_rows(pd.read_parquet(parquet), subset, raw)
    _assert_rows(pq.read_table(parquet).to_pandas(), subset, raw)
    _assert_rows(pd.read_json(jsonl, lines=True, dtype={"example_id": str, "label": str}, precise_float=True),
                 subset, raw)
    _assert_rows(load_subset(parquet), subset, raw)
    _assert_rows(load_subset(jsonl), subset, raw)


def test_polars_reads_the_parquet(exported):
    pl = pytest.importorskip("polars")
    _, store, _, subset, raw = exported
    parquet, jsonl = _files(store)
    _assert_rows(pl.read_parquet(parquet).to_pandas(), subset, raw)
    _assert_rows(pl.read_ndjson(jsonl).to_pandas(), subset, raw)


def test_hugging_face_datasets_reads_both_files_offline(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    _, store, _, subset, raw = exported
    parquet, jsonl = _files(store)
    ds = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(tmp_path / "hf"))
    _assert_rows(ds.to_pandas(), subset, raw)
    ds = datasets.load_dataset("json", data_files=str(jsonl), split="train", cache_dir=str(tmp_path / "hf"))
    _assert_rows(ds.to_pandas(), subset, raw)


def test_unknown_subset_fails_naming_the_field_and_writes_nothing(exported, tmp_path):
    instance, store, resources, _, _ = exported
    before = sorted(p.name for p in _files(store)[0].parent.iterdir())
    result = _export(instance, resources, subset="raw_examples", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "subset_export.subset" in message and "'raw_examples'" in message and "uniform_subset" in message
    assert sorted(p.name for p in _files(store)[0].parent.iterdir()) == before


def test_other_subset_exports_beside_the_first(exported):
    import pandas as pd

    instance, store, resources, _, raw = exported
    assert _export(instance, resources, subset="uniform_subset").success
    uniform = store.read_latest_version("uniform_subset").to_pandas()
    uniform = uniform.sort_values("example_id", kind="stable").reset_index(drop=True)
    _assert_rows(pd.read_parquet(_files(store, "uniform_subset")[0]), uniform, raw)
    assert _files(store)[0].exists()  # the sensitivity export is left in place


# ---- training helpers ---------------------------------------------------------------------------

WEIGHTS = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 0.5])


def test_sampler_draws_in_proportion_to_the_weights():
    torch = pytest.importorskip("torch")
    n = 20_000
    sampler = weighted_sampler(WEIGHTS, num_samples=n, seed=5)
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler) and sampler.replacement
    draws = np.array(list(sampler))
    assert draws.size == n
    counts = np.bincount(draws, minlength=WEIGHTS.size)
    expected = n * WEIGHTS / WEIGHTS.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # chi-square, 5 d.o.f.: p = 0.001
    uniform = np.full(WEIGHTS.size, n / WEIGHTS.size)
    assert float(((uniform - expected) ** 2 / expected).sum()) > 1000  # a uniform sampler would fail
    assert list(weighted_sampler(WEIGHTS, num_samples=500, seed=5)) == list(weighted_sampler(WEIGHTS, 500, seed=5))
    assert list(weighted_sampler(WEIGHTS, 500, seed=5)) != list(weighted_sampler(WEIGHTS, 500, seed=6))
    assert len(weighted_sampler(WEIGHTS)) == WEIGHTS.size


def test_loss_weights_average_one_and_keep_the_ratios():
    torch = pytest.importorskip("torch")
    w = loss_weights(WEIGHTS)
    assert w.dtype == torch.float32 and w.shape == (WEIGHTS.size,)
    assert float(w.double().mean()) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(w.numpy() / w.numpy()[0], WEIGHTS / WEIGHTS[0], rtol=1e-6)
    # The weighted mean of a loss over the subset is the Hajek estimate sum(w l) / sum(w).
    loss = torch.tensor([0.3, 1.2, 0.7, 2.0, 0.1, 5.0])
    assert float((w * loss).mean()) == pytest.approx(float((WEIGHTS * loss.numpy()).sum() / WEIGHTS.sum()), rel=1e-6)
    assert float(loss_weights(WEIGHTS, normalize="sum").sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("bad", [[], [1.0, -2.0], [1.0, float("nan")], [1.0, 0.0], [1.0, float("inf")],
                                 [[1.0, 2.0], [3.0, 4.0]]])
def test_bad_weights_are_refused(bad):
    pytest.importorskip("torch")
    for fn in (weighted_sampler, loss_weights):
        with pytest.raises(ValueError, match="weights"):
            fn(bad)


def test_sampler_from_a_read_only_arrow_column_raises_no_warning(exported):
    """README's snippet passes `subset["weight"].to_numpy()`, a read-only view of Arrow memory."""
    import warnings

    import pyarrow.parquet as pq

    weights = pq.read_table(_files(exported[1])[0]).column("weight").to_numpy()
    assert not weights.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler = weighted_sampler(weights, seed=0)
        assert len(list(sampler)) == weights.size
