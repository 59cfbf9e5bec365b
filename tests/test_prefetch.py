"""The per-shard loops read the next shard in a thread: order, errors and memory stay as if serial."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from curation_assets.stored_inputs import prefetched


def test_shards_come_in_order_with_at_most_the_next_one_read_ahead():
    started, inflight, peak = [], [0], [0]
    lock = threading.Lock()

    def read(key):
        with lock:
            started.append(key)
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.01)
        with lock:
            inflight[0] -= 1
        return key * 2

    seen = []
    for key, value in prefetched([1, 2, 3, 4], read):
        assert value == key * 2
        assert started[-1] <= key + 1  # never more than one shard ahead of the caller
        seen.append(key)
    assert seen == [1, 2, 3, 4] and started == [1, 2, 3, 4] and peak[0] == 1


def test_a_failed_read_surfaces_at_its_shard_and_nothing_after_it_is_read():
    started = []

    def read(key):
        started.append(key)
        if key == "b":
            raise ValueError("shard 'b': broken")
        return key

    seen = []
    with pytest.raises(ValueError, match="shard 'b'"):
        for key, _ in prefetched(["a", "b", "c", "d"], read):
            seen.append(key)
    assert seen == ["a"] and "c" not in started and "d" not in started
    assert list(prefetched([], read)) == []


def test_a_shards_vectors_stream_in_order_and_must_match_its_id_count(tmp_path):
    """vector_batches yields the stored vectors batch by batch, and refuses (in one line naming
    the shard) a file holding more or fewer vectors than the shard has ids."""
    import numpy as np

    from curation_assets.arrays import embedding_table
    from curation_assets.stored_inputs import vector_batches
    from resources import CurationStore

    store = CurationStore(database_path=str(tmp_path / "c.duckdb"))
    x = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    store.write("embeddings", embedding_table(pa.array(["a", "b", "c"]), x), "s0")
    assert np.array_equal(np.concatenate(list(vector_batches(store, "s0", 3))), x)
    for n, said in ((2, "more than 3 vectors for 2"), (4, "3 vectors for 4")):
        with pytest.raises(ValueError, match=f"embeddings of shard 's0': {said} example ids"):
            list(vector_batches(store, "s0", n))
