"""How flat over concepts is each subset, and what does hierarchical k-means cost?

    .venv/bin/python benchmarks/hierarchical.py [--database PATH] [--seeds 5] [--synthetic-seeds 10] [--out DIR]

Vo et al. (2024) balance a subset over the clusters of a hierarchical k-means with resampling so
that its concept distribution is flat even when the data is long-tailed. This compares, at a 10%
budget, the concept distribution of:
- uniform: a simple random sample;
- flat k-means balanced: the pipeline's flat k-means (`centroids`, k = round(sqrt(n/2))), the
  budget split equally over its clusters (water-filling), random within a cluster;
- hierarchical balanced: `hierarchical_centroids` + `balanced_subset` with their defaults;
and, to show where the gain comes from, the hierarchy without resampling, and one level
(k = round(sqrt(n/2))) with resampling and with k-means++ alone.

Concepts: on the default data (a finished `curate run` store) the 5 BBC topics, which are nearly
balanced already (386-511 articles); on a synthetic long-tailed mixture, 50 Gaussian concepts
with Zipf(1) sizes (1,111 down to 22 of 4,998, 16 dimensions), where the method is meant to help.
Flatness: entropy of the concept shares (ln C is perfectly flat), largest/smallest share (inf
when a concept is missing), largest share. Mean [min, max] over seeds. Run time: the fit alone,
best of --repeats, hierarchical vs flat k-means on the same embeddings.
"""

import argparse
import os
import time

import faiss
import numpy as np

from _report import emit, format_table
from curation_assets.algorithms.balanced_sampling import concept_balance, hierarchical_balanced_sample
from curation_assets.algorithms.hierarchical_kmeans import default_clusters_per_level, fit_hierarchical_kmeans
from curation_assets.algorithms.kmeans import assign_to_centroids, default_n_clusters, fit_kmeans
from curation_assets.algorithms.sampling import sample_uniform
from curation_assets.arrays import embedding_matrix, sort_by_id
from resources.storage import CurationStore


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", default="data/curation.duckdb", help="store of a finished run (default: curate's)")
    p.add_argument("--seeds", type=int, default=5, help="k-means and sampling seeds on the default data (default 5)")
    p.add_argument("--synthetic-seeds", type=int, default=10, help="data seeds of the synthetic mixture (default 10)")
    p.add_argument("--budget-fraction", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3, help="timing repeats; the best is reported (default 3)")
    p.add_argument("--out", default=None, help="also write the tables to DIR/hierarchical.txt")
    return p


def zipf_mixture(seed: int, n: int = 5000, n_concepts: int = 50, d: int = 16, scale: float = 1.5):
    """Unit-variance Gaussian concepts, centres ~ N(0, scale^2), sizes ~ 1/rank (the test's data)."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_concepts + 1)
    sizes = np.maximum(1, np.round(n * w / w.sum())).astype(int)
    centers = rng.normal(size=(n_concepts, d)) * scale
    concept = np.repeat(np.arange(n_concepts), sizes)
    return (centers[concept] + rng.normal(size=(concept.size, d))).astype(np.float32), concept


def load_bbc(database: str):
    store = CurationStore(database_path=database)
    emb = sort_by_id(store.read("embeddings", columns=["example_id", "embedding"]))
    raw = sort_by_id(store.read("raw_examples", columns=["example_id", "label"]))
    if not emb.column("example_id").equals(raw.column("example_id")):
        raise SystemExit("embeddings and raw_examples hold different examples; re-run the pipeline")
    names, concept = np.unique(np.asarray(raw.column("label").to_pylist(), dtype=str), return_inverse=True)
    return embedding_matrix(emb.column("embedding")), concept, list(names)


def subsets(x, m: int, seed: int) -> dict[str, np.ndarray]:
    """Row indices of every compared subset for one seed."""
    n = x.shape[0]
    k = default_n_clusters(n)
    flat, _ = assign_to_centroids(x, fit_kmeans(x, k, seed=seed).centroids)
    hier = fit_hierarchical_kmeans(x, seed=seed)
    no_rs = fit_hierarchical_kmeans(x, seed=seed, resampling_steps=0)
    one_rs = fit_hierarchical_kmeans(x, [k], seed=seed)
    one_pp = fit_hierarchical_kmeans(x, [k], seed=seed, resampling_steps=0)

    def balanced(h):
        return hierarchical_balanced_sample(h.leaf_assignment, h.parents, m, seed=seed).indices

    return {
        "uniform": sample_uniform(n, m, seed).indices,
        "flat k-means balanced": hierarchical_balanced_sample(flat, [], m, seed=seed).indices,
        "hierarchical balanced (default)": balanced(hier),
        "  same hierarchy, no resampling": balanced(no_rs),
        "  one level + resampling": balanced(one_rs),
        "  one level, k-means++ only": balanced(one_pp),
    }


def flatness_table(runs, n_concepts: int, fraction: float, names=None) -> str:
    """One row per method over `runs`, each (x, concept, seed): the seed drives every method."""
    stats, shares = {}, {}
    for x, concept, seed in runs:
        m = max(1, int(round(fraction * x.shape[0])))
        for method, idx in subsets(x, m, seed).items():
            b = concept_balance(concept[idx], n_concepts)
            stats.setdefault(method, []).append((b["entropy"], b["max_over_min"], b["max_share"],
                                                 b["concepts_covered"]))
            shares.setdefault(method, []).append(np.bincount(concept[idx], minlength=n_concepts) / idx.size)
    pops = [concept_balance(concept, n_concepts) for _, concept, _ in runs]
    rows = [["all examples", f"{np.mean([p['entropy'] for p in pops]):.3f}", "",
             f"{np.median([p['max_over_min'] for p in pops]):.2f}", "",
             f"{np.mean([p['max_share'] for p in pops]):.3f}", n_concepts]]
    for method, v in stats.items():
        v = np.array(v)
        rows.append([method, f"{v[:, 0].mean():.3f}", f"[{v[:, 0].min():.3f}, {v[:, 0].max():.3f}]",
                     f"{np.median(v[:, 1]):.2f}", f"[{v[:, 1].min():.2f}, {v[:, 1].max():.2f}]",
                     f"{v[:, 2].mean():.3f}", f"{v[:, 3].min():.0f}"])
    out = format_table(["subset", "entropy", "[min, max]", "max/min share (median)", "[min, max]",
                        "max share", "concepts (min)"], rows)
    out += f"\n(perfectly flat: entropy ln {n_concepts} = {np.log(n_concepts):.3f}, max/min 1)"
    if names is not None:  # few concepts: show the shares themselves
        concept = runs[0][1]
        share_rows = [["all examples", *[f"{v:.3f}" for v in np.bincount(concept) / concept.size]]]
        share_rows += [[method, *[f"{v:.3f}" for v in np.mean(sh, axis=0)]] for method, sh in shares.items()]
        out += "\n\nMean share of each concept:\n" + format_table(["subset", *names], share_rows)
    return out


def clusters_by_topic(x, concept, names, seed: int = 0) -> str:
    """How many top-level clusters each topic is the majority of: balancing gives every cluster an
    equal share, so a topic that owns more clusters gets more of the subset."""
    k = default_n_clusters(x.shape[0])
    flat, _ = assign_to_centroids(x, fit_kmeans(x, k, seed=seed).centroids)
    h = fit_hierarchical_kmeans(x, seed=seed)
    rows = []
    for method, cluster in (("flat k-means", flat), ("hierarchical (top level)", h.example_clusters()[:, -1])):
        majority = [np.bincount(concept[cluster == c], minlength=len(names)).argmax()
                    for c in np.unique(cluster)]
        rows.append([method, *np.bincount(majority, minlength=len(names)).tolist()])
    return format_table(["clusters whose majority is", *names], rows)


def timing_table(x, repeats: int, seed: int = 0) -> str:
    """Best of `repeats` (after a warm-up) with faiss's default threads and with one thread: on a
    busy machine faiss's spinning OpenMP threads slow small runs many times over."""
    n = x.shape[0]
    k = default_n_clusters(n)
    ks = list(default_clusters_per_level(n))
    runs = [
        (f"flat k-means, k={k}, 25 iterations (the centroids asset)", lambda: fit_kmeans(x, k, seed=seed)),
        (f"flat k-means, k={k}, 50 iterations", lambda: fit_kmeans(x, k, seed=seed, n_iter=50)),
        (f"hierarchical {ks}, 5 resampling steps (default)", lambda: fit_hierarchical_kmeans(x, seed=seed)),
        (f"hierarchical {ks}, no resampling", lambda: fit_hierarchical_kmeans(x, seed=seed, resampling_steps=0)),
    ]
    default_threads = faiss.omp_get_max_threads()
    columns = []
    for threads in (default_threads, 1):
        faiss.omp_set_num_threads(threads)
        times = []
        for _, fn in runs:
            fn()  # warm up (faiss's thread pool, caches)
            times.append(min(_seconds(fn) for _ in range(repeats)))
        columns.append(times)
    faiss.omp_set_num_threads(default_threads)
    rows = []
    for i, (name, _) in enumerate(runs):
        rows.append([name, *[f"{c[i]:.3f}  ({c[i] / c[0]:.1f}x)" for c in columns]])
    return format_table(["fit", f"seconds, faiss {default_threads} threads (vs flat)",
                         "seconds, faiss 1 thread (vs flat)"], rows)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.seeds < 1 or args.synthetic_seeds < 1 or args.repeats < 1:
        raise SystemExit("--seeds, --synthetic-seeds, --repeats: must be at least 1")
    parts = [f"Budget {args.budget_fraction:.0%}; load average at start {os.getloadavg()[0]:.1f} on "
             f"{os.cpu_count()} CPUs, faiss threads {faiss.omp_get_max_threads()}, OMP_WAIT_POLICY="
             f"{os.environ.get('OMP_WAIT_POLICY', 'unset')} (on a busy machine, spinning OpenMP threads slow "
             "small faiss runs many times over; PASSIVE avoids it)."]
    start = time.perf_counter()
    x, concept, names = load_bbc(args.database)
    n = x.shape[0]
    parts.append(f"\n== Default data: {n} BBC articles, concepts = the {len(names)} topics; hierarchy "
                 f"{list(default_clusters_per_level(n))}, flat k = {default_n_clusters(n)}; {args.seeds} seeds ==\n"
                 + flatness_table([(x, concept, seed) for seed in range(args.seeds)], len(names),
                                  args.budget_fraction, names)
                 + f"\n\nTop-level clusters per majority topic (seed 0):\n{clusters_by_topic(x, concept, names)}")
    parts.append("\nRun time of the fit on the default data (no sampling):\n" + timing_table(x, args.repeats))
    synthetic = [(*zipf_mixture(seed), seed) for seed in range(args.synthetic_seeds)]
    xs, cs, _ = synthetic[0]
    sizes = np.bincount(cs)
    parts.append(f"\n== Synthetic long-tailed mixture: {xs.shape[0]} points, 50 concepts (Zipf sizes "
                 f"{sizes.max()}..{sizes.min()}), 16 dimensions; hierarchy "
                 f"{list(default_clusters_per_level(xs.shape[0]))}, flat k = {default_n_clusters(xs.shape[0])}; "
                 f"{args.synthetic_seeds} data seeds ==\n" + flatness_table(synthetic, 50, args.budget_fraction))
    parts.append("\nRun time of the fit on the synthetic mixture (data seed 0):\n" + timing_table(xs, args.repeats))
    parts.append(f"\nTotal {time.perf_counter() - start:.0f}s.")
    emit("\n".join(parts), args.out, "hierarchical.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
