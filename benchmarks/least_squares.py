"""Least squares on a weighted row sample: clustering-based sensitivity vs leverage scores vs uniform.

    .venv/bin/python benchmarks/least_squares.py [--seeds 100] [--out benchmarks/results]

Axiotis et al. (ICML 2024) say that for linear regression clustering-based sensitivity sampling
"matches leverage score sampling" while being "conceptually simpler and more scalable". This
checks the first half at equal sample size m and times the second. For every dataset, every
m in (2d, 5d, 10d, 20d) and every seed, each method gives a distribution p over the rows, m rows
are drawn i.i.d. from p (weights 1/(m p_i)), the weighted subproblem is solved
(curation_assets.algorithms.least_squares.solve_weighted) and scored by the relative excess
residual ||A x~ - b|| / ||A x* - b|| - 1 against the full least-squares solution x*. Reported:
median and 90th percentile over the seeds, both also as a ratio to leverage-score sampling's,
and the median time to select (probabilities + the draw: the QR for leverage, k-means + proxy
fit for sensitivity). All methods use the same draw seed per run (common random numbers).

Methods:
- uniform: p_i = 1/n, drawn i.i.d. like the others.
- leverage: exact leverage scores from a thin QR of A.
- sensitivity: least_squares.sensitivity_regression defaults: k-means (k = sqrt(n/2), 25
  iterations, all rows) on the rows of A, proxy fit on a uniform pilot of max(4d, 50) rows,
  v_j = proxy residual^2 at each cluster's representative, s = v_a(i) + lambda d_i^2 with the
  balanced lambda. Its k-means and pilot are re-drawn with every seed.
- variants of it, to explain where it wins or loses: columns standardised before clustering;
  [A | b] clustered (standardised; this reads every label); the distance term alone
  (p ~ d_i^2, lambda -> infinity: an ablation, not unbiased for rows sitting on their centroid);
  a cheap k-means (10 iterations on a 20k-row sample); A whitened by the R of a CountSketch of A
  (least_squares.sketched_whitening), the geometry in which leverage is a plain squared norm.
"labels read" counts the rows whose b_i a method needs before the draw (0 for leverage and
uniform; pilot U representatives for sensitivity; n when [A | b] is clustered).

Datasets: (a) scikit-learn's bundled diabetes set (n = 442, 10 features + intercept);
(b) the RAND health insurance experiment set bundled with statsmodels (n = 20,190, 9 features +
intercept, target: number of doctor visits), only if statsmodels can be imported: it is not a
dependency of this project (to run it: `pip install --no-deps --target /tmp/sm statsmodels` and
PYTHONPATH=/tmp/sm); scikit-learn's larger sets (California housing, ...) need a download and are
not used; (c) synthetic: n = 20,000, d = 20 standard normal features, 0.5% of the rows scaled by
50 (high leverage), b = A x + N(0, 1): the textbook case where uniform sampling fails.

BLAS and faiss run single-threaded (stable timings on a shared machine); times are medians.
"""

from __future__ import annotations

import argparse
import sys
import time

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from _report import emit, format_table
from curation_assets.algorithms.least_squares import (
    leverage_probabilities,
    relative_excess_residual,
    sample_rows,
    sensitivity_regression,
    solve_full,
    solve_weighted,
    uniform_probabilities,
)
from curation_assets.algorithms.sensitivity import distance_term

M_MULTIPLES = (2, 5, 10, 20)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=100, help="runs per method and m (default 100)")
    p.add_argument("--out", default=None, help="also write the tables to DIR/least_squares.txt")
    return p


# ------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------


def diabetes() -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return np.column_stack([np.ones(len(y)), X]), y.astype(np.float64), "scikit-learn load_diabetes + intercept"


def randhie() -> tuple[np.ndarray, np.ndarray, str] | None:
    try:
        import statsmodels
        from statsmodels.datasets import randhie as rh
    except ImportError:
        return None
    data = rh.load_pandas()
    A = np.column_stack([np.ones(len(data.endog)), data.exog.to_numpy(dtype=np.float64)])
    desc = (
        f"statsmodels {statsmodels.__version__} randhie (mdvis ~ 9 covariates + intercept; statsmodels is "
        "not a project dependency, see the script's docstring)"
    )
    return A, data.endog.to_numpy(dtype=np.float64), desc


def high_leverage(seed: int = 0, n: int = 20000, d: int = 20, frac: float = 0.005, scale: float = 50.0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d))
    hi = rng.choice(n, size=int(round(frac * n)), replace=False)
    A[hi] *= scale
    b = A @ rng.normal(size=d) + rng.normal(size=n)
    return A, b, f"synthetic N(0,1), {hi.size} rows ({frac:.1%}) scaled x{scale:g}, noise N(0,1), data seed {seed}"


# ------------------------------------------------------------------------------------------
# Methods: (A, b, seed) -> (p, labels read before the draw)
# ------------------------------------------------------------------------------------------


def _sens(**kw):
    def run(A, b, seed):
        r = sensitivity_regression(A, b, None, seed, **kw)
        return r.probabilities, (A.shape[0] if kw.get("features") == "Ab" else r.n_inferences)

    return run


def _distance_only(A, b, seed):
    r = sensitivity_regression(A, b, None, seed)
    q = distance_term(r.sq_dist, r.z)
    return q / q.sum(), 0


def _fast_kmeans(A, b, seed):
    n = A.shape[0]
    k = max(1, int(round(np.sqrt(n / 2.0))))
    r = sensitivity_regression(A, b, k, seed, n_iter=10, training_sample_size=min(n, 20 * k))
    return r.probabilities, r.n_inferences


METHODS = {
    "uniform": lambda A, b, seed: (uniform_probabilities(A.shape[0]), 0),
    "leverage (exact, QR)": lambda A, b, seed: (leverage_probabilities(A), 0),
    "sensitivity": _sens(),
    "sensitivity, standardised A": _sens(standardize=True),
    "sensitivity, [A|b] standardised": _sens(features="Ab", standardize=True),
    "sensitivity, cheap k-means": _fast_kmeans,
    "sensitivity, sketch-whitened A": _sens(features="whitened"),
    "ablation: distance term only": _distance_only,
}


def evaluate(A, b, seeds: int) -> dict:
    n, d = A.shape
    x_star = solve_full(A, b)
    t0 = time.perf_counter()
    for _ in range(3):
        solve_full(A, b)
    full_ms = (time.perf_counter() - t0) / 3 * 1e3
    ms = [k * d for k in M_MULTIPLES if k * d <= n]
    res = {}
    for name, method in METHODS.items():
        err = {m: [] for m in ms}
        sel = {m: [] for m in ms}
        labels = []
        for seed in range(seeds):
            t0 = time.perf_counter()
            p, read = method(A, b, seed)
            t_prob = time.perf_counter() - t0
            labels.append(read)
            for m in ms:
                t0 = time.perf_counter()
                sample = sample_rows(p, m, seed, n_columns=d)
                sel[m].append(t_prob + time.perf_counter() - t0)
                err[m].append(relative_excess_residual(A, b, solve_weighted(A, b, sample), x_star))
        res[name] = {
            m: {
                "median": float(np.median(err[m])),
                "p90": float(np.quantile(err[m], 0.9)),
                "ms": float(np.median(sel[m]) * 1e3),
            }
            for m in ms
        } | {"labels": int(np.median(labels))}
    return {"ms": ms, "res": res, "full_ms": full_ms}


def table(ev: dict, d: int) -> str:
    rows = []
    lev = ev["res"]["leverage (exact, QR)"]
    for m in ev["ms"]:
        for name, r in ev["res"].items():
            rows.append([
                f"{m} ({m // d}d)",
                name,
                f"{r[m]['median']:.4f}",
                f"{r[m]['median'] / lev[m]['median']:.2f}",
                f"{r[m]['p90']:.4f}",
                f"{r[m]['p90'] / lev[m]['p90']:.2f}",
                f"{r[m]['ms']:.1f}",
                r["labels"],
            ])
        rows.append([""] * 8)
    rows.pop()
    return format_table(
        ["m", "method", "median", "/lev", "p90", "/lev", "select ms", "labels read"], rows, "llrrrrrr"
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.seeds < 1:
        raise SystemExit("--seeds: must be at least 1")
    faiss.omp_set_num_threads(1)
    datasets = [("diabetes", diabetes()), ("randhie", randhie()), ("high-leverage synthetic", high_leverage())]
    out = [
        "Least squares on a weighted row sample: relative excess residual ||A x~ - b|| / ||A x* - b|| - 1",
        f"{args.seeds} seeds per method and m; median and 90th percentile, '/lev' = ratio to leverage-score "
        "sampling's; select ms = median time for probabilities + draw (BLAS and faiss single-threaded).",
        "labels read = rows whose b_i the method uses before the draw (the final fit then reads m more).",
        "",
    ]
    with threadpool_limits(1):
        for name, data in datasets:
            if data is None:
                out += [f"== {name}: skipped, statsmodels is not installed (see the docstring to run it)", ""]
                continue
            A, b, desc = data
            t0 = time.perf_counter()
            ev = evaluate(A, b, args.seeds)
            n, d = A.shape
            out += [
                f"== {name}: {desc}; n = {n}, d = {d}, k = {max(1, round(np.sqrt(n / 2)))} clusters; "
                f"full lstsq {ev['full_ms']:.1f} ms; benchmark {time.perf_counter() - t0:.0f} s",
                table(ev, d),
                "",
            ]
            print(f"{name}: done", file=sys.stderr, flush=True)
    emit("\n".join(out).rstrip(), args.out, "least_squares.txt")


if __name__ == "__main__":
    main()
