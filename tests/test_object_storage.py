"""The store on object storage: an S3 server on localhost (moto, from PyPI) stands in for a bucket.
The pipeline writes and reads there through the same code as on disk, DuckDB queries it, and an
upload cut short leaves the previous object whole."""

import multiprocessing as mp
import os
import signal
import time

import boto3
import numpy as np
import pyarrow as pa
import pytest
from dagster import DagsterInstance
from moto.server import ThreadedMotoServer

from conftest import clustered_vectors, make_resources, write_examples
from curation_assets.arrays import embedding_table
from curation_assets.pipeline import run_pipeline
from resources import CurationStore, ExampleSource

BUCKET = "curation"
CONFIG = {"centroids": {"config": {"n_clusters": 3, "seed": 1}},
          "subsets": {"config": {"budget_fraction": 0.25, "seed": 1}}}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def s3():
    """(endpoint host:port, a boto3 client to look at the bucket independently of the store)."""
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
    client.create_bucket(Bucket=BUCKET)
    yield f"{host}:{port}", client
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _url(endpoint: str, prefix: str, bucket: str = BUCKET) -> str:
    return f"s3://{bucket}/{prefix}?region=us-east-1&endpoint_override={endpoint}&scheme=http"


def _keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return {o["Key"][len(prefix) + 1:] for page in pages for o in page.get("Contents", [])}


def _normalised(names) -> set[str]:
    """File names with each run's version name replaced (they hold the run id)."""
    return {n.split("/versions/")[0] + "/versions/*" if "/versions/" in n else n for n in names}


def _run(store: CurationStore, inbox, extras: bool = True) -> list:
    """The graph on `inbox`: a local folder, or an s3:// URL of the folder holding the files."""
    glob = f"{inbox.split('?')[0]}/*.parquet?{inbox.split('?')[1]}" if isinstance(inbox, str) else str(inbox / "*.parquet")
    source = ExampleSource(kind="files", path=glob, embedding_column="vec")
    with DagsterInstance.ephemeral() as instance:
        return run_pipeline(instance, make_resources(store, source), CONFIG, log=lambda _: None, extras=extras)


def test_pipeline_on_object_storage_matches_the_same_run_on_disk(tmp_path, s3):
    """Source files and store both in the bucket, against the same files and store on disk."""
    endpoint, client = s3
    inbox, bucket_inbox = tmp_path / "inbox", _url(endpoint, "team/inbox")
    inbox.mkdir()

    def add_shard(shard: int) -> None:
        write_examples(inbox / f"s{shard}.parquet", [f"s{shard}-{i}" for i in range(60)], clustered_vectors(60, shard))
        client.upload_file(str(inbox / f"s{shard}.parquet"), BUCKET, f"team/inbox/s{shard}.parquet")
    for shard in range(2):
        add_shard(shard)
    local = CurationStore(database_path=str(tmp_path / "local" / "c.duckdb"))
    remote = CurationStore(database_path=str(tmp_path / "remote" / "c.duckdb"), tables_dir=_url(endpoint, "team/a"))
    _run(local, inbox)
    _run(remote, bucket_inbox)

    # Every file went to the bucket, under the same names as on disk; none to the local disk.
    local_files = {str(p.relative_to(local.root)) for p in local.root.rglob("*") if p.is_file()}
    assert _normalised(_keys(client, "team/a")) == _normalised(local_files)
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == [".c.duckdb.views", "c.duckdb"]
    assert remote.location == f"s3://{BUCKET}/team/a"
    with pytest.raises(ValueError, match="store.tables_dir is the object-storage URL"):
        remote.root

    # Same seed, same data: the same subset and the same export, wherever they were stored.
    for name in ("sensitivity_subset", "uniform_subset", "balanced_subset", "stratified_subset"):
        cols = ["example_id", "weight", "draws"]
        assert remote.read_latest_version(name).select(cols).equals(local.read_latest_version(name).select(cols)), name
    assert remote.read("embeddings").equals(local.read("embeddings"))
    assert remote.partitions("embeddings") == local.partitions("embeddings") == ["s0", "s1"]

    # DuckDB reads the bucket: through the store's in-memory views and through the database file.
    sql = "SELECT COUNT(*) AS n, ROUND(SUM(probability), 9) AS p FROM sensitivities"
    assert remote.query(sql).to_pylist() == local.query(sql).to_pylist() == [{"n": 120, "p": 1.0}]
    with remote.database() as con:
        assert con.sql("SELECT COUNT(*) FROM sensitivity_subset_history").fetchall()[0][0] == \
            local.read_latest_version("sensitivity_subset").num_rows
        assert "s3://" in con.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'embeddings'").fetchall()[0][0]

    # Provenance lives in the objects' footers, so a second run finds everything current.
    assert _run(remote, bucket_inbox) == []
    # A new shard: only it is embedded and assigned; the shards already in the bucket stay as they are.
    before = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="team/a/embeddings/")["Contents"]}
    add_shard(2)
    ran = _run(remote, bucket_inbox, extras=False)
    after = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="team/a/embeddings/")["Contents"]}
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"team/a/embeddings/s2.parquet"}
    assert ran and remote.read_latest_version("sensitivity_subset").num_rows == 45  # 25% of 180


def test_bad_object_storage_urls_are_named(tmp_path, s3):
    endpoint, _ = s3
    for url, says in [("gs://bucket/x", "is not a local folder or an s3:// URL"),
                      ("s3:///x", "names no bucket")]:
        with pytest.raises(ValueError, match=f"store.tables_dir: .*{says}"):
            CurationStore(database_path=str(tmp_path / "c.duckdb"), tables_dir=url)
    missing = CurationStore(database_path=str(tmp_path / "c.duckdb"), tables_dir=_url(endpoint, "x", "no-such-bucket"))
    with pytest.raises(OSError, match=r"store: could not write s3://no-such-bucket/x/t/_all.parquet"):
        missing.write("t", pa.table({"a": [1]}))
    assert not (tmp_path / "c.duckdb").exists()


def _upload_big(url: str, db: str) -> None:
    """Child: replace the table with one of ~64 MB (a multipart upload of several parts)."""
    rng = np.random.default_rng(0)
    CurationStore(database_path=db, tables_dir=url).write("t", pa.table({"x": rng.random(8_000_000)}),
                                                          compression="none")


def test_upload_killed_midway_leaves_the_previous_object_whole(tmp_path, s3):
    endpoint, client = s3
    url, db = _url(endpoint, "kill"), str(tmp_path / "c.duckdb")
    store = CurationStore(database_path=db, tables_dir=url)
    old = pa.table({"x": np.arange(10, dtype=np.float64)})
    store.write("t", old)
    # A fresh interpreter (spawn): the AWS SDK's threads do not survive a fork.
    child = mp.get_context("spawn").Process(target=_upload_big, args=(url, db))
    child.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.is_alive():
        uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix="kill/").get("Uploads", [])
        if uploads and client.list_parts(Bucket=BUCKET, Key=uploads[0]["Key"],
                                         UploadId=uploads[0]["UploadId"]).get("Parts"):
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    child.join(60)
    assert child.exitcode == -signal.SIGKILL, "the upload finished before a part of it was seen"
    assert store.read("t").equals(old)
    assert _keys(client, "kill") == {"t/_all.parquet"}


def test_duckdb_reads_multi_megabyte_objects_whole(tmp_path, s3):
    """Column chunks of one object read by several DuckDB threads at once (the pipeline's checks
    aggregate over every embedding this way): every byte as stored, every time."""
    endpoint, _ = s3
    remote = CurationStore(database_path=str(tmp_path / "r.duckdb"), tables_dir=_url(endpoint, "big"))
    local = CurationStore(database_path=str(tmp_path / "l.duckdb"))
    rng = np.random.default_rng(0)
    for shard in range(3):
        x = rng.normal(size=(5000, 384)).astype(np.float32)  # 7.7 MB of vectors per object
        table = embedding_table(pa.array([f"{shard}-{i}" for i in range(5000)]), x)
        for store in (remote, local):
            store.write("embeddings", table, f"s{shard}", compression="none")
    sql = ("SELECT len(embedding) AS d, count(*) AS n, sum(list_sum(embedding)) AS total, "
           "sum(embedding[384]) AS last FROM embeddings GROUP BY 1")
    want = local.query(sql).to_pylist()
    for _ in range(5):
        assert remote.query(sql).to_pylist() == want


def test_files_source_in_a_bucket_reads_like_the_same_files_on_disk(tmp_path, s3):
    """CSV and JSON Lines too (DuckDB's readers through the bucket), a recursive glob, and a
    changed object is a changed shard."""
    endpoint, client = s3
    local = tmp_path / "in"
    (local / "sub").mkdir(parents=True)
    write_examples(local / "a.csv", ["1.50", "True", "x"], fmt="csv")
    write_examples(local / "sub" / "b.jsonl", ["7", "8"], fmt="jsonl")
    for f in ("a.csv", "sub/b.jsonl"):
        client.upload_file(str(local / f), BUCKET, f"src/in/{f}")
    client.put_object(Bucket=BUCKET, Key="src/in/notes.txt", Body=b"not matched")
    on_disk = ExampleSource(kind="files", path=str(local / "**" / "*.*[lv]"))
    glob = f"s3://{BUCKET}/src/in/**/*.*[lv]?region=us-east-1&endpoint_override={endpoint}&scheme=http"
    in_bucket = ExampleSource(kind="files", path=glob)
    assert in_bucket.list_shards() == on_disk.list_shards() == ["a", "b"]
    for shard in ("a", "b"):
        assert in_bucket.load_shard(shard).equals(on_disk.load_shard(shard))
    before = in_bucket.shard_fingerprint("a")
    assert before == in_bucket.shard_fingerprint("a")
    time.sleep(1.1)  # S3 times are in whole seconds
    client.put_object(Bucket=BUCKET, Key="src/in/a.csv", Body=(local / "a.csv").read_bytes() + b"y,text of y,a\n")
    assert in_bucket.shard_fingerprint("a") != before
    assert in_bucket.load_shard("a").num_rows == 4
    with pytest.raises(FileNotFoundError, match="source.path: no files match"):
        ExampleSource(kind="files", path=glob.replace("/in/", "/nothing/")).list_shards()
    with pytest.raises(ValueError, match="source.path: 'gs://b/x.csv' is not a local folder or an s3:// URL"):
        ExampleSource(kind="files", path="gs://b/x.csv")
