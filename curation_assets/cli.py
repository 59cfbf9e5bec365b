"""`curate`: run the whole pipeline on the default (or your) data, or open the Dagster UI."""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from .instance import ensure_store_home, keep_matplotlib_cache_out_of_home

DEFAULT_DATABASE = "data/curation.duckdb"
UI_STOP_GRACE_S = 6.0  # after a stop signal, how long dagster dev may take before it is killed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="curate", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize every asset, shard by shard, into the DuckDB store")
    run.add_argument("--database", default=None,
                     help=f"DuckDB file (default: $CURATION_DATABASE, else {DEFAULT_DATABASE}); the store's Dagster "
                          "instance lives beside it unless DAGSTER_HOME is set")
    run.add_argument("--tables", default=os.environ.get("CURATION_TABLES") or None,
                     help="where the Parquet files go: a folder or s3://bucket/prefix[?region=..&endpoint_override=..] "
                          "(default: $CURATION_TABLES, else <name>_tables/ beside the database <name>.duckdb)")
    run.add_argument("--budget", type=int, default=None, help="examples to select (overrides --budget-fraction)")
    run.add_argument("--budget-fraction", type=float, default=0.1, help="share of examples to select (default 0.1)")
    run.add_argument("--seed", type=int, default=0, help="one seed for k-means, the pilot and the draws (default 0)")
    run.add_argument("--sampling", choices=["stratified", "with_replacement", "poisson", "poisson_hajek", "adaptive"],
                     default="stratified",
                     help="how the sensitivity subset is drawn (default stratified: systematic along the clusters; "
                          "see README)")
    run.add_argument("--n-clusters", type=int, default=None, help="k (default round(sqrt(n/2)))")
    run.add_argument("--lambda", dest="lambda_", type=float, default=None,
                     help="weight of the distance term (default: balanced)")
    run.add_argument("--z", type=float, default=2.0, help="distance exponent (default 2)")
    run.add_argument("--alpha", type=float, default=None,
                     help="defensive mixture weight of uniform sampling (default: chosen on the labelled pilot; "
                          "without labels 1 for stratified, 0.5 for the others; 0: the plain method)")
    run.add_argument("--purpose", choices=["train", "estimate"], default="train",
                     help="what recommended_subset (the exported subset) is for: train a model on it (default), or "
                          "estimate full-data averages with its weights")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--batch-size", type=int, default=64, help="embedding batch size (default 64)")
    run.add_argument("--no-evaluation", action="store_true",
                     help="skip subset_evaluation (the held-out comparison of every method; ~2 min on the default data)")
    run.add_argument("--core-only", action="store_true",
                     help="only the core graph (no hierarchical or baseline subsets, which hold every embedding)")
    run.add_argument("--force", action="store_true",
                     help="recompute every asset, even those whose stored inputs and settings are unchanged")
    run.add_argument("--log-level", default="CRITICAL",
                     help="Dagster console log level (default CRITICAL: errors are reported once, at the end; "
                          "every event stays in the instance for the UI)")
    src = run.add_argument_group("your own data (default: the bundled BBC News corpus)")
    src.add_argument("--files", default=None, help="glob of Parquet/CSV/JSONL files, one shard per file")
    src.add_argument("--id-column", default="id")
    src.add_argument("--text-column", default="text")
    src.add_argument("--label-column", default=None,
                     help="label column; an error if missing (default: a column named label, when there is one)")
    src.add_argument("--embedding-column", default=None, help="precomputed vectors (then no model runs)")
    src.add_argument("--num-shards", type=int, default=4, help="shards for the bundled corpus (default 4)")
    src.add_argument("--max-examples-per-shard", type=int, default=None, help="cap each shard (quick runs)")

    bf = sub.add_parser(
        "backfill", help="materialize per-shard assets, one Dagster run per shard, a few runs at a time",
        description="Registers missing shards as partitions, then runs the selected per-shard assets for "
                    "each shard (one run per shard) with at most --max-concurrent runs at once.")
    bf.add_argument("--select", default="raw_examples,embeddings",
                    help="comma-separated assets partitioned by shard (default raw_examples,embeddings; "
                         "a wrong name is answered with the list)")
    bf.add_argument("--shards", default=None, help="comma-separated shard keys (default: every shard of the source)")
    bf.add_argument("--max-concurrent", type=int, default=4, help="runs at once (default 4)")
    bf.add_argument("--executor", choices=["multiprocess", "in_process"], default="multiprocess",
                    help="multiprocess: a process per step (default); in_process: steps in the run's thread")
    bf.add_argument("--database", default=None,
                    help=f"DuckDB file (default: $CURATION_DATABASE, else {DEFAULT_DATABASE})")
    bf.add_argument("--tables", default=None,
                    help="a folder or s3://bucket/prefix for the Parquet files (default: $CURATION_TABLES)")
    bf.add_argument("--log-level", default="CRITICAL", help="Dagster console log level (default CRITICAL)")
    bsrc = bf.add_argument_group("your own data (default: $CURATION_SOURCE_* or the bundled BBC News corpus)")
    bsrc.add_argument("--files", default=None, help="glob of Parquet/CSV/JSONL files, one shard per file")
    for flag in ("--id-column", "--text-column", "--label-column", "--embedding-column"):
        bsrc.add_argument(flag, default=None)
    bsrc.add_argument("--num-shards", type=int, default=None, help="shards for the bundled corpus (default 4)")
    bsrc.add_argument("--max-examples-per-shard", type=int, default=None, help="cap each shard (quick runs)")

    ui = sub.add_parser("ui", help="start the Dagster UI on 127.0.0.1 with the store's instance")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--database", default=None,
                    help=f"the store to show (default: $CURATION_DATABASE, else {DEFAULT_DATABASE})")
    ui.add_argument("--tables", default=None, help="its Parquet files, if not beside it (default: $CURATION_TABLES)")
    return p


def _run(args) -> int:
    from dagster import DagsterInstance

    from resources import ComputeDevice, CurationStore, ExampleSource, SentenceEmbedder

    from .definitions import default_resources
    from .pipeline import run_pipeline

    source_kwargs = dict(num_shards=args.num_shards, max_examples_per_shard=args.max_examples_per_shard)
    if args.files:
        source_kwargs.update(kind="files", path=args.files, id_column=args.id_column, text_column=args.text_column,
                             label_column=args.label_column, embedding_column=args.embedding_column)
    compute = ComputeDevice(device=args.device)
    store = CurationStore(database_path=_database(args), tables_dir=args.tables)
    # default_resources adds any resource the code location needs beyond these (e.g. drift)
    resources = default_resources(
        source=ExampleSource(**source_kwargs),
        store=store,
        compute=compute,
        embedder=SentenceEmbedder(compute=compute, batch_size=args.batch_size),
    )
    config = {
        "centroids": {"config": {"n_clusters": args.n_clusters, "seed": args.seed}},
        "sensitivities": {"config": {"lambda_": args.lambda_, "z": args.z}},
        "subsets": {"config": {"budget": args.budget, "budget_fraction": args.budget_fraction,
                               "seed": args.seed, "sampling": args.sampling, "alpha": args.alpha}},
        "hierarchical_centroids": {"config": {"seed": args.seed}},
        "balanced_subset": {"config": {"budget": args.budget, "budget_fraction": args.budget_fraction,
                                       "seed": args.seed}},
        **({} if args.no_evaluation else {"subset_evaluation": {"config": {"seed": args.seed}}}),
        "recommended_subset": {"config": {"purpose": args.purpose}},
    }
    start = time.perf_counter()
    ensure_store_home(store.db_path)
    with DagsterInstance.get() as instance:
        run_pipeline(instance, resources, config, log_level=args.log_level, evaluate=not args.no_evaluation,
                     force=args.force, extras=not args.core_only)
    seconds = time.perf_counter() - start
    summary = store.query(
        "SELECT count(*) AS rows, sum(weight) AS weight_sum, count(DISTINCT cluster_id) AS clusters, "
        "any_value(budget) AS budget FROM sensitivity_subset"
    ).to_pylist()[0]
    n = store.query("SELECT count(*) AS n FROM raw_examples").column("n")[0].as_py()
    k = store.query("SELECT count(*) AS k FROM centroids").column("k")[0].as_py()
    print(
        f"\nDone in {seconds:.1f}s. sensitivity_subset: {summary['rows']} distinct examples "
        f"(budget {summary['budget']} draws) of {n}, weights sum to {summary['weight_sum']:.1f}, "
        f"{summary['clusters']} of {k} clusters covered.\n"
        + _recommendation_line(store)
        + f"Query it: {query_hint(store)}"
    )
    return 0


def _recommendation_line(store) -> str:
    """Which subset to train on and where its export is (empty when the run made none)."""
    if not store.has_versions("recommended_subset"):
        return ""
    rec = store.query("SELECT any_value(source_subset) AS source, any_value(reason) AS reason, count(*) AS rows "
                      "FROM recommended_subset").to_pylist()[0]
    line = f"Train on: recommended_subset = {rec['source']}, {rec['rows']} rows ({rec['reason']}).\n"
    if store.is_remote:  # a bucket has no local path to print (store.root refuses)
        return line
    export = store.root / "subset_export" / "files" / "recommended_subset.parquet"
    return line + (f"Exported with weights (and texts, where the source has them): {export}\n" if export.exists() else "")


def query_hint(store) -> str:
    """A shell command that prints the top of the subset with this venv's Python, path quoted."""
    sql = "SELECT * FROM sensitivity_subset ORDER BY weight DESC LIMIT 10"
    if store.is_remote:  # the views read the bucket through the store's own filesystem
        code = (f"from resources import CurationStore; print(CurationStore(database_path={json.dumps(str(store.db_path))}, "
                f"tables_dir={json.dumps(store.tables_dir)}).database().sql({json.dumps(sql)}))")
    else:
        code = f"import duckdb; print(duckdb.connect({json.dumps(str(store.db_path))}, read_only=True).sql({json.dumps(sql)}))"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


# backfill flag -> the environment variable the runs read (see curation_assets/definitions.py)
_BACKFILL_ENV = {
    "database": "CURATION_DATABASE", "tables": "CURATION_TABLES", "files": "CURATION_SOURCE_PATH", "id_column": "CURATION_ID_COLUMN",
    "text_column": "CURATION_TEXT_COLUMN", "label_column": "CURATION_LABEL_COLUMN",
    "embedding_column": "CURATION_EMBEDDING_COLUMN", "num_shards": "CURATION_NUM_SHARDS",
    "max_examples_per_shard": "CURATION_MAX_EXAMPLES_PER_SHARD",
}


def _backfill_env(args) -> dict[str, str]:
    """The CURATION_* settings the runs get: the current environment, overridden by the flags."""
    env = {k: v for k, v in os.environ.items() if k.startswith("CURATION_")}
    for flag, var in _BACKFILL_ENV.items():
        value = getattr(args, flag)
        if value is not None:
            env[var] = str(value)
    if args.files is not None:
        env["CURATION_SOURCE_KIND"] = "files"
    return env


def _run_failure(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:  # the user's exception, not Dagster's wrapper
                error = error.cause
            lines = error.message.strip().splitlines() or ["?"]
            return f"{event.step_key}: {lines[-1]}"
    return "run failed"


def _init_backfill_worker(env: dict[str, str]) -> None:
    for k in [k for k in os.environ if k.startswith("CURATION_")]:
        del os.environ[k]
    os.environ.update(env)  # the run's step processes inherit it


def _backfill_shard(key: str, selected: list[str], run_config: dict) -> tuple[str, str, bool, str]:
    """One shard's run, in a worker process: returns (shard, run id, success, why it failed)."""
    from dagster import AssetKey, DagsterInstance, execute_job, reconstructable

    from .definitions import backfill_shards_job

    try:
        with DagsterInstance.get() as instance:
            result = execute_job(reconstructable(backfill_shards_job), instance=instance, run_config=run_config,
                                 tags={"dagster/partition": key, "curation/backfill": "cli"},
                                 asset_selection=[AssetKey(a) for a in selected])
        return key, result.run_id, result.success, "" if result.success else _run_failure(result)
    except Exception as exc:  # the run could not even start
        return key, "-", False, f"{type(exc).__name__}: {exc}"


def _backfill(args) -> int:
    """One Dagster run per shard, at most --max-concurrent at once, each in the persistent instance.

    Runs go to a pool of worker *processes*, not threads: Dagster 1.13.27 reconfigures Python
    logging (logging.config.dictConfig) at every run start, which deadlocks against another
    thread's run logging an event. Store and source reach every run and each of its step
    processes through the CURATION_* environment variables, which
    `definitions.backfill_shards_job` reads each time it is rebuilt.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from dagster import DagsterInstance

    from .definitions import PARTITIONED_ASSETS, source_from_env, store_from_env
    from .instance import claim_instance
    from .pipeline import sync_shards
    from .shard_admission import admit, retire_removed

    selected = [s.strip() for s in args.select.split(",") if s.strip()]
    refused = [s for s in selected if s not in PARTITIONED_ASSETS]
    if not selected or refused:
        raise ValueError(
            f"--select: {refused or selected!r} cannot be backfilled per shard; choose among the "
            f"partitioned assets {', '.join(PARTITIONED_ASSETS)} (run the global ones with `curate run`)"
        )
    if args.max_concurrent < 1:
        raise ValueError(f"--max-concurrent: must be at least 1, got {args.max_concurrent}")
    env = _backfill_env(args)
    source, store = source_from_env(env), store_from_env(env)
    available = source.list_shards()
    if args.shards:
        keys = list(dict.fromkeys(k.strip() for k in args.shards.split(",") if k.strip()))
        unknown = [k for k in keys if k not in available]
        if unknown or not keys:
            raise ValueError(f"--shards: {unknown or keys!r} not in the source; it has {available[:20]}")
    else:
        keys = available
    run_config = {
        # forkserver: step processes fork from one server per worker that has imported this code
        # location once (~0.5 s a step instead of ~5 s of imports under spawn). The server
        # starts inside the worker, so it carries the worker's CURATION_* environment.
        "execution": {"config": {"in_process": {}} if args.executor == "in_process"
                      else {"multiprocess": {"start_method": {"forkserver": {}}}}},
        "loggers": {"console": {"config": {"log_level": args.log_level}}},
    }
    start = time.perf_counter()
    if "raw_examples" in selected:  # nothing is registered or written before the shards fit the store
        admit(source, store, keys, available)
    retired = retire_removed(store, available)
    with DagsterInstance.get() as instance:
        claim_instance(instance, store)
        new, _ = sync_shards(instance, available)
    print(f"backfill {', '.join(selected)} over {len(keys)} shard(s) ({len(new)} newly registered, "
          f"{len(retired)} retired) into {store.db_path}, {args.max_concurrent} run(s) at a time", flush=True)
    failed = []
    with ProcessPoolExecutor(max_workers=min(args.max_concurrent, len(keys)),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_backfill_worker, initargs=(env,)) as pool:
        futures = [pool.submit(_backfill_shard, key, selected, run_config) for key in keys]
        for future in as_completed(futures):
            key, run_id, ok, why = future.result()
            print(f"shard {key}: run {run_id} {'success' if ok else 'FAILED'}" + (f" ({why})" if why else ""),
                  flush=True)
            if not ok:
                failed.append(key)
    print(f"{len(keys) - len(failed)} of {len(keys)} run(s) succeeded in {time.perf_counter() - start:.1f}s")
    if failed:
        print(f"curate: error: backfill failed for shard(s) {', '.join(sorted(failed))}", file=sys.stderr)
        return 1
    return 0

def _ui(args) -> int:
    """`dagster dev` on the store's instance, stopped with its children on SIGTERM, SIGINT or SIGHUP.

    It runs in its own session with the default signal handlers restored: a shell script's
    background job inherits SIGINT as ignored, and Dagster maps SIGTERM to SIGINT's handler, so
    exec'ing it would leave a UI that no signal stops. This process forwards the stop, waits
    UI_STOP_GRACE_S for a clean shutdown, then kills whatever of the group is left.
    """
    exe = os.path.join(os.path.dirname(sys.executable), "dagster")
    cmd = [exe, "dev", "-h", args.host, "-p", str(args.port), "-m", "curation_assets.definitions"]

    def default_signals():
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)

    # the code location reads the store from the environment (definitions.store_from_env)
    env = {**os.environ, "CURATION_DATABASE": _database(args), **({"CURATION_TABLES": args.tables} if args.tables else {})}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=default_signals)
    stop_at: list[float] = []

    def stop(signum, frame):
        if not stop_at:
            stop_at.append(time.monotonic() + UI_STOP_GRACE_S)
            _signal_group(proc.pid, signal.SIGINT)  # dagster dev's clean shutdown

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, stop)
    try:
        while proc.poll() is None:
            if stop_at and time.monotonic() > stop_at[0]:
                _signal_group(proc.pid, signal.SIGKILL)
            time.sleep(0.1)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # the webserver, daemon and code servers left behind
    return 0 if stop_at else proc.returncode


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _database(args) -> str:
    return args.database or os.environ.get("CURATION_DATABASE") or DEFAULT_DATABASE


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    keep_matplotlib_cache_out_of_home()  # before anything imports matplotlib
    try:
        if args.command != "run":  # `run` makes it once its settings are checked
            ensure_store_home(_database(args))
        return {"run": _run, "backfill": _backfill, "ui": _ui}[args.command](args)
    except (ValueError, OSError, KeyError) as exc:
        print(f"curate: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: Exception) -> str:
    """A resource's refused setting (pydantic's multi-line report) as our own message."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        return "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in errors())
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
