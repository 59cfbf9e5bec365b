"""Datasets the quality benchmarks run on, all offline: (x, y) with x float32 vectors, y labels.

- bbc, bbc_imbalanced, bbc_noisy: the bundled BBC News articles as MiniLM embeddings (read from a
  store made by `curate run`, or embedded here once and cached under benchmarks/out/); 'business'
  cut to 5% of its articles; 20% of the labels replaced by another class.
- digits, breast_cancer, wine: scikit-learn's bundled sets as precomputed vectors (standardised).
- synth_cluster_loss: a Gaussian mixture whose clusters carry the labels (the loss follows them).
- synth_cluster_difficulty: the same geometry, clean labels (each cluster one class) and spreads
  from tight to wide: the probe's loss is near 0 in tight clusters and grows from the centroid
  outwards in wide ones, the Hoelder premise of sensitivity sampling.
- synth_independent: the same geometry, labels from a random hyperplane crossing every cluster.
- synth_longtail: Zipf-sized clusters, a few of them rare concepts with their own label.
- synth_margin: tight clusters, each one class (labels from a hyperplane through its centre), at
  distances to that class boundary from touching to far: the probe's loss is a smooth function of
  position, so it follows the clusters and, inside a cluster, the side nearer the boundary.
- synth_overlap: clusters in pairs of two classes, the pair's two centres from on top of each other
  to far apart: the loss is ambiguity inside the overlapping pairs, not a cluster's mean.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / "out"
NAMES = ("bbc", "bbc_imbalanced", "bbc_noisy", "digits", "breast_cancer", "wine",
         "synth_cluster_loss", "synth_cluster_difficulty", "synth_independent", "synth_longtail", "synth_margin",
         "synth_overlap")


def _md5_unit(ids) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.md5(str(i).encode()).digest()[:4], "little") / 2**32 for i in ids])


def bbc(database: str | None = None):
    """(ids, x, y) of the 2,225 articles: from a store if given and built, else embedded once."""
    if database and Path(database).exists():
        from curation_assets.arrays import embedding_matrix, sort_by_id
        from resources.storage import CurationStore

        store = CurationStore(database_path=database)
        raw = sort_by_id(store.read("raw_examples", columns=["example_id", "label"]))
        emb = sort_by_id(store.read("embeddings"))
        return (np.array(raw.column("example_id").to_pylist()), embedding_matrix(emb.column("embedding")),
                np.array(raw.column("label").to_pylist(), dtype=object))
    cache = CACHE / "bbc_minilm.npz"
    if not cache.exists():
        from resources import ComputeDevice, ExampleSource, SentenceEmbedder

        source = ExampleSource(num_shards=1)
        t = source.load_shard("bbc-0")
        x = SentenceEmbedder(compute=ComputeDevice()).encode(t.column("text").to_pylist())
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ids=np.array(t.column("example_id").to_pylist()), x=x,
                 y=np.array(t.column("label").to_pylist()))
    d = np.load(cache, allow_pickle=False)
    order = np.argsort(d["ids"])
    return d["ids"][order], d["x"][order].astype(np.float32), d["y"][order].astype(object)


def _mixture(n: int, k: int, d: int, seed: int, sizes=None):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3.0
    p = np.full(k, 1.0 / k) if sizes is None else np.asarray(sizes, dtype=float) / np.sum(sizes)
    c = rng.choice(k, size=n, p=p)
    x = centers[c] + rng.normal(size=(n, d))
    return x.astype(np.float32), c, rng


def load(name: str, database: str | None = None):
    """(x, y) of a dataset in NAMES."""
    from sklearn import datasets as skd
    from sklearn.preprocessing import StandardScaler

    if name.startswith("bbc"):
        ids, x, y = bbc(database)
        if name == "bbc_imbalanced":
            keep = (y != "business") | (_md5_unit(ids) < 0.05)
            return x[keep], y[keep]
        if name == "bbc_noisy":
            rng = np.random.default_rng(7)
            classes = np.unique(y)
            flip = rng.random(y.size) < 0.2
            other = np.array([rng.choice(classes[classes != v]) for v in y], dtype=object)
            return x, np.where(flip, other, y)
        return x, y
    if name in ("digits", "breast_cancer", "wine"):
        data = {"digits": skd.load_digits, "breast_cancer": skd.load_breast_cancer, "wine": skd.load_wine}[name]()
        return StandardScaler().fit_transform(data.data).astype(np.float32), data.target.astype(str).astype(object)
    if name == "synth_cluster_loss":
        x, c, rng = _mixture(4000, 24, 16, 11)
        cls = rng.integers(0, 4, size=24)  # each cluster mostly one class; purity differs by cluster
        purity = rng.uniform(0.6, 1.0, size=24)
        y = np.where(rng.random(x.shape[0]) < purity[c], cls[c], rng.integers(0, 4, size=x.shape[0]))
        return x, y.astype(str).astype(object)
    if name == "synth_cluster_difficulty":
        rng = np.random.default_rng(14)
        centers = rng.normal(size=(24, 16)) * 3.0
        c = rng.integers(0, 24, size=4000)
        spread = np.geomspace(0.3, 3.0, 24)[rng.permutation(24)]
        x = (centers[c] + spread[c, None] * rng.normal(size=(4000, 16))).astype(np.float32)
        return x, rng.integers(0, 4, size=24)[c].astype(str).astype(object)
    if name == "synth_independent":
        x, c, rng = _mixture(4000, 24, 16, 12)
        w = rng.normal(size=16)
        score = (x - x.mean(0)) @ w
        y = (score + rng.normal(scale=score.std() * 0.5, size=score.size) > 0).astype(int)
        return x, y.astype(str).astype(object)
    if name == "synth_longtail":
        sizes = 1.0 / np.arange(1, 41) ** 1.2
        x, c, rng = _mixture(4000, 40, 16, 13, sizes)
        cls = np.where(np.arange(40) < 5, rng.integers(0, 3, size=40), 3 + np.arange(40) % 3)
        y = np.where(rng.random(x.shape[0]) < 0.9, cls[c], rng.integers(0, 6, size=x.shape[0]))
        return x, y.astype(str).astype(object)
    if name == "synth_margin":
        rng = np.random.default_rng(15)
        w = rng.normal(size=16)
        w /= np.linalg.norm(w)
        centers = rng.normal(size=(24, 16)) * 3.0
        signed = np.geomspace(0.15, 3.0, 24)[rng.permutation(24)] * rng.choice([-1, 1], size=24)
        centers += (signed - centers @ w)[:, None] * w  # each centre moved to its distance from w's plane
        c = rng.integers(0, 24, size=4000)
        x = (centers[c] + 0.5 * rng.normal(size=(4000, 16))).astype(np.float32)
        return x, (signed[c] > 0).astype(int).astype(str).astype(object)
    if name == "synth_overlap":
        rng = np.random.default_rng(15)
        mid = rng.normal(size=(12, 16)) * 4.0
        u = rng.normal(size=(12, 16))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        gap = np.geomspace(0.25, 8.0, 12)[rng.permutation(12)]
        centers = np.concatenate([mid - u * gap[:, None] / 2, mid + u * gap[:, None] / 2])
        first = rng.integers(0, 4, size=12)
        cls = np.concatenate([first, (first + rng.integers(1, 4, size=12)) % 4])  # a pair's two classes differ
        c = rng.integers(0, 24, size=4000)
        x = (centers[c] + rng.normal(size=(4000, 16))).astype(np.float32)
        return x, cls[c].astype(str).astype(object)
    raise ValueError(f"--datasets: unknown {name!r}; choose from {', '.join(NAMES)}")
