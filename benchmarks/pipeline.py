"""Time the default end-to-end run (`curate run`: bundled BBC News, 4 shards, MiniLM) and each stage.

    .venv/bin/python benchmarks/pipeline.py [--max-examples-per-shard N] [--out DIR] [--database PATH]

Runs `run_pipeline` against a fresh temporary Dagster instance and store, then reads every step's
start/end from the instance's event log, so the per-stage times are the ones Dagster recorded
(what the UI shows), and whatever is left of the wall time is Dagster's own overhead. A baseline
row times plain sentence-transformers `model.encode` against `SentenceEmbedder.encode` on the
same texts in the same process, so the embedding stage can be judged against the model alone.

The table goes to stdout (and to DIR/pipeline.txt with --out); progress goes to stderr.
--database keeps the store (e.g. for benchmarks/estimate_error.py); by default it is temporary.
"""

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

from _report import format_table

ASSET_STEPS = ["raw_examples", "embeddings", "centroids", "cluster_assignments", "representative_losses",
               "sensitivities", "subsets"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-examples-per-shard", type=int, default=None, help="cap each shard (quick runs)")
    p.add_argument("--out", default=None, help="also write the table to DIR/pipeline.txt")
    p.add_argument("--database", default=None, help="keep the store at this DuckDB path (default: temporary)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--baseline-examples", type=int, default=None,
                   help="texts for the encode baseline (default: all of them)")
    return p


def _step_times(instance, run_ids: list[str]) -> tuple[dict, float, float]:
    """Per step key: (runs, seconds, summed 'seconds' metadata); plus total run and step seconds."""
    steps = collections.defaultdict(lambda: [0, 0.0, 0.0])
    run_total = step_total = 0.0
    for run_id in run_ids:
        stats = instance.get_run_stats(run_id)
        run_total += stats.end_time - stats.start_time
        for s in instance.get_run_step_stats(run_id):
            row = steps[s.step_key]
            row[0] += 1
            row[1] += s.end_time - s.start_time
            step_total += s.end_time - s.start_time
            for event in s.materialization_events:
                meta = event.asset_materialization.metadata
                if "seconds" in meta:
                    row[2] += meta["seconds"].value
    return steps, run_total, step_total


def _time(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="curation-bench-") as tmp:
        # A fresh instance: set before anything imports dagster or matplotlib.
        os.environ["DAGSTER_HOME"] = str(Path(tmp) / "dagster_home")
        from curation_assets.dagster_home import ensure_project_home

        ensure_project_home(tmp)

        import numpy as np
        from dagster import DagsterInstance

        from curation_assets.pipeline import run_pipeline
        from resources import ComputeDevice, CurationStore, ExampleSource, SentenceEmbedder

        compute = ComputeDevice(device=args.device)
        store = CurationStore(database_path=args.database or str(Path(tmp) / "curation.duckdb"))
        resources = {
            "source": ExampleSource(max_examples_per_shard=args.max_examples_per_shard),
            "store": store,
            "compute": compute,
            "embedder": SentenceEmbedder(compute=compute),
        }
        log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        with DagsterInstance.get() as instance:
            total, results = _time(run_pipeline, instance, resources, None, log)
            steps, run_total, step_total = _step_times(instance, [r.run_id for r in results])

        texts = store.read("raw_examples", columns=["text"]).column("text").to_pylist()
        n = len(texts)
        rows = []
        for key in [*ASSET_STEPS, *sorted(set(steps) - set(ASSET_STEPS))]:
            if key not in steps:
                continue
            runs, seconds, _ = steps[key]
            name = key if key in ASSET_STEPS else f"check: {key}"
            rate = f"{n / seconds:.0f}" if key in ASSET_STEPS else ""
            rows.append([name, runs, f"{seconds:.2f}", f"{seconds / total:.1%}", rate])
        overheads = [
            ("Dagster, inside runs (not in a step)", len(results), run_total - step_total),
            ("Dagster, between runs (materialize setup)", len(results), total - run_total),
        ]
        rows += [[name, runs, f"{s:.2f}", f"{s / total:.1%}", ""] for name, runs, s in overheads]
        rows.append(["total (run_pipeline wall time)", len(results), f"{total:.2f}", "100.0%", f"{n / total:.0f}"])

        # Baseline: the same texts through the wrapper and through the model, one process, warm.
        log("baseline: timing SentenceEmbedder.encode and model.encode")
        sample = texts[: args.baseline_examples] if args.baseline_examples else texts
        embedder = SentenceEmbedder(compute=compute)
        model = embedder._load()
        embedder.encode(sample[:64])  # warm-up: first-call allocations, thread pools
        plain_s, plain = _time(lambda: model.encode(sample, batch_size=embedder.batch_size,
                                                    normalize_embeddings=embedder.normalize,
                                                    convert_to_numpy=True, show_progress_bar=False))
        wrap_s, wrapped = _time(embedder.encode, sample)
        max_diff = float(np.abs(np.asarray(plain, dtype=np.float32) - wrapped).max())
        in_step_s = steps["embeddings"][2]
        base = [
            ["sentence-transformers model.encode (baseline)", len(sample), plain_s, plain_s],
            ["SentenceEmbedder.encode", len(sample), wrap_s, plain_s],
            ["encode inside the embeddings step (metadata)", n, in_step_s, plain_s * n / len(sample)],
            ["embeddings step (Dagster step time)", n, steps["embeddings"][1], plain_s * n / len(sample)],
        ]
        base_rows = [[name, k, f"{s:.2f}", f"{k / s:.1f}", f"{s / ref:.3f}"] for name, k, s, ref in base]

    device = embedder.device
    out = "\n".join([
        f"Pipeline benchmark: n={n} examples, {len(results)} Dagster runs, "
        f"device {device}, torch threads {_torch_threads()}, "
        f"max_examples_per_shard={args.max_examples_per_shard}",
        "",
        format_table(["stage", "runs", "wall s", "share", "examples/s"], rows),
        "",
        "Embedding vs plain sentence-transformers (same texts, same process, model already loaded;",
        f"ratio = seconds / baseline seconds scaled to the same count; max |difference| {max_diff:.1e}):",
        "",
        format_table(["what", "texts", "wall s", "texts/s", "ratio"], base_rows),
    ])
    print(out)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "pipeline.txt").write_text(out + "\n")
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
