import hashlib
import time
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from resources.storage import CurationStore

from .. import lineage
from ..algorithms.downstream import DOWNSTREAM_MODELS
from ..algorithms.estimation import relative_error, weighted_mean
from ..algorithms.evaluation import build_pool, estimate_errors, holdout_mask, selectors, training_scores
from ..algorithms.scorers import LinearProbeScorer
from ..arrays import embedding_matrix, sort_by_id
from ..plots import markdown_table, metric_vs_budget, png_markdown
from ..stored_inputs import read_shards, registered_shards

Fraction = Annotated[float, Field(gt=0, le=1)]


class EvaluationConfig(Config):
    budgets: list[Fraction] = Field(default=[0.01, 0.02, 0.05, 0.1, 0.2], min_length=1,
                                    description="Budgets as fractions of n.")
    seeds: int = Field(default=5, ge=1, description="Seeds per (method, budget) for the downstream models.")
    estimate_seeds: int = Field(default=50, ge=1, description="Seeds per (method, budget) for the loss-estimate error.")
    test_fraction: float = Field(default=0.2, gt=0, lt=1,
                                 description="Held out by an md5 split of the ids; no selector sees it.")
    methods: list[str] | None = Field(default=None, description="Selection methods to compare (default: all).")
    models: list[str] = Field(default=list(DOWNSTREAM_MODELS), description="Downstream models: logreg, mlp.")
    mlp_epochs: int = Field(default=200, ge=1, description="Full-batch epochs of the torch MLP.")
    seed: int = Field(default=0, ge=0, description="Seeds the pool's k-means and probe pilot.")
    max_examples: int = Field(
        default=3000, ge=200,
        description="Evaluate on at most this many examples (pool and test together), the ones with the "
                    "smallest md5 of (seed, id): a bounded, seeded, recorded sample, so the evaluation takes "
                    "minutes whatever n is.")


def _summarise(rows, metric, model):
    """{method: (fractions, means, sds)} over seeds."""
    out = {}
    for method in sorted({r["method"] for r in rows if r["metric"] == metric and r["method"] != "full"}):
        picked = [r for r in rows if r["metric"] == metric and r["model"] == model and r["method"] == method]
        fracs = sorted({r["budget_fraction"] for r in picked})
        vals = [[r["value"] for r in picked if r["budget_fraction"] == f] for f in fracs]
        out[method] = (fracs, [float(np.mean(v)) for v in vals], [float(np.std(v)) for v in vals])
    return out


def _stored_subset_errors(store, ids, x, y, pool) -> dict[str, float]:
    """How well the subsets the pipeline stored estimate the probe's mean loss over all n."""
    probe = LinearProbeScorer().fit(pool.x[pool.pilot], pool.labels[pool.pilot])
    losses = probe.losses(x, y)
    position = {i: k for k, i in enumerate(ids)}
    out = {}
    for name in ("sensitivity_subset", "uniform_subset"):
        try:
            t = store.read_latest_version(name)
        except FileNotFoundError:
            continue
        idx = np.array([position[i] for i in t.column("example_id").to_pylist()])
        est = weighted_mean(losses, idx, t.column("weight").to_numpy(), len(ids))
        out[name] = relative_error(est, float(losses.mean()))
    return out


def evaluation_sample(ids: list[str], limit: int, seed: int) -> np.ndarray:
    """True for the `limit` ids with the smallest md5 of (seed, id): the same ids every run."""
    if len(ids) <= limit:
        return np.ones(len(ids), dtype=bool)
    h = np.array([int.from_bytes(hashlib.md5(f"{seed}:{i}".encode()).digest()[:8], "little") for i in ids],
                 dtype=np.uint64)
    keep = np.zeros(len(ids), dtype=bool)
    keep[np.argpartition(h, limit - 1)[:limit]] = True
    return keep


def _embeddings_of(store: CurationStore, keys: list[str], ids: pa.ChunkedArray) -> pa.Table:
    """The embeddings of the given ids, a shard at a time (never every embedding at once)."""
    value_set = ids.combine_chunks()
    parts = []
    for key in keys:
        t = store.read("embeddings", [key], columns=["example_id", "embedding"])
        parts.append(t.filter(pc.is_in(t.column("example_id"), value_set=value_set)))
    return sort_by_id(pa.concat_tables(parts))


@asset(
    deps=["embeddings", "raw_examples", "sensitivity_subset", "uniform_subset"],
    group_name="evaluation",
    kinds={"scikitlearn", "torch", "parquet"},
    description="Every selection method at a grid of budgets: downstream accuracy on held-out data and "
                "the error of its weighted estimate of the mean loss, next to uniform and the full data.",
)
def subset_evaluation(context: AssetExecutionContext, config: EvaluationConfig, store: CurationStore) -> MaterializeResult:
    available = selectors()
    methods = config.methods or list(available)
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise ValueError(f"subset_evaluation.methods: unknown {unknown}; choose from {sorted(available)}")
    bad_models = [m for m in config.models if m not in DOWNSTREAM_MODELS]
    if bad_models:
        raise ValueError(f"subset_evaluation.models: unknown {bad_models}; choose from {list(DOWNSTREAM_MODELS)}")
    keys = registered_shards(context)
    provenance = lineage.expected(store, "subset_evaluation", None, keys, config, run=context.run.run_id)
    raw = read_shards(store, "raw_examples", keys, columns=["example_id", "label"])
    if raw.column("label").null_count:
        return MaterializeResult(metadata={"skipped": "not every example has a label: nothing to evaluate against"})
    n_all = raw.num_rows
    raw = raw.filter(pa.array(evaluation_sample(raw.column("example_id").to_pylist(), config.max_examples,
                                                config.seed)))
    emb = _embeddings_of(store, keys, raw.column("example_id"))
    ids = raw.column("example_id").to_pylist()
    x = embedding_matrix(emb.column("embedding"))
    y = np.asarray(raw.column("label").to_pylist(), dtype=object)
    test = holdout_mask(ids, config.test_fraction)
    start = time.perf_counter()
    pool = build_pool(x[~test], y[~test], seed=config.seed)
    chosen = {m: available[m] for m in methods}
    rows = estimate_errors(pool, chosen, config.budgets, range(config.estimate_seeds))
    rows += training_scores(pool, x[test], y[test], chosen, config.budgets, range(config.seeds),
                            models=config.models, mlp_epochs=config.mlp_epochs)
    seconds = time.perf_counter() - start
    table = pa.Table.from_pylist(rows)
    table = table.append_column("test_size", pa.array(np.full(table.num_rows, int(test.sum()), dtype=np.int64)))
    table = table.append_column("run", pa.array([context.run.run_id] * table.num_rows, pa.string()))
    meta = {"dagster/row_count": table.num_rows, "pool_size": pool.n, "test_size": int(test.sum()),
            "examples": n_all, "evaluated_examples": raw.num_rows,
            "methods": MetadataValue.json(methods), "budgets": MetadataValue.json(list(config.budgets)),
            "seconds": round(seconds, 1)}
    err = {}
    for method in methods:
        picked = [r for r in rows if r["metric"] == "estimate_rel_error" and r["method"] == method]
        fracs = sorted({r["budget_fraction"] for r in picked})
        err[method] = (fracs, [float(np.median([r["value"] for r in picked if r["budget_fraction"] == f]))
                               for f in fracs], None)
    png = metric_vs_budget(err, "median relative error of the mean-loss estimate", "relative error", log_y=True)
    store.write_file("subset_evaluation", "estimate_error_vs_budget.png", png)
    meta["estimate_error_plot"] = png_markdown(png, "estimate error vs budget")
    header = ["budget"] + methods
    fr = err[methods[0]][0]
    meta["estimate_error_table"] = MetadataValue.md(markdown_table(
        header, [[f"{f:.0%}"] + [err[m][1][i] for m in methods] for i, f in enumerate(fr)]))
    for model in config.models:
        full = [r["value"] for r in rows if r["method"] == "full" and r["model"] == model and r["metric"] == "accuracy"][0]
        acc = _summarise(rows, "accuracy", model)
        png = metric_vs_budget(acc, f"test accuracy, {model} on the weighted subset", "accuracy", reference=full)
        store.write_file("subset_evaluation", f"accuracy_vs_budget_{model}.png", png)
        meta[f"accuracy_plot_{model}"] = png_markdown(png, f"accuracy vs budget ({model})")
        meta[f"full_data_accuracy_{model}"] = full
        meta[f"accuracy_table_{model}"] = MetadataValue.md(markdown_table(
            header, [[f"{f:.0%}"] + [f"{acc[m][1][i]:.3f} ± {acc[m][2][i]:.3f}" for m in methods]
                     for i, f in enumerate(acc[methods[0]][0])]))
    if raw.num_rows == n_all:  # the stored subsets are drawn from all n: only then is their estimate checkable here
        for name, value in _stored_subset_errors(store, ids, x, y, pool).items():
            meta[f"stored_{name}_estimate_error"] = value
    # The table carries the provenance that marks the step done, so it follows the plots.
    store.write("subset_evaluation", table, provenance=provenance)
    return MaterializeResult(metadata=meta)
