"""take_rows reads chosen rows batch by batch: the same rows, in the same order, as reading the
whole file and taking them, wherever they fall against the batch boundaries."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources.parquet_rows import BATCH_ROWS, take_rows

N = 2 * BATCH_ROWS + 100


@pytest.fixture(scope="module")
def parquet_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 4)).astype(np.float32)
    table = pa.table({
        "example_id": pa.array([f"id{i:06d}" for i in range(N)]),
        "label": pa.array([None if i % 7 == 0 else f"c{i % 3}" for i in range(N)]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4),
    })
    path = tmp_path_factory.mktemp("rows") / "shard.parquet"
    pq.write_table(table, path, row_group_size=BATCH_ROWS // 3)  # row groups and batches out of step
    return path


@pytest.mark.parametrize("rows", [
    [0], [N - 1], [BATCH_ROWS - 1, BATCH_ROWS, 2 * BATCH_ROWS],  # either side of each batch boundary
    [5, 3, 5, N - 2, 0],  # any order, repeats
    list(np.random.default_rng(1).choice(N, 500, replace=False)),
    list(range(N)),
])
@pytest.mark.parametrize("columns", [None, ["embedding"], ["label", "example_id"]])
def test_the_rows_a_whole_read_would_take(parquet_path, rows, columns):
    whole = pq.read_table(parquet_path, columns=columns)
    with pq.ParquetFile(parquet_path) as parquet:
        got = take_rows(parquet, rows, columns, "test shard")
    assert got.schema.remove_metadata() == whole.schema.remove_metadata()
    assert got.equals(whole.take(pa.array(rows, pa.int64())).replace_schema_metadata(None))


def test_no_rows_is_an_empty_table_of_the_columns(parquet_path):
    with pq.ParquetFile(parquet_path) as parquet:
        got = take_rows(parquet, [], ["example_id", "embedding"], "test shard")
    assert got.num_rows == 0 and got.column_names == ["example_id", "embedding"]
    assert pa.types.is_fixed_size_list(got.schema.field("embedding").type)


@pytest.mark.parametrize("row", [N, -1])
def test_a_row_outside_the_file_is_one_line_naming_it(parquet_path, row):
    with pq.ParquetFile(parquet_path) as parquet, pytest.raises(IndexError, match=f"test shard: row {row} is out"):
        take_rows(parquet, [0, row], None, "test shard")
