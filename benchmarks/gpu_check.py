"""GPU against CPU on a machine with an NVIDIA GPU: do the GPU paths agree with the CPU, and how fast are they.

    .venv/bin/python benchmarks/gpu_check.py [--n 1000000] [--no-pipeline] [--out DIR]
    .venv/bin/python benchmarks/gpu_check.py --cpu-dry-run      # same checks, "GPU" side on the CPU, small n

Checks (exit status 1 when one fails):
- assignment: assign_to_centroids(device="cuda") (faiss GPU build, else torch) against CPU faiss on
  synthetic embeddings: label agreement >= 99.9%;
- k-means: fit_kmeans with ComputeDevice's GPU backend against CPU faiss, both from the same initial
  centroids: final cost within 0.5%;
- embeddings: SentenceEmbedder on the GPU (precision "auto", as the pipeline runs it) against float32 on
  the CPU, on BBC News articles: every row's cosine >= 0.999.
Timings: embeddings (ex/s), k-means GFLOP/s against a torch matmul on the same device in the same run,
and the whole core graph at n synthetic embeddings (benchmarks/scale.py's generate and run, each device in
a fresh process; CUDA_VISIBLE_DEVICES="" hides the GPU from the CPU one).
Without a GPU it says so and exits 0; --cpu-dry-run runs every comparison with device "cpu" (the torch
backend standing in for the GPU) on small n, to exercise this script where there is no GPU.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _report import emit, format_table  # noqa: E402

AGREEMENT_MIN, COST_TOL, COSINE_MIN = 0.999, 0.005, 0.999


def synthetic(n: int, d: int = 384, clusters: int = 100, seed: int = 0):
    """Unit vectors around `clusters` Gaussian centres, as scale.py's generate writes them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def matmul_gflops(device: str, n: int, d: int, k: int) -> float:
    """Best of 3 float32 (n, d) @ (d, k) products on `device`: the peak the k-means rates are set against."""
    import torch

    a = torch.randn(n, d, device=device)
    b = torch.randn(d, k, device=device)
    (a @ b).sum().item()  # warm-up (cuBLAS handles, kernels)
    best = min(timed(lambda: a @ b, device)[1] for _ in range(3))
    return 2 * n * d * k / best / 1e9


def check_kmeans(gpu: tuple[str, str], n_assign: int, n_fit: int, k: int, n_iter: int) -> tuple[list, list]:
    """Assignment agreement and k-means cost, GPU backend vs CPU faiss; timing rows."""
    from curation_assets.algorithms.kmeans import assign_to_centroids, fit_kmeans, kmeans_cost
    from curation_assets.algorithms.torch_kmeans import faiss_initial_rows, torch_assign

    backend, device = gpu
    x = synthetic(max(n_assign, n_fit))
    fit = x[:n_fit]
    init = fit[faiss_initial_rows(n_fit, k, 0)]

    def gpu_assign(c):
        # in the dry run the "GPU" is torch on the CPU; on a GPU it is the pipeline's own dispatch
        return torch_assign(x[:n_assign], c, device) if device == "cpu" else assign_to_centroids(x[:n_assign], c,
                                                                                                  device=device)

    res_cpu, t_cpu = timed(lambda: fit_kmeans(fit, k, n_iter=n_iter, backend="faiss", init_centroids=init), "cpu")
    fit_kmeans(fit[: min(n_fit, 4 * k)], k, n_iter=1, backend=backend, device=device)  # warm-up
    res_gpu, t_gpu = timed(lambda: fit_kmeans(fit, k, n_iter=n_iter, backend=backend, device=device,
                                              init_centroids=init), device)
    cost_cpu = kmeans_cost(assign_to_centroids(fit, res_cpu.centroids)[1])
    cost_gpu = kmeans_cost(assign_to_centroids(fit, res_gpu.centroids)[1])
    gpu_assign(init[:2])  # warm-up
    (lab_cpu, _), ta_cpu = timed(lambda: assign_to_centroids(x[:n_assign], res_cpu.centroids), "cpu")
    (lab_gpu, _), ta_gpu = timed(lambda: gpu_assign(res_cpu.centroids), device)
    agreement = float((lab_cpu == lab_gpu).mean())
    rel = cost_gpu / cost_cpu - 1
    d = x.shape[1]
    flops = 2.0 * n_fit * k * d * n_iter
    peak_gpu = matmul_gflops(device, n_fit, d, k)
    peak_cpu = peak_gpu if device == "cpu" else matmul_gflops("cpu", n_fit, d, k)
    checks = [
        ["assignment agreement", f"{agreement:.5f}", f">= {AGREEMENT_MIN}", agreement >= AGREEMENT_MIN],
        ["k-means cost, GPU / CPU - 1", f"{rel:+.5f}", f"|.| <= {COST_TOL}", abs(rel) <= COST_TOL],
    ]
    times = [
        [f"k-means fit (n={n_fit:,}, k={k}, {n_iter} it)", f"{t_gpu:.2f} s", f"{t_cpu:.2f} s", f"{t_cpu / t_gpu:.1f}x"],
        ["k-means GFLOP/s (vs torch matmul same device)", f"{flops / t_gpu / 1e9:.0f} ({flops / t_gpu / 1e9 / peak_gpu:.2f})",
         f"{flops / t_cpu / 1e9:.0f} ({flops / t_cpu / 1e9 / peak_cpu:.2f})", ""],
        ["torch matmul GFLOP/s", f"{peak_gpu:.0f}", f"{peak_cpu:.0f}", f"{peak_gpu / peak_cpu:.1f}x"],
        [f"assignment (n={n_assign:,}, k={k})", f"{ta_gpu:.2f} s", f"{ta_cpu:.2f} s", f"{ta_cpu / ta_gpu:.1f}x"],
    ]
    return checks, times


def check_embeddings(device: str, n_texts: int, max_seq_length: int | None) -> tuple[list, list]:
    """GPU embeddings ("auto" precision) vs CPU float32 on BBC articles: cosine per row; ex/s each."""
    import numpy as np

    from resources import ComputeDevice, ExampleSource, SentenceEmbedder

    texts = []
    for i in range(4):
        texts += ExampleSource().load_shard(f"bbc-{i}").column("text").to_pylist()
    texts = texts[:: max(1, len(texts) // n_texts)][:n_texts]
    gpu = SentenceEmbedder(compute=ComputeDevice(device=device), max_seq_length=max_seq_length)
    cpu = SentenceEmbedder(compute=ComputeDevice(device="cpu"), precision="float32", max_seq_length=max_seq_length)
    gpu.encode(texts[:8])
    cpu.encode(texts[:8])
    a, t_gpu = timed(lambda: gpu.encode(texts), device)
    b, t_cpu = timed(lambda: cpu.encode(texts), "cpu")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    precision = gpu.precision_report()["precision"]
    checks = [[f"embedding cosine, {device} ({precision}) vs cpu float32, min", f"{cos.min():.6f}",
               f">= {COSINE_MIN}", bool(cos.min() >= COSINE_MIN)]]
    times = [[f"embeddings ex/s ({len(texts)} BBC articles, {precision} vs float32)",
              f"{len(texts) / t_gpu:.1f}", f"{len(texts) / t_cpu:.1f}", f"{t_cpu / t_gpu:.1f}x"]]
    return checks, times


def pipeline(n: int, hide_gpu: bool, work: Path) -> dict:
    """The core graph at n synthetic embeddings, in a fresh process (scale.py's run)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if hide_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run([sys.executable, __file__, "--_pipeline", str(work / "input"),
                          str(work / ("cpu" if hide_gpu else "gpu") / "c.duckdb")],
                         check=True, stdout=subprocess.PIPE, cwd=ROOT, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="run the comparisons with device 'cpu' on small n")
    p.add_argument("--n", type=int, default=None, help="pipeline size (default 1,000,000; dry run 2,000)")
    p.add_argument("--no-pipeline", action="store_true", help="skip the whole-graph timing")
    p.add_argument("--out", default=None)
    p.add_argument("--_pipeline", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._pipeline:
        sys.path.insert(0, str(Path(__file__).parent))
        from scale import run

        print(json.dumps(run(Path(args._pipeline[0]), Path(args._pipeline[1]))))
        return 0

    import resources  # noqa: F401  (tunes faiss's BLAS before anything imports faiss)
    import torch

    dry = args.cpu_dry_run
    if not dry and not torch.cuda.is_available():
        print("no GPU: nothing to check (torch sees no CUDA device). "
              "Run with --cpu-dry-run to exercise the checks on the CPU.")
        return 0
    if dry:
        card, gpu = f"none: CPU dry run ({platform.processor() or platform.machine()})", ("torch", "cpu")
        n_assign, n_fit, k, n_iter, n_texts, seq = 5_000, 5_000, 50, 5, 16, 128
    else:
        from resources import ComputeDevice

        card, gpu = torch.cuda.get_device_name(0), ComputeDevice(device="cuda").kmeans_backend()
        n_assign, n_fit, k, n_iter, n_texts, seq = 1_000_000, 100_000, 1_000, 25, 512, None
    n = args.n or (2_000 if dry else 1_000_000)

    checks, times = check_kmeans(gpu, n_assign, n_fit, k, n_iter)
    c, t = check_embeddings(gpu[1], n_texts, seq)
    checks += c
    times += t
    if not args.no_pipeline:
        from scale import generate

        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            work = Path(tmp)
            generate(work / "input", n)
            on_gpu = pipeline(n, hide_gpu=False, work=work)
            on_cpu = on_gpu if dry else pipeline(n, hide_gpu=True, work=work)
        for stage in on_gpu["stages"]:
            g, c_ = on_gpu["stages"][stage], on_cpu["stages"].get(stage, float("nan"))
            times.append([f"pipeline n={n:,}: {stage}", f"{g:.1f} s", f"{c_:.1f} s", f"{c_ / max(g, 1e-9):.1f}x"])
        times.append([f"pipeline n={n:,}: total (peak RSS GPU/CPU {on_gpu['peak_rss_mb']:,.0f}/"
                      f"{on_cpu['peak_rss_mb']:,.0f} MB)", f"{on_gpu['total']:.1f} s", f"{on_cpu['total']:.1f} s",
                      f"{on_cpu['total'] / on_gpu['total']:.1f}x"])

    ok = all(row[3] for row in checks)
    text = (f"GPU check on {card}; k-means backend {gpu[0]} on {gpu[1]}; torch {torch.__version__}"
            f"{' (dry run: the GPU side runs on the CPU)' if dry else ''}\n\n"
            + format_table(["check", "value", "needs", "result"],
                           [r[:3] + ["PASS" if r[3] else "FAIL"] for r in checks]) + "\n\n"
            + format_table(["timing", "GPU" if not dry else "GPU (cpu)", "CPU", "speed-up"], times) + "\n\n"
            + ("all checks passed" if ok else "SOME CHECKS FAILED"))
    emit(text, args.out, "gpu_check.txt")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
