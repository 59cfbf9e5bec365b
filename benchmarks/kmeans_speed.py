"""How close do faiss k-means and nearest-centroid assignment come to this CPU's sgemm peak?

    .venv/bin/python benchmarks/kmeans_speed.py [--n 100000] [--d 384] [--k 1000] [--iters 10] [--repeats 3] [--out DIR]

faiss-cpu bundles its own OpenBLAS, whose CPU detection can fall back to 'Prescott' (SSE3)
kernels on CPUs it does not know; resources.blas picks the core type from the CPU's features
before faiss loads it. This measures, in one run on the same data:
- the baseline: numpy's sgemm, (n x d) @ (d x k) float32, best of --repeats;
- faiss k-means (the project's fit_kmeans, every row trained on, --iters Lloyd iterations) and
  assignment (assign_to_centroids: IndexFlatL2, nearest of k), each in a fresh interpreter:
  tuned (the project's default), CURATION_BLAS_TUNING=off (OpenBLAS's own detection), and
  OPENBLAS_CORETYPE=Prescott (the fallback that faiss's OpenBLAS 0.3.15 takes on e.g. Sapphire
  Rapids, forced here so the loss is visible on any x86-64 CPU).
GFLOP/s count 2*n*k*d per Lloyd iteration or assignment (the distance matmul; the rest of the
work is not counted, so 100% of sgemm is out of reach). Then, against the tuned run: agreement
of the final assignments and the relative difference of the k-means cost.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _report import emit, format_table

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [
    ("tuned (default)", {}),
    ("CURATION_BLAS_TUNING=off", {"CURATION_BLAS_TUNING": "off"}),
    ("OPENBLAS_CORETYPE=Prescott", {"OPENBLAS_CORETYPE": "Prescott"}),
]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="rows (default 100000)")
    p.add_argument("--d", type=int, default=384, help="dimensions (default 384, MiniLM's)")
    p.add_argument("--k", type=int, default=1000, help="clusters (default 1000)")
    p.add_argument("--iters", type=int, default=10, help="Lloyd iterations per k-means fit (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="sgemm and assignment repeats; best reported (default 3)")
    p.add_argument("--out", default=None, help="also write the report to DIR/kmeans_speed.txt")
    p.add_argument("--worker", nargs=2, metavar=("DIR", "NAME"), help=argparse.SUPPRESS)
    return p


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def worker(args) -> None:
    """One configuration in a fresh interpreter: OpenBLAS fixes its kernels when faiss first loads."""
    from curation_assets.algorithms.kmeans import assign_to_centroids, fit_kmeans, kmeans_cost
    from resources.blas import blas_report

    folder, name = Path(args.worker[0]), args.worker[1]
    x = np.load(folder / "x.npy")
    fit_kmeans(x[:20_000], 100, n_iter=2)  # warm up faiss's OpenMP threads
    start = time.perf_counter()
    fit = fit_kmeans(x, args.k, seed=0, n_iter=args.iters)
    kmeans_s = time.perf_counter() - start
    labels, sq = assign_to_centroids(x, fit.centroids)
    assign_s = _best(lambda: assign_to_centroids(x, fit.centroids), args.repeats)
    np.save(folder / f"{name}_centroids.npy", fit.centroids)
    np.save(folder / f"{name}_labels.npy", labels)
    report = blas_report()
    print(json.dumps({"kmeans_s": kmeans_s, "assign_s": assign_s, "cost": kmeans_cost(sq),
                      "core": report["faiss_openblas_corename"], "set": report["openblas_coretype_set"]}))


def clustered(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """k Gaussian blobs (unit noise, centres ~ N(0, 2^2)): data with clusters to find."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(k, d)).astype(np.float32)
    x = rng.standard_normal(size=(n, d), dtype=np.float32)
    x += centers[rng.integers(k, size=n)]
    return x


def numpy_blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        return ", ".join(f"{i.get('internal_api')} {i.get('architecture') or ''}".strip() for i in blas) or "?"
    except ImportError:
        return "?"


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    n, d, k = args.n, args.d, args.k
    flop = 2.0 * n * d * k
    parts = [f"n={n}, d={d}, k={k}, {args.iters} Lloyd iterations; load average at start "
             f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}."]
    start_all = time.perf_counter()
    x = clustered(n, d, k)
    b = np.random.default_rng(1).standard_normal(size=(d, k), dtype=np.float32)
    x @ b  # warm up
    sgemm_s = _best(lambda: x @ b, args.repeats)
    peak = flop / sgemm_s / 1e9
    rows = [["numpy sgemm (n x d) @ (d x k)", numpy_blas(), f"{sgemm_s:.3f}", f"{peak:.0f}", "100%"]]

    results = {}
    with tempfile.TemporaryDirectory(prefix="kmeans-speed-") as folder:
        np.save(Path(folder) / "x.npy", x)
        for i, (label, overrides) in enumerate(CONFIGS):
            env = {key: v for key, v in os.environ.items() if key not in ("OPENBLAS_CORETYPE", "CURATION_BLAS_TUNING")}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            env.update(overrides)
            cmd = [sys.executable, __file__, "--worker", folder, str(i), "--n", str(n), "--d", str(d),
                   "--k", str(k), "--iters", str(args.iters), "--repeats", str(args.repeats)]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{label}: worker failed\n{done.stderr}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            r["centroids"] = np.load(Path(folder) / f"{i}_centroids.npy")
            r["labels"] = np.load(Path(folder) / f"{i}_labels.npy")
            results[label] = r
    for what, key, times in (("k-means", "kmeans_s", args.iters), ("assignment", "assign_s", 1)):
        for label, r in results.items():
            gflops = flop * times / r[key] / 1e9
            rows.append([f"faiss {what}, {label}", f"faiss OpenBLAS {r['core']}", f"{r[key]:.3f}",
                         f"{gflops:.0f}", f"{gflops / peak:.0%}"])
    parts.append(format_table(["run", "BLAS kernels", "seconds", "GFLOP/s", "vs sgemm"], rows, align="llrrr"))
    parts.append("(k-means seconds: one fit of all iterations after a warm-up; sgemm and assignment: best of "
                 f"{args.repeats}. Each faiss configuration runs in its own interpreter on the same data.)")

    tuned_label = CONFIGS[0][0]
    tuned = results[tuned_label]
    agree = []
    for label, r in list(results.items())[1:]:
        agree.append([f"{tuned_label} vs {label}", f"{np.mean(tuned['labels'] == r['labels']):.4%}",
                      f"{abs(tuned['cost'] - r['cost']) / r['cost']:.2e}",
                      "yes" if np.array_equal(tuned["centroids"], r["centroids"]) else "no",
                      f"{np.abs(tuned['centroids'] - r['centroids']).max():.2e}"])
    parts.append("\nSame data, same seed:\n" + format_table(
        ["pair", "same assignment", "k-means cost, relative difference", "centroids bit-identical",
         "max |centroid difference|"], agree))
    parts.append(f"\nTotal {time.perf_counter() - start_all:.0f}s.")
    emit("\n".join(parts), args.out, "kmeans_speed.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
