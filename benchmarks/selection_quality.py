"""Is each subset better than a random one, on many datasets? Every method against uniform.

    .venv/bin/python benchmarks/selection_quality.py [--datasets bbc digits ...] [--database PATH]
        [--estimate-seeds 100] [--seeds 10] [--methods ...] [--out DIR]

For each dataset (benchmarks/quality_datasets.py: BBC and its imbalanced and noisy variants, scikit-learn's
bundled sets as precomputed vectors, synthetic families) it holds out 20% by an md5 split, builds
the selection side as the `subset_evaluation` asset does (its own k-means, probe pilot and
sensitivities), says how far the probe's loss follows the clusters (the share of its variance
between them, the most proportional stratification removes) and for every method and budget measures
- the median relative error of the subset's weighted estimate of the probe's mean loss, as a
  ratio to uniform's, with a 90% bootstrap interval over seeds; WIN when the interval is below 1,
  LOSS when above, else tie;
- the test accuracy of a weighted logistic regression trained on the subset, as a difference to
  uniform's with a 90% interval (normal, over seeds); WIN / LOSS when the interval excludes 0.
- `recommended`, what the product hands a user for training (the `recommended_subset` asset): on
  the pool alone, an inner held-out split scores the methods the product stores (5 seeds, logistic
  regression), `recommend` picks one per budget (default: `default_method`, kmeans_centroids below
  two picks per cluster, else sensitivity_stratified), and that method's subset of the pool is trained
  and tested like the others; a last table shows its gap to the best method at each budget.
It ends with the win/tie/loss count of every method over all datasets and budgets.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import quality_datasets as datasets
from _report import emit, format_table
from curation_assets.algorithms.evaluation import build_pool, estimate_errors, holdout_mask, selectors, training_scores
from curation_assets.algorithms.recommendation import default_method, recommend
from curation_assets.algorithms.stratified_sampling import stratified_sensitivity_sample
from curation_assets.assets.recommended_subset import EVALUATED_AS, SAMPLING_EVALUATED_AS, evaluated_scores

BUDGETS = (0.01, 0.02, 0.05, 0.10, 0.20)
DEFAULT_METHODS = ("uniform", "sensitivity_stratified", "cluster_stratified", "sensitivity", "sensitivity_auto",
                   "stratified", "kmeans_centroids", "semdedup")
Z90 = 1.645


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="*", default=list(datasets.NAMES), help="default: all of them")
    p.add_argument("--database", default="data/curation.duckdb", help="a store with BBC embeddings (optional)")
    p.add_argument("--estimate-seeds", type=int, default=100)
    p.add_argument("--seeds", type=int, default=10, help="seeds per method and budget for training (default 10)")
    p.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS))
    p.add_argument("--no-training", action="store_true", help="estimates only (fast)")
    p.add_argument("--out", default=None, help="also write the tables to DIR/selection_quality.txt")
    return p


def between_cluster_share(losses, cluster_ids) -> float:
    """Share of the loss variance the cluster means explain (eta squared): the most proportional
    stratification can remove, 1 - share being the variance ratio it leaves."""
    k = int(cluster_ids.max()) + 1
    counts = np.bincount(cluster_ids, minlength=k)
    means = np.bincount(cluster_ids, weights=losses, minlength=k) / np.maximum(counts, 1)
    total = np.sum((losses - losses.mean()) ** 2)
    return float(np.sum(counts * (means - losses.mean()) ** 2) / total) if total > 0 else 0.0


def _ratio_interval(err, base, rng, reps=1000):
    """Median error ratio to uniform and its 90% bootstrap interval (seeds resampled)."""
    err, base = np.asarray(err), np.asarray(base)
    point = np.median(err) / np.median(base)
    boot = [np.median(rng.choice(err, err.size)) / np.median(rng.choice(base, base.size)) for _ in range(reps)]
    return point, np.quantile(boot, 0.05), np.quantile(boot, 0.95)


def _verdict(lo, hi, better_below: float | None = None, better_above: float | None = None) -> str:
    if better_below is not None:
        return "WIN" if hi < better_below else "LOSS" if lo > better_below else "tie"
    return "WIN" if lo > better_above else "LOSS" if hi < better_above else "tie"


def _selector(name: str):
    """A method of the evaluation by name; `sensitivity_stratified:A` is it with alpha = A."""
    if ":" in name:
        base, alpha = name.split(":", 1)
        if base != "sensitivity_stratified":
            raise SystemExit(f"--methods: only sensitivity_stratified takes an alpha, got {name!r}")
        return lambda pool, m, seed: stratified_sensitivity_sample(
            pool.sensitivities, pool.cluster_ids, m, seed, alpha=float(alpha), centroids=pool.centroids)
    if name not in selectors():
        raise SystemExit(f"--methods: unknown {name!r}; choose from {sorted(selectors())}")
    return selectors()[name]


def recommended_methods(name: str, pool, seeds: int = 5) -> dict[int, tuple[str, str]]:
    """{m: (method, reason)}: what recommended_subset would pick at each budget, from an inner
    held-out split of the pool (the outer test side is never seen)."""
    import pyarrow as pa

    candidates = {SAMPLING_EVALUATED_AS["stratified"], *EVALUATED_AS.values()}
    inner_test = holdout_mask([f"{name}-inner-{i}" for i in range(pool.n)], 0.2)
    inner = build_pool(pool.x[~inner_test], pool.labels[~inner_test])
    rows = training_scores(inner, pool.x[inner_test], pool.labels[inner_test], {m: _selector(m) for m in candidates},
                           BUDGETS, range(seeds), models=("logreg",))
    table = pa.Table.from_pylist([{**r, "test_size": int(inner_test.sum())} for r in rows])
    out = {}
    for f in BUDGETS:
        scores, _, test_se = evaluated_scores(table, f, "train", candidates)
        m = max(1, int(round(f * pool.n)))
        rec = recommend(scores, default_method("train", m, pool.n_clusters), test_se=test_se)
        out[m] = (rec.method, rec.reason)
    return out


def run_dataset(name: str, args, methods, tally) -> list[str]:
    x, y = datasets.load(name, args.database)
    ids = np.arange(len(y))
    test = holdout_mask([f"{name}-{i}" for i in ids], 0.2)
    pool = build_pool(x[~test], y[~test])
    chosen = {m: _selector(m) for m in methods}
    start = time.perf_counter()
    rows = estimate_errors(pool, chosen, BUDGETS, range(args.estimate_seeds))
    picks = {}
    if not args.no_training:
        picks = recommended_methods(name, pool)
        chosen["recommended"] = lambda p, m, seed: _selector(picks[m][0])(p, m, seed)
        rows += training_scores(pool, x[test], y[test], chosen, BUDGETS, range(args.seeds), models=("logreg",))
    seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    by = {}
    for r in rows:
        by.setdefault((r["metric"], r["method"], r["budget_fraction"]), []).append(r["value"])
    out = [f"## {name}: n={len(y)}, pool {pool.n} (k={pool.n_clusters}, {len(np.unique(y))} classes), "
           f"test {int(test.sum())}; {seconds:.0f} s",
           f"How far the probe's loss follows the clusters: between-cluster share of its variance "
           f"{between_cluster_share(pool.losses, pool.cluster_ids):.2f}; correlation with the clusters' sensitivity "
           f"{np.corrcoef(pool.sensitivities, pool.losses)[0, 1]:.2f}, with the probe's expected loss "
           f"{np.corrcoef(pool.expected_losses, pool.losses)[0, 1]:.2f}", ""]
    table = []
    for f in BUDGETS:
        base = by[("estimate_rel_error", "uniform", f)]
        row = [f"{f:.0%}", max(1, round(f * pool.n)), f"{np.median(base):.4f}"]
        for m in methods[1:]:
            point, lo, hi = _ratio_interval(by[("estimate_rel_error", m, f)], base, rng)
            v = _verdict(lo, hi, better_below=1.0)
            tally.setdefault(("estimate", m), []).append(v)
            row.append(f"{point:.2f} [{lo:.2f},{hi:.2f}] {v}")
        table.append(row)
    out += ["Median relative error of the mean-loss estimate: uniform's, then each method's ratio to it "
            "[90% interval]:", format_table(["budget", "m", "uniform"] + list(methods[1:]), table), ""]
    if not args.no_training:
        full = by[("accuracy", "full", 1.0)][0]
        table, gaps = [], []
        trained = list(methods[1:]) + ["recommended"]
        for f in BUDGETS:
            base = np.asarray(by[("accuracy", "uniform", f)])
            row = [f"{f:.0%}", f"{base.mean():.3f}"]
            for m in trained:
                acc = np.asarray(by[("accuracy", m, f)])
                diff = acc.mean() - base.mean()
                half = Z90 * np.sqrt(acc.var(ddof=1) / acc.size + base.var(ddof=1) / base.size)
                v = _verdict(diff - half, diff + half, better_above=0.0)
                tally.setdefault(("train", m), []).append(v)
                row.append(f"{acc.mean():.3f} ({diff:+.3f}±{half:.3f}) {v}")
            table.append(row)
            best = max(["uniform"] + trained[:-1], key=lambda m: np.mean(by[("accuracy", m, f)]))
            rec, top = np.asarray(by[("accuracy", "recommended", f)]), np.asarray(by[("accuracy", best, f)])
            gap = rec.mean() - top.mean()
            half = Z90 * np.sqrt(rec.var(ddof=1) / rec.size + top.var(ddof=1) / top.size)
            v = "behind" if gap + half < 0 else "within noise"
            tally.setdefault(("train vs best", "recommended"), []).append({"behind": "LOSS"}.get(v, "tie"))
            m = max(1, int(round(f * pool.n)))
            gaps.append([f"{f:.0%}", picks[m][0], best, f"{gap:+.3f}±{half:.3f}", v])
        out += [f"Test accuracy of a weighted logistic regression (full pool: {full:.3f}); uniform's, then each "
                "method's (difference to uniform ± 90%):",
                format_table(["budget", "uniform"] + trained, table), "",
                "What `recommended` picked (inner evaluation on the pool) and its gap to the best method:",
                format_table(["budget", "picked", "best method", "gap ± 90%", "verdict"], gaps), ""]
    return out


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    methods = ["uniform"] + [m for m in args.methods if m != "uniform"]
    for m in methods:
        _selector(m)
    tally: dict = {}
    out = [f"Selection quality against uniform: {len(args.datasets)} datasets, budgets "
           f"{', '.join(f'{b:.0%}' for b in BUDGETS)}; {args.estimate_seeds} seeds for estimates, "
           f"{args.seeds} for training.", ""]
    for name in args.datasets:
        out += run_dataset(name, args, methods, tally)
        print("\n".join(out[-20:]), file=sys.stderr, flush=True)
    table = []
    for kind in ("estimate", "train", "train vs best"):
        for m in methods[1:] + ["recommended"]:
            v = tally.get((kind, m))
            if v:
                table.append([kind, m, v.count("WIN"), v.count("tie"), v.count("LOSS")])
    out += ["Win / tie / loss against uniform over every dataset and budget:",
            format_table(["metric", "method", "win", "tie", "loss"], table)]
    emit("\n".join(out), args.out, "selection_quality.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
