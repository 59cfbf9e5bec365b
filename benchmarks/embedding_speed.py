"""Embedding throughput: plain sentence-transformers `encode` vs SentenceEmbedder at each precision.

    .venv/bin/python benchmarks/embedding_speed.py [--n 512] [--rounds 2] [--out DIR]

On N BBC News articles (evenly spaced over the bundled corpus, full length: MiniLM cuts at 256
tokens), in one process with the model loaded and warm, times (a) `model.encode(texts,
batch_size=64)`, (b) SentenceEmbedder float32, (c) bfloat16, (d) auto. Rounds alternate the order
and the fastest of each counts, so load from other processes on the shared cores does not land
on one side only. Ratios are against (a) from the same run; cosines are against (b)'s vectors.
auto's first call in a process also pays a one-off calibration (float32 + reduced precision on
the first 64 texts); it is timed on its own, before the rounds.

The table goes to stdout (and to DIR/embedding_speed.txt with --out); progress goes to stderr.
"""

import argparse
import os
import sys
import time

from _report import emit, format_table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=512, help="articles to embed (default 512)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest counts")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default=None, help="also write the table to DIR/embedding_speed.txt")
    return p


def _time(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from resources import ComputeDevice, ExampleSource, SentenceEmbedder
    from resources import embedder as embedder_module

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    source = ExampleSource()
    corpus = [t for s in source.list_shards() for t in source.load_shard(s).column("text").to_pylist()]
    every = max(1, len(corpus) // args.n)
    texts = corpus[::every][: args.n]
    compute = ComputeDevice(device="cpu")
    emb = {p: SentenceEmbedder(compute=compute, batch_size=args.batch_size, precision=p)
           for p in ["float32", "bfloat16", "auto"]}
    model = emb["float32"]._load()
    tokens = [min(len(ids), model.max_seq_length) for ids in model.tokenizer(texts, verbose=False)["input_ids"]]

    log("warm-up")
    model.encode(texts[:64], batch_size=args.batch_size)
    emb["bfloat16"].encode(texts[:64])
    embedder_module._AUTO_DECISIONS.clear()  # so the one-off calibration is timed here, on its own
    log("auto's calibration")
    load_before = os.getloadavg()[0]
    calibration_s, report = _time(lambda: emb["auto"]._calibrate(model, texts))

    calls = {
        "(a) sentence-transformers model.encode": lambda: model.encode(texts, batch_size=args.batch_size),
        "(b) SentenceEmbedder float32": lambda: emb["float32"].encode(texts),
        "(c) SentenceEmbedder bfloat16": lambda: emb["bfloat16"].encode(texts),
        "(d) SentenceEmbedder auto": lambda: emb["auto"].encode(texts),
    }
    best, out = {name: float("inf") for name in calls}, {}
    for r in range(args.rounds):
        for name in sorted(calls, reverse=bool(r % 2)):  # alternate which goes first
            log(f"round {r + 1}: {name}")
            seconds, out[name] = _time(calls[name])
            best[name] = min(best[name], seconds)

    n = len(texts)
    ref = np.asarray(out["(b) SentenceEmbedder float32"], dtype=np.float64)
    base = best["(a) sentence-transformers model.encode"]
    rows = []
    for name in calls:
        x = np.asarray(out[name], dtype=np.float64)
        cos = (x * ref).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(ref, axis=1))
        rows.append([name, f"{best[name]:.2f}", f"{n / best[name]:.1f}", f"{base / best[name]:.2f}",
                     f"{cos.min():.6f}", f"{cos.mean():.6f}"])
    flags = {name: bool(getattr(torch.cpu, f"_is_{name}_supported")()) for name in ["avx512", "avx512_bf16", "amx_tile"]}
    cal = "" if report["min_cosine"] is None else (
        f", calibration min cosine {report['min_cosine']:.6f} (mean {report['mean_cosine']:.6f})")
    text = "\n".join([
        f"Embedding speed: {n} BBC News articles (every {every}th of {len(corpus)}), {model.max_seq_length}-token cap, "
        f"median {int(np.median(tokens))} tokens, {sum(t >= model.max_seq_length for t in tokens)} cut; "
        f"batch {args.batch_size}; device cpu, torch {torch.__version__}, threads {torch.get_num_threads()}",
        f"CPU: {', '.join(f'{k}={v}' for k, v in flags.items())}; 1-min load average (this process included) "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)",
        f"auto chose {report['precision']} (needs native reduced precision and min cosine >= "
        f"{report['threshold']} on the first {embedder_module.CALIBRATION_TEXTS} texts){cal};",
        f"that calibration, paid once per process by auto's first call, took {calibration_s:.2f} s",
        f"Fastest of {args.rounds} alternating rounds, model loaded and warm; ratio = (a)'s seconds / the row's "
        "seconds (above 1: faster than plain sentence-transformers); cosines against (b)'s vectors.",
        "",
        format_table(["what", "wall s", "examples/s", "ratio vs (a)", "min cos", "mean cos"], rows),
    ])
    emit(text, args.out, "embedding_speed.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
