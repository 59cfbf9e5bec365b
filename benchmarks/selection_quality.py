"""Is each subset as good as the whole data, and better than random? Every method, every budget.

    .venv/bin/python benchmarks/selection_quality.py [--database PATH] [--seeds 5] [--estimate-seeds 200] [--out DIR]

On a finished store (run `curate run` first) it holds out 20% of the examples by an md5 split of
their ids, builds the selection side exactly as the `subset_evaluation` asset does (its own
k-means, probe pilot and sensitivities), then for every selection method and budget prints:
- the median relative error of the subset's weighted estimate of a fixed model's mean loss;
- test accuracy and macro-F1 (mean ± sd over seeds) of a weighted logistic regression and a
  weighted torch MLP trained on the subset, next to the same models trained on the whole pool;
and, with --all, the regression comparison of benchmarks/least_squares.py and the robustness sweep
of benchmarks/robust_sensitivity.py.
"""

import argparse
import sys
import time

import numpy as np

from _report import emit, format_table
from curation_assets.algorithms.evaluation import build_pool, estimate_errors, holdout_mask, selectors, training_scores
from curation_assets.arrays import embedding_matrix, sort_by_id
from resources.storage import CurationStore

BUDGETS = (0.01, 0.02, 0.05, 0.10, 0.20)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", default="data/curation.duckdb")
    p.add_argument("--seeds", type=int, default=5, help="seeds per method and budget for training (default 5)")
    p.add_argument("--estimate-seeds", type=int, default=200, help="seeds for the estimate error (default 200)")
    p.add_argument("--methods", nargs="*", default=None, help="default: every method")
    p.add_argument("--mlp-epochs", type=int, default=200)
    p.add_argument("--out", default=None, help="also write the tables to DIR/selection_quality.txt")
    p.add_argument("--all", action="store_true",
                   help="then also print the least-squares and robustness tables (about 5 more minutes)")
    return p


def _by(rows, metric, model):
    out = {}
    for r in rows:
        if r["metric"] == metric and r["model"] == model:
            out.setdefault((r["method"], r["budget_fraction"]), []).append(r["value"])
    return out


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    store = CurationStore(database_path=args.database)
    raw = sort_by_id(store.read("raw_examples", columns=["example_id", "label"]))
    emb = sort_by_id(store.read("embeddings"))
    ids = raw.column("example_id").to_pylist()
    x = embedding_matrix(emb.column("embedding"))
    y = np.asarray(raw.column("label").to_pylist(), dtype=object)
    test = holdout_mask(ids, 0.2)
    pool = build_pool(x[~test], y[~test])
    methods = args.methods or list(selectors())
    chosen = {m: selectors()[m] for m in methods}
    start = time.perf_counter()
    rows = estimate_errors(pool, chosen, BUDGETS, range(args.estimate_seeds))
    t_est = time.perf_counter() - start
    rows += training_scores(pool, x[test], y[test], chosen, BUDGETS, range(args.seeds), mlp_epochs=args.mlp_epochs)
    t_train = time.perf_counter() - start - t_est

    out = [f"Selection quality on {args.database}: n={len(ids)}, pool {pool.n} (k={pool.n_clusters}), "
           f"held-out test {int(test.sum())}; {args.estimate_seeds} seeds for estimates, {args.seeds} for training "
           f"({t_est:.0f} s + {t_train:.0f} s).", ""]
    err = _by(rows, "estimate_rel_error", "probe")
    table = []
    for f in BUDGETS:
        unif = np.median(err[("uniform", f)])
        table.append([f"{f:.0%}", round(f * pool.n)] + [
            f"{np.median(err[(m, f)]):.4f} ({np.median(err[(m, f)]) / unif:.2f}x)" for m in methods])
    out += ["Median relative error of the weighted mean-loss estimate (ratio to uniform):",
            format_table(["budget", "m"] + methods, table), ""]
    for model in ("logreg", "mlp"):
        for metric in ("accuracy", "macro_f1"):
            got = _by(rows, metric, model)
            full = got[("full", 1.0)][0]
            table = [[f"{f:.0%}", round(f * pool.n)] + [
                f"{np.mean(got[(m, f)]):.3f} ± {np.std(got[(m, f)]):.3f}" for m in methods] for f in BUDGETS]
            out += [f"Test {metric} of a weighted {model} trained on the subset (full pool: {full:.3f}):",
                    format_table(["budget", "m"] + methods, table), ""]
    emit("\n".join(out), args.out, "selection_quality.txt")
    if args.all:
        import least_squares
        import robust_sensitivity

        out_args = ["--out", args.out] if args.out else []
        least_squares.main(out_args)
        robust_sensitivity.main(["--database", args.database, *out_args])
    return 0


if __name__ == "__main__":
    sys.exit(main())
