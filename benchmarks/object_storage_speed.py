"""The store on s3:// against the same store on disk, same run, same machine.

    .venv/bin/python benchmarks/object_storage_speed.py [--n 200000] [--shards 4] [--out DIR]

The bucket is moto's S3 server on localhost (a test extra): it measures what the store adds
(whole-object uploads from memory, footers read over HTTP, DuckDB reading through fsspec), not a
real service's latency or bandwidth. Rows: writing and reading one shard of n/shards x 384
float32 embeddings (best of 3), and the core graph on n precomputed vectors in `shards` files
(one run from empty, one with nothing to do).
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import best, emit, format_table  # noqa: E402

from curation_assets.arrays import embedding_matrix, embedding_table  # noqa: E402
from resources import CurationStore, ExampleSource  # noqa: E402

os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_EC2_METADATA_DISABLED": "true"})


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def write_inbox(inbox: Path, n: int, shards: int) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 384)).astype(np.float32) * 3
    per = n // shards
    for s in range(shards):
        x = centers[rng.integers(0, 20, per)] + rng.normal(size=(per, 384)).astype(np.float32)
        pq.write_table(pa.table({"id": [f"s{s}-{i}" for i in range(per)],
                                 "vec": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 384)}),
                       inbox / f"s{s}.parquet")


def run_graph(store: CurationStore, inbox: Path) -> int:
    from dagster import DagsterInstance

    from curation_assets.definitions import default_resources
    from curation_assets.pipeline import run_pipeline

    source = ExampleSource(kind="files", path=str(inbox / "*.parquet"), embedding_column="vec")
    with DagsterInstance.ephemeral() as instance:
        return len(run_pipeline(instance, default_resources(source=source, store=store),
                                {"centroids": {"config": {"n_clusters": 100, "seed": 0}}},
                                log=lambda _: None, extras=False))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--dir", default="/tmp/object-storage-speed")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import boto3
    from moto.server import ThreadedMotoServer

    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    (root / "inbox").mkdir(parents=True)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="bench")
    url = f"s3://bench/{{}}?region=us-east-1&endpoint_override={host}:{port}&scheme=http"
    try:
        per = args.n // args.shards
        x = np.random.default_rng(1).normal(size=(per, 384)).astype(np.float32)
        table = embedding_table(pa.array([f"e{i}" for i in range(per)]), x)
        mb = x.nbytes / 2**20
        stores = {"disk (baseline)": CurationStore(database_path=str(root / "disk" / "c.duckdb")),
                  "s3:// (moto)": CurationStore(database_path=str(root / "s3" / "c.duckdb"),
                                                tables_dir=url.format("shard"))}
        rows, base = [], {}
        for label, store in stores.items():
            w, _ = best(lambda: store.write("embeddings", table, "s0", compression="none"))
            r, y = best(lambda: embedding_matrix(store.read("embeddings", ["s0"], columns=["embedding"])
                                                 .column("embedding")))
            assert np.array_equal(x, y)
            base.setdefault("w", w), base.setdefault("r", r)
            rows += [[f"write one shard, {label}", f"{w:.2f}", f"{mb / w:,.0f}", f"{w / base['w']:.2f}"],
                     [f"read one shard, {label}", f"{r:.2f}", f"{mb / r:,.0f}", f"{r / base['r']:.2f}"]]
        write_inbox(root / "inbox", args.n, args.shards)
        graphs = {"disk (baseline)": CurationStore(database_path=str(root / "gdisk" / "c.duckdb")),
                  "s3:// (moto)": CurationStore(database_path=str(root / "gs3" / "c.duckdb"),
                                                tables_dir=url.format("graph"))}
        for label, store in graphs.items():
            first, _ = timed(lambda: run_graph(store, root / "inbox"))
            again, runs = timed(lambda: run_graph(store, root / "inbox"))
            assert runs == 0, "the second run should find everything current"
            base.setdefault("g1", first), base.setdefault("g2", again)
            rows += [[f"core graph from empty, {label}", f"{first:.1f}", "", f"{first / base['g1']:.2f}"],
                     [f"core graph, nothing to do, {label}", f"{again:.1f}", "", f"{again / base['g2']:.2f}"]]
        a = graphs["disk (baseline)"].read_latest_version("sensitivity_subset").select(["example_id", "weight"])
        b = graphs["s3:// (moto)"].read_latest_version("sensitivity_subset").select(["example_id", "weight"])
        same = a.sort_by("example_id").equals(b.sort_by("example_id"))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    text = (f"{args.n:,} x 384 float32 in {args.shards} shards; one shard is {mb:,.0f} MB of vectors. "
            f"Same subset on disk and on s3://: {same}\n\n"
            + format_table(["operation", "seconds", "MB/s", "time vs disk"], rows))
    emit(text, args.out, "object_storage_speed.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
