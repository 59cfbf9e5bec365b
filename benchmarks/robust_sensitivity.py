"""Robust sensitivity sampling: which defensive alpha, and what do the adaptive rounds buy?

    .venv/bin/python benchmarks/robust_sensitivity.py [--database PATH] [--seeds 2000]
        [--adaptive-seeds 1000] [--synthetic-seeds 400] [--data-seeds 10] [--out DIR]

Every cell is the median relative error |weighted subset mean - true mean| / true mean of a
fixed per-example loss over many seeded draws, divided by uniform sampling's (a simple random
sample of the same m, the pipeline's baseline) at the same budget: < 1 beats uniform.

Data:
- synthetic (n=3000, d=8, k=20, 10 data seeds; Gaussian blobs with a log-normal radius, as in
  tests/test_sensitivity.py): "follows" = per-blob level + 0.2 d^2, +-20% noise (the loss the
  method assumes); "independent" = log-normal(0, sigma) per example, drawn independently of the
  embedding (the assumption fails completely), sigma = 1 and 0.5 (lighter tails: harder for any
  non-uniform p, since its penalty is relative to the loss's own spread).
- the default store (2,225 BBC News articles, MiniLM, the stored k-means): three fixed linear
  probes, each fit on the pipeline's seeded 5% pilot (estimate_error.per_example_losses):
  "topic" = the stored probe (the loss the pipeline's sensitivities were built for);
  "sentiment-lexicon" = a binary label, 1 when the article has more words from a small positive
  list than the median article (positive minus negative word counts), a sentiment-like property
  that does not follow the topic clusters (a lexicon proxy, not a human sentiment label);
  "random-label" = a seeded random binary label (the probe's loss ignores the embedding).

Fixed-alpha part: v_j = the target probe's loss at each stored representative, balanced lambda,
p = defensive_probabilities(s, alpha), with-replacement draws (alpha = 1 is uniform WITH
replacement, the floor this design can reach). Adaptive part: adaptive_sensitivity_sample with
rounds=2, pilot_fraction=0.2 (pilot inside the budget m), scored either by the known fixed model
("known model": loss_of = the target loss) or by a probe refit on the pilot's labels ("refit
probe": a weaker, different model guides the sampling of the fixed target).
"""

import argparse
import re
import sys
import time

import numpy as np

from _report import emit, format_table
from curation_assets.algorithms.kmeans import assign_to_centroids, fit_kmeans
from curation_assets.algorithms.representatives import nearest_members
from curation_assets.algorithms.robust_sensitivity import (
    DEFAULT_ALPHA,
    adaptive_sensitivity_sample,
    defensive_probabilities,
)
from curation_assets.algorithms.sampling import sample_uniform, sample_with_replacement
from curation_assets.algorithms.scorers import LinearProbeScorer
from curation_assets.algorithms.sensitivity import balanced_lambda, sensitivity_scores
from curation_assets.arrays import sort_by_id
from estimate_error import load_run, per_example_losses
from resources.storage import CurationStore

ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
BUDGETS = (0.05, 0.10)
# (label, keyword arguments of adaptive_sensitivity_sample)
ADAPTIVE = (
    ("default", dict()),  # alpha="auto", lam=None (holder), pilot_share=0.5, caution 1
    ("share=0", dict(pilot_share=0.0)),
    ("lam=bal", dict(lam="balanced")),
    ("caution=0", dict(auto_caution=0.0)),
    (f"alpha={DEFAULT_ALPHA:g}", dict(alpha=DEFAULT_ALPHA)),
    ("r=3", dict(reps_per_cluster=3)),
)
POSITIVE = set("good great best win won success growth gain strong happy love award record rise boost "
               "hope popular top positive benefit improve".split())
NEGATIVE = set("bad worst loss lost fail failure fall decline weak fear crisis cut threat death attack "
               "problem concern warn risk negative drop".split())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", default="data/curation.duckdb", help="store of a finished default run")
    p.add_argument("--seeds", type=int, default=2000, help="draws per fixed-alpha cell on the stored data")
    p.add_argument("--adaptive-seeds", type=int, default=1000, help="draws per adaptive cell on the stored data")
    p.add_argument("--synthetic-seeds", type=int, default=400, help="draws per cell per synthetic data set")
    p.add_argument("--data-seeds", type=int, default=10, help="synthetic data sets per kind")
    p.add_argument("--out", default=None, help="also write the tables to DIR/robust_sensitivity.txt")
    return p


def synthetic(data_seed: int, kind: str, n: int = 3000, d: int = 8, k: int = 20):
    """Cluster ids, squared distances to the fitted centroids, and a fixed loss per example."""
    rng = np.random.default_rng(data_seed)
    centers = rng.normal(scale=10.0, size=(k, d))
    blob = rng.integers(k, size=n)
    radius = rng.lognormal(0.0, 0.75, size=n)
    x = (centers[blob] + radius[:, None] * rng.normal(size=(n, d))).astype(np.float32)
    ids, sq = assign_to_centroids(x, fit_kmeans(x, k, seed=data_seed).centroids)
    sq = sq.astype(np.float64)
    if kind == "follows":
        loss = (rng.uniform(0.5, 3.0, size=k)[blob] + 0.2 * sq) * rng.uniform(0.8, 1.2, n)
    elif kind.startswith("independent"):
        loss = rng.lognormal(0.0, float(kind.split("=")[1]), size=n)
    else:
        raise ValueError(kind)
    return ids, sq, loss


def median_error(loss, draw, seeds: int) -> float:
    truth = loss.sum()
    return float(np.median([abs(draw(s).estimate_sum(loss) - truth) / truth for s in range(seeds)]))


def fixed_alpha_ratios(ids, sq, loss, reps, m, seeds):
    """Uniform's median error and each alpha's ratio to it (v at the given representatives)."""
    n = loss.size
    v = loss[reps]
    s = sensitivity_scores(v, ids, sq, balanced_lambda(v, ids, sq))
    unif = median_error(loss, lambda sd: sample_uniform(n, m, sd), seeds)
    ratios = {}
    for a in ALPHAS:
        p = defensive_probabilities(s, a)
        ratios[a] = median_error(loss, lambda sd: sample_with_replacement(p, m, sd), seeds) / unif
    return unif, ratios, float(np.corrcoef(s, loss)[0, 1])


def adaptive_ratios(ids, sq, loss, m, seeds, fit_scorer, unif):
    out, alphas = {}, {}
    for label, kw in ADAPTIVE:
        chosen = []

        def draw(sd, kw=kw, chosen=chosen):
            smp, info = adaptive_sensitivity_sample(ids, sq, m, sd, fit_scorer, **kw)
            chosen.append(info.alpha)
            return smp

        out[label] = median_error(loss, draw, seeds) / unif
        alphas[label] = float(np.mean(chosen))
    return out, alphas


def summary(values) -> str:
    v = np.asarray(values)
    return f"{np.median(v):.2f} [{v.min():.2f}-{v.max():.2f}]"


def known_model(loss):
    return lambda chosen: (lambda idx: loss[np.asarray(idx)])


def refit_probe(x, y):
    """fit_scorer: a LinearProbeScorer fit on the chosen examples' labels (cached per pilot)."""
    cache = {}

    def fit(chosen):
        key = np.asarray(chosen).tobytes()
        if key not in cache:
            if np.unique(y[chosen]).size < 2:  # a one-class pilot: no probe, a constant loss
                cache[key] = lambda idx: np.ones(len(idx))
            else:
                probe = LinearProbeScorer().fit(x[chosen], y[chosen])
                cache[key] = lambda idx, probe=probe: probe.losses(x[idx], y[idx])
        return cache[key]

    return fit


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    lines = []

    # ---- synthetic -------------------------------------------------------------------------
    m_syn = 100
    syn_fixed, syn_adaptive = [], []
    for kind in ("follows", "independent sigma=1", "independent sigma=0.5"):
        per_alpha = {a: [] for a in ALPHAS}
        per_cfg = {label: [] for label, _ in ADAPTIVE}
        auto_alpha, corr = [], []
        for ds in range(args.data_seeds):
            ids, sq, loss = synthetic(ds, kind.replace(" sigma", ""))
            reps = nearest_members(ids, sq, int(ids.max()) + 1)
            unif, ratios, c = fixed_alpha_ratios(ids, sq, loss, reps, m_syn, args.synthetic_seeds)
            corr.append(c)
            for a in ALPHAS:
                per_alpha[a].append(ratios[a])
            ad, alphas = adaptive_ratios(ids, sq, loss, m_syn, args.synthetic_seeds, known_model(loss), unif)
            for label, _ in ADAPTIVE:
                per_cfg[label].append(ad[label])
            auto_alpha.append(alphas["default"])
        syn_fixed.append([kind, f"{np.mean(corr):.2f}", *[summary(per_alpha[a]) for a in ALPHAS]])
        syn_adaptive.append([kind, f"{np.mean(auto_alpha):.2f}", *[summary(per_cfg[label]) for label, _ in ADAPTIVE]])

    lines += [
        f"Synthetic: n=3000, d=8, k=20, m={m_syn}; median relative error / uniform's, median [min-max] over "
        f"{args.data_seeds} data seeds, {args.synthetic_seeds} draws each.",
        "",
        "Fixed alpha (v at the nearest member, balanced lambda, with replacement; alpha=1: uniform with replacement):",
        format_table(["loss", "corr(s,l)", *[f"alpha={a:g}" for a in ALPHAS]], syn_fixed),
        "",
        "Adaptive, rounds=2, pilot 20% of m, known model. default = alpha 'auto' (choose_alpha on the pilot "
        "from (0.1, 0.2, 0.3, 0.5, 0.7, 1), caution 1 SE), lambda = holder_lambda(q=0.9), pilot_share 0.5, r = "
        "representatives_per_cluster(m0, k); other columns change one thing:",
        format_table(["loss", "mean auto alpha", *[label for label, _ in ADAPTIVE]], syn_adaptive),
        "",
    ]

    # ---- the stored default run --------------------------------------------------------------
    store = CurationStore(database_path=args.database)
    run = load_run(store)
    loss_topic, pilot_size = per_example_losses(run, 0, None, 1.0)
    n = loss_topic.size
    x = run["x"]
    pilot = np.sort(np.random.default_rng(0).choice(n, size=pilot_size, replace=False))
    texts = sort_by_id(store.read("raw_examples")).column("text").to_pylist()
    polarity = np.array([sum((w in POSITIVE) - (w in NEGATIVE) for w in re.findall(r"[a-z]+", t.lower()))
                         for t in texts])
    labels = {
        "topic": run["y"],
        "sentiment-lexicon": np.where(polarity > np.median(polarity), "pos", "neg").astype(object),
        "random-label": np.where(np.random.default_rng(123).random(n) < 0.5, "a", "b").astype(object),
    }
    ids, sq = run["a"], run["d2"].astype(np.float64)
    real_fixed, real_adaptive, task_lines = [], [], []
    for task, y in labels.items():
        loss = loss_topic if task == "topic" else LinearProbeScorer().fit(x[pilot], y[pilot]).losses(x, y)
        corr = None
        for fraction in BUDGETS:
            m = max(1, round(fraction * n))
            unif, ratios, corr = fixed_alpha_ratios(ids, sq, loss, run["rep_rows"], m, args.seeds)
            real_fixed.append([task, f"{fraction:.0%}", m, f"{unif:.4f}", *[f"{ratios[a]:.2f}" for a in ALPHAS]])
            unif_a = median_error(loss, lambda sd: sample_uniform(n, m, sd), args.adaptive_seeds)
            for scorer, fit in (("known model", known_model(loss)), ("refit probe", refit_probe(x, y))):
                ad, alphas = adaptive_ratios(ids, sq, loss, m, args.adaptive_seeds, fit, unif_a)
                real_adaptive.append([task, f"{fraction:.0%}", m, scorer, f"{alphas['default']:.2f}",
                                      *[f"{ad[label]:.2f}" for label, _ in ADAPTIVE]])
        task_lines.append(f"  {task}: mean loss {loss.mean():.3f}, CV {loss.std() / loss.mean():.2f}, "
                          f"corr(balanced s, loss) {corr:.2f}")

    lines += [
        f"Default store: n={n}, k={run['v'].size}; fixed probes fit on the pipeline's seeded pilot of {pilot_size}.",
        *task_lines,
        "",
        f"Fixed alpha (stored representatives, balanced lambda, with replacement), {args.seeds} draws per cell; "
        "ratios to uniform:",
        format_table(["loss", "budget", "m", "uniform err", *[f"alpha={a:g}" for a in ALPHAS]], real_fixed),
        "",
        f"Adaptive, rounds=2, pilot 20% of m, {args.adaptive_seeds} draws per cell; ratios to uniform (its own "
        f"{args.adaptive_seeds} draws):",
        format_table(["loss", "budget", "m", "scorer", "mean auto alpha", *[label for label, _ in ADAPTIVE]],
                     real_adaptive),
        "",
        f"({time.perf_counter() - started:.0f} s)",
    ]
    emit("\n".join(lines), args.out, "robust_sensitivity.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
