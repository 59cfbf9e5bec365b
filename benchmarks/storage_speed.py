"""Embedding storage: the store's Parquet write and read against np.save / np.load.

    .venv/bin/python benchmarks/storage_speed.py [--n 1000000] [--dir /tmp/storage-speed] [--out DIR]

Writes n x 384 float32 vectors once through `CurationStore.write` (uncompressed Parquet, a
fixed-size list column, atomic temp + fsync + rename, as the `embeddings` asset does) and reads
them back with `CurationStore.read` + `embedding_matrix` (chunks streamed into one preallocated
array). The baseline is np.save / np.load of the same array in the same folder, same run, with
an fsync on the write so both pay for reaching the disk. Best of 3 each; the page cache is not
dropped (no root needed), so reads measure the in-memory decode path.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import best, emit, format_table  # noqa: E402

from curation_assets.arrays import embedding_matrix, embedding_table  # noqa: E402
from resources import CurationStore  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dir", default="/tmp/storage-speed")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    x = np.random.default_rng(0).normal(size=(args.n, 384)).astype(np.float32)
    mb = x.nbytes / 2**20
    store = CurationStore(database_path=str(root / "db" / "c.duckdb"))
    table = embedding_table(pa.array([f"e{i}" for i in range(args.n)]), x)

    def np_save():
        path = root / "x.npy"
        with open(path, "wb") as fh:
            np.save(fh, x)
            fh.flush()
            os.fsync(fh.fileno())

    t_np_w, _ = best(np_save)
    t_np_r, y = best(lambda: np.load(root / "x.npy"))
    assert np.array_equal(x, y)
    t_pq_w, _ = best(lambda: store.write("embeddings", table, "s0", compression="none"))
    t_pq_r, z = best(lambda: embedding_matrix(store.read("embeddings", ["s0"], columns=["embedding"]).column("embedding")))
    assert np.array_equal(x, z)
    rows = [
        ["np.save + fsync (baseline)", f"{t_np_w:.2f}", f"{mb / t_np_w:,.0f}", "1.00"],
        ["CurationStore.write (Parquet, uncompressed)", f"{t_pq_w:.2f}", f"{mb / t_pq_w:,.0f}", f"{t_pq_w / t_np_w:.2f}"],
        ["np.load (baseline)", f"{t_np_r:.2f}", f"{mb / t_np_r:,.0f}", "1.00"],
        ["CurationStore.read + embedding_matrix", f"{t_pq_r:.2f}", f"{mb / t_pq_r:,.0f}", f"{t_pq_r / t_np_r:.2f}"],
    ]
    text = (f"{args.n:,} x 384 float32 ({mb:,.0f} MB of vectors; the store also writes the ids), best of 3\n\n"
            + format_table(["operation", "seconds", "MB/s", "time vs baseline"], rows))
    emit(text, args.out, "storage_speed.txt")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
