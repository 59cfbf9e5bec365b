"""How well does each weighted subset estimate a fixed model's mean loss over the full dataset?

    .venv/bin/python benchmarks/estimate_error.py [--database PATH] [--seeds 1000] [--out DIR]

This is the quantity the sensitivity-sampling guarantee is about (Axiotis et al. 2024): the
weighted subset mean (1/n) sum_S w_i l_i should be close to (1/n) sum_all l_i. It reads a
finished pipeline run from the store (run `curate run` or benchmarks/pipeline.py --database
first), refits the same linear probe on the same seeded pilot as the `probe` asset (and
checks it reproduces the stored v_j), scores every example, then draws many seeded subsets per
budget and reports the median and 90th percentile of the relative error |estimate - truth| / truth:

- sampling: uniform vs every sensitivity sampling the pipeline offers (with replacement, Poisson
  with ratio weights, Poisson with Hajek weights), using p = s / sum(s) from the stored
  sensitivities, plus Poisson with plain 1/pi weights for context;
- lambda: the stored (balanced) lambda vs 0 (loss term only), 10x and 0.1x balanced.

All n examples stay in the target mean, pilot included (the probe has seen those 5%, so their
losses are a little lower; the subsets must estimate the full mean either way).
"""

import argparse
import sys

import numpy as np

from _report import emit, format_table
from curation_assets.algorithms.estimation import relative_error, weighted_mean
from curation_assets.algorithms.sampling import (
    SAMPLING_METHODS,
    WeightedSample,
    sample_by_sensitivity,
    sample_poisson,
    sample_uniform,
)
from curation_assets.algorithms.scorers import LinearProbeScorer
from curation_assets.algorithms.sensitivity import balanced_lambda, sampling_probabilities, sensitivity_scores
from curation_assets.arrays import embedding_matrix, sort_by_id
from resources.storage import CurationStore

BUDGETS = (0.01, 0.02, 0.05, 0.10, 0.20)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", default="data/curation.duckdb", help="store of a finished run (default: curate's)")
    p.add_argument("--seeds", type=int, default=1000, help="subsets drawn per method and budget (default 1000)")
    p.add_argument("--out", default=None, help="also write the tables to DIR/estimate_error.txt")
    # Must match the probe config of the stored run (these are its defaults).
    p.add_argument("--pilot-seed", type=int, default=0)
    p.add_argument("--pilot-size", type=int, default=None, help="default max(100, ceil(5%% of n)), as the asset")
    p.add_argument("--probe-c", type=float, default=1.0)
    return p


def load_run(store: CurationStore) -> dict:
    """The stored tables as arrays, rows in the assets' canonical order (sorted by example_id)."""
    names = ("raw_examples", "embeddings", "cluster_assignments", "sensitivities")
    t = {name: sort_by_id(store.read(name)) for name in names}
    ids = t["cluster_assignments"].column("example_id")
    for name in names:
        if not t[name].column("example_id").equals(ids):
            raise ValueError(f"{name}: holds different examples than cluster_assignments; re-run the pipeline")
    reps = store.read("representative_losses").sort_by("cluster_id")
    row_of = {example_id: i for i, example_id in enumerate(ids.to_pylist())}
    return {
        "x": embedding_matrix(t["embeddings"].column("embedding")),
        "y": np.asarray(t["raw_examples"].column("label").to_pylist(), dtype=object),
        "a": t["cluster_assignments"].column("cluster_id").to_numpy().astype(np.int64),
        "d2": t["cluster_assignments"].column("sq_distance").to_numpy(),
        "v": np.nan_to_num(np.asarray(reps.column("loss").to_numpy(zero_copy_only=False), dtype=np.float64)),
        "rep_rows": np.array([row_of.get(r, -1) if r else -1 for r in reps.column("representative_id").to_pylist()]),
        "s": t["sensitivities"].column("sensitivity").to_numpy(),
        "lambda": float(t["sensitivities"].column("lambda_")[0].as_py()),
        "z": float(t["sensitivities"].column("z")[0].as_py()),
    }


def per_example_losses(run: dict, seed: int, pilot_size: int | None, C: float) -> tuple[np.ndarray, int]:
    """l_i for every example from the probe representative_losses fits (same pilot draw and fit).

    Raises if the refit probe's losses at the representatives differ from the stored v_j (beyond
    the ~1e-6 that multithreaded BLAS leaves between two fits), so
    the numbers below are always about the model the pipeline actually used.
    """
    n = run["x"].shape[0]
    size = pilot_size if pilot_size is not None else min(n, max(100, int(np.ceil(0.05 * n))))
    pilot = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    losses = LinearProbeScorer(C=C).fit(run["x"][pilot], run["y"][pilot]).losses(run["x"], run["y"])
    present = run["rep_rows"] >= 0
    if not np.allclose(losses[run["rep_rows"][present]], run["v"][present], rtol=1e-4, atol=1e-6):
        raise ValueError("the refit probe does not reproduce the stored representative losses: "
                         "pass the run's --pilot-seed / --pilot-size / --probe-c")
    return losses, size


def horvitz_thompson(sample: WeightedSample) -> WeightedSample:
    """The same Poisson draw weighted plainly 1/pi, to show why a normalisation is needed at all:
    without one, the random subset size lands in every estimate."""
    return WeightedSample(sample.indices, 1.0 / sample.probabilities, sample.probabilities, sample.draws)


def error_stats(draw, losses: np.ndarray, seeds: int) -> tuple[float, float, float]:
    """Median and 90th percentile of the relative error over seeded draws, and the mean |S|."""
    n, truth = losses.size, losses.mean()
    errs, sizes = np.empty(seeds), np.empty(seeds)
    for seed in range(seeds):
        sample = draw(seed)
        errs[seed] = relative_error(weighted_mean(losses, sample.indices, sample.weights, n), truth)
        sizes[seed] = sample.indices.size
    return float(np.median(errs)), float(np.quantile(errs, 0.9)), float(sizes.mean())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seeds < 1:
        raise SystemExit("--seeds: must be at least 1")
    store = CurationStore(database_path=args.database)
    run = load_run(store)
    losses, pilot_size = per_example_losses(run, args.pilot_seed, args.pilot_size, args.probe_c)
    n, k = losses.size, run["v"].size
    balanced = balanced_lambda(run["v"], run["a"], run["d2"], run["z"])
    stored = "balanced" if np.isclose(run["lambda"], balanced, rtol=1e-9) else "configured"
    # The stored row uses the stored s itself; the others recompute s with the asset's formula.
    lambdas = {
        f"{run['lambda']:.4g} (stored, {stored})": run["s"],
        "0 (loss term only)": 0.0,
        f"{10 * balanced:.4g} (10x balanced)": 10 * balanced,
        f"{0.1 * balanced:.4g} (0.1x balanced)": 0.1 * balanced,
    }
    probs = {name: sampling_probabilities(lam if isinstance(lam, np.ndarray) else
                                          sensitivity_scores(run["v"], run["a"], run["d2"], lam, run["z"]))
             for name, lam in lambdas.items()}

    def row(fraction, m, labels, stats, unif):
        (med, p90, size), (u_med, u_p90, _) = stats, unif
        return [f"{fraction:.0%}", m, *labels, f"{size:.0f}", f"{med:.4f}", f"{p90:.4f}", f"{med / u_med:.2f}",
                f"{p90 / u_p90:.2f}"]

    stored_p = next(iter(probs.values()))
    sampling_rows, lambda_rows = [], []
    for fraction in BUDGETS:
        m = max(1, round(fraction * n))
        unif = error_stats(lambda seed: sample_uniform(n, m, seed), losses, args.seeds)
        sampling_rows.append(row(fraction, m, ["uniform"], unif, unif))
        draws = {f"sensitivity {method}": lambda seed, method=method: sample_by_sensitivity(stored_p, m, seed, method)
                 for method in SAMPLING_METHODS}
        draws["sensitivity poisson, HT 1/pi weights *"] = (
            lambda seed: horvitz_thompson(sample_poisson(stored_p, m, seed)))
        for name, draw in draws.items():
            sampling_rows.append(row(fraction, m, [name], error_stats(draw, losses, args.seeds), unif))
        for name, p in probs.items():
            for method in ("with_replacement", "poisson"):
                stats = error_stats(lambda seed: sample_by_sensitivity(p, m, seed, method), losses, args.seeds)
                lambda_rows.append(row(fraction, m, [name, method], stats, unif))

    loss_share = float(run["v"][run["a"]].sum() / run["s"].sum())
    out = "\n".join([
        f"Estimating the full-data mean loss: n={n}, k={k}, probe fit on a seeded pilot of {pilot_size} "
        f"(seed {args.pilot_seed}, C={args.probe_c}; reproduces the stored v_j), {args.seeds} seeds per cell.",
        f"True mean loss {losses.mean():.4f} (median {np.median(losses):.4f}, max {losses.max():.2f}); "
        f"stored lambda {run['lambda']:.4g} ({stored}; balanced = {balanced:.4g}), z={run['z']:g}, "
        f"loss term's share of sum(s) {loss_share:.2f}.",
        "Relative error = |weighted subset mean - true mean| / true mean; all n examples (pilot included) "
        "form the target.",
        "|S| = distinct examples per subset (mean over seeds); with replacement has fewer than m.",
        "",
        "Sampling method (stored sensitivities):",
        format_table(["budget", "m", "method", "|S|", "median err", "p90 err", "median/unif", "p90/unif"],
                     sampling_rows),
        "poisson: weights calibrated so sum_S w p = 1 (ratio estimator); poisson_hajek: the same draws, "
        "weights summing to n;",
        "* not a pipeline option: the same draws weighted plainly 1/pi (Horvitz-Thompson).",
        "",
        "lambda choices (ratios to uniform at the same budget):",
        format_table(["budget", "m", "lambda", "method", "|S|", "median err", "p90 err", "median/unif",
                      "p90/unif"], lambda_rows),
    ])
    emit(out, args.out, "estimate_error.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
