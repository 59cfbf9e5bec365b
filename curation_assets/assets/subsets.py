
import datetime as dt
from typing import Literal

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, AssetSpec, Config, MaterializeResult, MetadataValue, multi_asset
from pydantic import Field

from resources.storage import CurationStore

from ..algorithms.robust_sensitivity import (
    DEFAULT_ALPHA,
    adaptive_sensitivity_sample,
    defensive_probabilities,
    pilot_alpha,
)
from ..algorithms.sampling import WeightedSample, sample_by_sensitivity, sample_uniform
from ..algorithms.scorers import probe_fit_scorer
from ..algorithms.validation import resolve_budget
from ..arrays import embedding_matrix
from ..plots import grouped_shares, histogram, markdown_table
from .sensitivities import load_losses
from .shard_scope import read_shards, registered_shards


class SubsetConfig(Config):
    budget: int | None = Field(default=None, description="Examples to select (m). Overrides budget_fraction.")
    budget_fraction: float = Field(default=0.1, description="m = round(budget_fraction * n) when budget is unset.")
    seed: int = Field(default=0, description="Seeds both draws: same inputs and seed, same subsets.")
    alpha: float | None = Field(
        default=None,
        description="Defensive mixture p = alpha/n + (1 - alpha) s/sum(s): the estimate's second moment is at "
                    "most 1/alpha times uniform sampling's, whatever the loss does; 0 is the plain method. "
                    "None: chosen from the labelled pilot's out-of-fold losses (1 = uniform when the "
                    "sensitivities do not predict them), else 0.5 when there is no pilot.",
    )
    rounds: int = Field(default=2, description="sampling 'adaptive': rounds (round 0 is a uniform pilot of 20% of m).")
    sampling: Literal["with_replacement", "poisson", "poisson_hajek", "adaptive"] = Field(
        default="with_replacement",
        description="with_replacement: m i.i.d. draws, weight 1/(m p), exactly unbiased. poisson: without "
                    "replacement, inclusion min(1, c p) with E|S| = m, weights calibrated so sum_S w p = 1. "
                    "poisson_hajek: the same draws, weights normalised to sum to n. adaptive: a uniform pilot "
                    "from the budget, a probe fit on it re-scores the representatives, the rest is drawn by "
                    "sensitivity from the examples not chosen (needs labels).",
    )


def _alpha(store: CurationStore, configured: float | None, losses_version: str, ids: pa.Array,
           sensitivities: np.ndarray) -> tuple[float, str]:
    """The configured alpha, else one chosen on the labelled pilot, else the fixed default."""
    if configured is not None:
        return float(configured), "configured"
    if not store.exists("pilot_losses"):
        return DEFAULT_ALPHA, "default (no labelled pilot)"
    pilot = store.read("pilot_losses")
    if set(pilot.column("version").unique().to_pylist()) != {losses_version}:
        return DEFAULT_ALPHA, "default (pilot from an older representative_losses)"
    position = {i: k for k, i in enumerate(ids.to_pylist())}
    rows = np.array([position[i] for i in pilot.column("example_id").to_pylist()], dtype=np.int64)
    return pilot_alpha(rows, pilot.column("loss").to_numpy(), sensitivities), "auto (labelled pilot)"


def _adaptive_sample(store, keys, ids, cluster_ids, m, config) -> tuple[WeightedSample, dict]:
    assign = read_shards(store, "cluster_assignments", keys, columns=["example_id", "sq_distance"])
    raw = read_shards(store, "raw_examples", keys, columns=["example_id", "label"])
    if raw.column("label").null_count:
        raise ValueError("subsets.sampling='adaptive': every example needs a label (the probe is fit on the pilot)")
    emb = read_shards(store, "embeddings", keys, columns=["example_id", "embedding"])
    if not (assign.column("example_id").equals(ids) and emb.column("example_id").equals(ids)):
        raise ValueError("subsets.sampling='adaptive': embeddings and assignments do not cover the same examples")
    fit = probe_fit_scorer(embedding_matrix(emb.column("embedding")), raw.column("label").to_pylist())
    sample, info = adaptive_sensitivity_sample(
        cluster_ids, assign.column("sq_distance").to_numpy(), m, config.seed, fit, rounds=config.rounds,
        alpha="auto" if config.alpha is None else config.alpha)
    return sample, {"alpha": info.alpha, "rounds": config.rounds, "round_sizes": MetadataValue.json(list(info.round_sizes)),
                    "lambda_adaptive": info.lam, "lambda_source": info.lambda_source,
                    "model_inferences": info.model_inferences}


def version_name(run_id: str) -> str:
    """A subset version: UTC time (sorts in write order) and the run that wrote it."""
    return f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{run_id[:8]}"


def subset_rows(sample: WeightedSample, ids: pa.Array, cluster_ids: np.ndarray, m: int, seed: int, method: str,
          run: str) -> pa.Table:
    k = sample.indices.size
    return pa.table({
        "example_id": ids.take(pa.array(sample.indices)),
        "weight": pa.array(sample.weights),
        "probability": pa.array(sample.probabilities),
        "draws": pa.array(sample.draws),
        "cluster_id": pa.array(cluster_ids[sample.indices].astype(np.int32)),
        "budget": pa.array(np.full(k, m, dtype=np.int64)),
        "seed": pa.array(np.full(k, seed, dtype=np.int64)),
        "sampling": pa.array([method] * k, pa.string()),
        "run": pa.array([run] * k, pa.string()),
    })


def subset_summary(sample: WeightedSample, cluster_ids: np.ndarray, k: int, n: int) -> dict:
    w = sample.weights
    covered = np.unique(cluster_ids[sample.indices]).size
    return {
        "rows": int(sample.indices.size),
        "draws": int(sample.draws.sum()),
        "weight_sum": float(w.sum()),
        "effective_sample_size": float(w.sum() ** 2 / np.sum(w**2 / np.maximum(sample.draws, 1))),
        "clusters_covered": f"{covered}/{int(np.unique(cluster_ids).size)}",
        "max_weight": float(w.max()),
    }


@multi_asset(
    specs=[
        AssetSpec("sensitivity_subset", deps=["sensitivities"], group_name="curation", kinds={"parquet"},
                  description="The weighted subset drawn by clustering-based sensitivity sampling."),
        AssetSpec("uniform_subset", deps=["raw_examples"], group_name="curation", kinds={"parquet"},
                  description="The uniform baseline at the same budget and seed, always made beside it."),
    ],
    can_subset=False,
)
def subsets(context: AssetExecutionContext, config: SubsetConfig, store: CurationStore):
    keys = registered_shards(context)
    _, _, losses_version, _ = load_losses(store)
    sens = read_shards(store, "sensitivities", keys,
                       columns=["example_id", "cluster_id", "sensitivity", "lambda_", "z", "losses_version"],
                       version_column="losses_version", expected_version=losses_version,
                       upstream="representative_losses")
    for col in ("lambda_", "z"):
        values = np.unique(sens.column(col).to_numpy())
        if values.size != 1:
            raise ValueError(
                f"sensitivities: shards were computed with different {col} values {values.tolist()}; "
                "re-materialize every shard of sensitivities with one configuration"
            )
    ids = sens.column("example_id")
    n = sens.num_rows
    m = resolve_budget(n, config.budget, config.budget_fraction)
    cluster_ids = sens.column("cluster_id").to_numpy().astype(np.int64)
    k = int(cluster_ids.max()) + 1
    adaptive_meta = {}
    if config.sampling == "adaptive":
        sens_sample, adaptive_meta = _adaptive_sample(store, keys, ids, cluster_ids, m, config)
        alpha, alpha_rule = adaptive_meta.pop("alpha"), "auto (adaptive pilot)"
    else:
        s = sens.column("sensitivity").to_numpy()
        alpha, alpha_rule = _alpha(store, config.alpha, losses_version, ids, s)
        p = defensive_probabilities(s, alpha)
        if alpha == 1.0 and config.sampling == "with_replacement":
            # Uniform after all: draw without replacement, which beats i.i.d. draws by sqrt((n-1)/(n-m)).
            sens_sample = sample_uniform(n, m, config.seed)
        else:
            sens_sample = sample_by_sensitivity(p, m, config.seed, config.sampling)
    unif_sample = sample_uniform(n, m, config.seed)

    version = version_name(context.run.run_id)
    run = context.run.run_id
    store.write_version("sensitivity_subset",
                        subset_rows(sens_sample, ids, cluster_ids, m, config.seed, config.sampling, run), version)
    store.write_version("uniform_subset",
                        subset_rows(unif_sample, ids, cluster_ids, m, config.seed, "uniform", run), version)

    population = np.bincount(cluster_ids, minlength=k) / n
    shares = {"all examples": population}
    for name, smp in (("sensitivity", sens_sample), ("uniform", unif_sample)):
        shares[name] = np.bincount(cluster_ids[smp.indices], weights=smp.draws, minlength=k) / smp.draws.sum()
    share_plot = grouped_shares(np.arange(k), shares, "share of each cluster: data vs subsets")
    s_sum, u_sum = subset_summary(sens_sample, cluster_ids, k, n), subset_summary(unif_sample, cluster_ids, k, n)
    comparison = markdown_table(["", "sensitivity_subset", "uniform_subset"],
                                [[key, s_sum[key], u_sum[key]] for key in s_sum])
    common = {"n_examples": n, "budget": m, "seed": config.seed, "version": version}
    lam = float(sens.column("lambda_")[0].as_py())
    yield MaterializeResult(
        asset_key="sensitivity_subset",
        metadata={
            **common,
            "dagster/row_count": s_sum["rows"],
            "sampling": config.sampling,
            "alpha": alpha,
            "alpha_rule": alpha_rule,
            **adaptive_meta,
            "lambda": lam,
            "z": float(sens.column("z")[0].as_py()),
            **{k_: v for k_, v in s_sum.items() if k_ != "rows"},
            "summary": MetadataValue.md(
                f"Drew **{m}** of **{n}** examples by sensitivity ({config.sampling}, seed {config.seed}, "
                f"lambda {lam:.4g}, alpha {alpha:g}, {alpha_rule}).\n\n{comparison}"
            ),
            "weights": histogram(sens_sample.weights, "importance weights", "weight"),
            "cluster_shares": share_plot,
        },
    )
    yield MaterializeResult(
        asset_key="uniform_subset",
        metadata={**common, "dagster/row_count": u_sum["rows"],
                  **{k_: v for k_, v in u_sum.items() if k_ != "rows"}},
    )
