"""`curate`: run the whole pipeline on the default (or your) data, or open the Dagster UI."""

import argparse
import os
import sys
import time

from .dagster_home import ensure_project_home


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="curate", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize every asset, shard by shard, into the DuckDB store")
    run.add_argument("--database", default=os.environ.get("CURATION_DATABASE", "data/curation.duckdb"),
                     help="DuckDB file (default: data/curation.duckdb)")
    run.add_argument("--budget", type=int, default=None, help="examples to select (overrides --budget-fraction)")
    run.add_argument("--budget-fraction", type=float, default=0.1, help="share of examples to select (default 0.1)")
    run.add_argument("--seed", type=int, default=0, help="one seed for k-means, the pilot and the draws (default 0)")
    run.add_argument("--sampling", choices=["with_replacement", "poisson", "poisson_hajek", "adaptive"],
                     default="with_replacement",
                     help="how the sensitivity subset is drawn (default with_replacement; see README)")
    run.add_argument("--n-clusters", type=int, default=None, help="k (default round(sqrt(n/2)))")
    run.add_argument("--lambda", dest="lambda_", type=float, default=None,
                     help="weight of the distance term (default: balanced)")
    run.add_argument("--z", type=float, default=2.0, help="distance exponent (default 2)")
    run.add_argument("--alpha", type=float, default=None,
                     help="defensive mixture weight of uniform sampling (default: chosen on the labelled pilot; "
                          "0: the plain method)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--batch-size", type=int, default=64, help="embedding batch size (default 64)")
    run.add_argument("--no-evaluation", action="store_true",
                     help="skip subset_evaluation (the held-out comparison of every method; ~2 min on the default data)")
    run.add_argument("--log-level", default="CRITICAL",
                     help="Dagster console log level (default CRITICAL: errors are reported once, at the end; "
                          "every event stays in the instance for the UI)")
    src = run.add_argument_group("your own data (default: the bundled BBC News corpus)")
    src.add_argument("--files", default=None, help="glob of Parquet/CSV/JSONL files, one shard per file")
    src.add_argument("--id-column", default="id")
    src.add_argument("--text-column", default="text")
    src.add_argument("--label-column", default="label")
    src.add_argument("--embedding-column", default=None, help="precomputed vectors (then no model runs)")
    src.add_argument("--num-shards", type=int, default=4, help="shards for the bundled corpus (default 4)")
    src.add_argument("--max-examples-per-shard", type=int, default=None, help="cap each shard (quick runs)")

    ui = sub.add_parser("ui", help="start the Dagster UI on 127.0.0.1 with the project-local instance")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--host", default="127.0.0.1")
    return p


def _run(args) -> int:
    from dagster import DagsterInstance

    from resources import ComputeDevice, CurationStore, ExampleSource, SentenceEmbedder

    from .pipeline import run_pipeline

    source_kwargs = dict(num_shards=args.num_shards, max_examples_per_shard=args.max_examples_per_shard)
    if args.files:
        source_kwargs.update(kind="files", path=args.files, id_column=args.id_column, text_column=args.text_column,
                             label_column=args.label_column, embedding_column=args.embedding_column)
    compute = ComputeDevice(device=args.device)
    store = CurationStore(database_path=args.database)
    resources = {
        "source": ExampleSource(**source_kwargs),
        "store": store,
        "compute": compute,
        "embedder": SentenceEmbedder(compute=compute, batch_size=args.batch_size),
    }
    config = {
        "centroids": {"config": {"n_clusters": args.n_clusters, "seed": args.seed}},
        "representative_losses": {"config": {"seed": args.seed}},
        "sensitivities": {"config": {"lambda_": args.lambda_, "z": args.z}},
        "subsets": {"config": {"budget": args.budget, "budget_fraction": args.budget_fraction,
                               "seed": args.seed, "sampling": args.sampling, "alpha": args.alpha}},
        "hierarchical_centroids": {"config": {"seed": args.seed}},
        "balanced_subset": {"config": {"budget": args.budget, "budget_fraction": args.budget_fraction,
                                       "seed": args.seed}},
        **({} if args.no_evaluation else {"subset_evaluation": {"config": {"seed": args.seed}}}),
    }
    start = time.perf_counter()
    with DagsterInstance.get() as instance:
        run_pipeline(instance, resources, config, log_level=args.log_level, evaluate=not args.no_evaluation)
    seconds = time.perf_counter() - start
    summary = store.query(
        "SELECT count(*) AS rows, sum(weight) AS weight_sum, count(DISTINCT cluster_id) AS clusters, "
        "any_value(budget) AS budget FROM sensitivity_subset"
    ).to_pylist()[0]
    n = store.query("SELECT count(*) AS n FROM raw_examples").column("n")[0].as_py()
    print(
        f"\nDone in {seconds:.1f}s. sensitivity_subset: {summary['rows']} distinct examples "
        f"(budget {summary['budget']} draws) of {n}, weights sum to {summary['weight_sum']:.1f}, "
        f"{summary['clusters']} clusters covered.\n"
        f"Query it: duckdb {store.db_path} \"SELECT * FROM sensitivity_subset ORDER BY weight DESC LIMIT 10\""
    )
    return 0


def _ui(args) -> int:
    cmd = ["dagster", "dev", "-h", args.host, "-p", str(args.port), "-m", "curation_assets.definitions"]
    bindir = os.path.dirname(sys.executable)
    exe = os.path.join(bindir, "dagster")
    os.execv(exe, [exe, *cmd[1:]])
    return 0  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ensure_project_home()
    try:
        return {"run": _run, "ui": _ui}[args.command](args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
