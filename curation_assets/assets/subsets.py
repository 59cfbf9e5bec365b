
from typing import Literal

import numpy as np
from dagster import AssetExecutionContext, AssetSpec, Config, MaterializeResult, MetadataValue, multi_asset
from pydantic import Field

from resources.storage import CurationStore

from .. import lineage
from ..algorithms.validation import resolve_budget
from ..graph import STORED_TAG
from ..plots import grouped_shares, histogram, markdown_table
from ..sharded_subsets import ShardTotals, draw_sensitivity_subset, sharded_uniform_sample, subset_rows, subset_summary
from ..stored_inputs import load_holdout, load_losses, losses_probe, registered_shards, version_name


class SubsetConfig(Config):
    budget: int | None = Field(default=None, ge=1, description="Examples to select (m). Overrides budget_fraction.")
    budget_fraction: float = Field(default=0.1, gt=0, le=1,
                                   description="m = round(budget_fraction * n) when budget is unset.")
    seed: int = Field(default=0, ge=0, description="Seeds both draws: same inputs and seed, same subsets.")
    alpha: float | None = Field(
        default=None, ge=0, le=1,
        description="Defensive mixture p = alpha/n + (1 - alpha) s/sum(s): the estimate's second moment is at "
                    "most 1/alpha times uniform sampling's, whatever the loss does; 0 is the plain method. "
                    "None: chosen from the probe's losses on held-out labelled rows; for 'stratified' among "
                    "STRATIFIED_ALPHA_GRID, with s the clusters' sensitivity or the probe's expected loss, keeping 1 "
                    "(proportional stratification) unless a design wins in 90% of bootstrap resamples, and 1 "
                    "without labels; for the others 1 = uniform when the "
                    "sensitivities do not predict the losses, and 0.5 without labels.",
    )
    rounds: int = Field(default=2, ge=2, description="sampling 'adaptive': rounds (round 0 is a uniform pilot of 20% of m).")
    sampling: Literal["stratified", "with_replacement", "poisson", "poisson_hajek", "adaptive"] = Field(
        default="stratified",
        description="stratified (default): exactly m distinct rows by systematic sampling along the clusters "
                    "(groups of nearby clusters when m < k), inclusion pi = min(1, c q) with q the defensive "
                    "mixture of the sensitivities, weight 1/pi; unbiased, and the between-cluster part of "
                    "the error is gone (algorithms/stratified_sampling.py). "
                    "with_replacement: m i.i.d. draws, weight 1/(m p), exactly unbiased. poisson: without "
                    "replacement, inclusion min(1, c p) with E|S| = m, weights calibrated so sum_S w p = 1. "
                    "poisson_hajek: the same draws, weights normalised to sum to n. adaptive: a uniform pilot "
                    "from the budget, a probe fit on it re-scores the representatives, the rest is drawn by "
                    "sensitivity from the examples not chosen (needs labels).",
    )


@multi_asset(
    specs=[
        AssetSpec("sensitivity_subset", deps=["sensitivities"], group_name="curation", kinds={"parquet"},
                  tags={STORED_TAG: "versioned"},
                  description="The weighted subset drawn by clustering-based sensitivity sampling."),
        AssetSpec("uniform_subset", deps=["raw_examples"], group_name="curation", kinds={"parquet"},
                  tags={STORED_TAG: "versioned"},
                  description="The uniform baseline at the same budget and seed, always made beside it."),
    ],
    can_subset=False,
)
def subsets(context: AssetExecutionContext, config: SubsetConfig, store: CurationStore):
    keys = registered_shards(context)
    losses, _, losses_version, _ = load_losses(store)
    k = losses.num_rows
    provenance = lineage.expected(store, "subsets", None, keys, config, run=context.run.run_id)
    holdout, holdout_rule = (None, "") if config.alpha is not None or config.sampling == "adaptive" \
        else load_holdout(store, losses_probe(losses))
    holdout_ids = set(holdout.column("example_id").to_pylist()) if holdout is not None else set()
    # Pass 1 (a shard at a time): counts, sums, cluster counts, the held-out rows' sensitivities.
    totals = ShardTotals(store, keys, losses_version, k, holdout_ids, log=context.log.info)
    n = totals.n
    m = resolve_budget(n, config.budget, config.budget_fraction)
    sens_picked, alpha, alpha_rule, sampler_meta = draw_sensitivity_subset(
        store, totals, m, config.sampling, config.alpha, holdout, holdout_rule, config.seed, config.rounds)
    unif_picked = sharded_uniform_sample(totals, m, config.seed)

    version = version_name(context.run.run_id)
    run = context.run.run_id
    # The step's first asset, sensitivity_subset, carries its provenance (graph.py): written last.
    store.write_version("uniform_subset", subset_rows(unif_picked, m, config.seed, "uniform", run), version,
                        provenance=provenance)
    store.write_version("sensitivity_subset", subset_rows(sens_picked, m, config.seed, config.sampling, run),
                        version, provenance=provenance)

    shares = {"all examples": totals.cluster_counts / n}
    for name, picked in (("sensitivity", sens_picked), ("uniform", unif_picked)):
        shares[name] = np.bincount(picked.clusters, weights=picked.sample.draws, minlength=k) / picked.sample.draws.sum()
    share_plot = grouped_shares(np.arange(k), shares, "share of each cluster: data vs subsets")
    present = int((totals.cluster_counts > 0).sum())
    s_sum, u_sum = subset_summary(sens_picked, present), subset_summary(unif_picked, present)
    comparison = markdown_table(["", "sensitivity_subset", "uniform_subset"],
                                [[key, s_sum[key], u_sum[key]] for key in s_sum])
    common = {"n_examples": n, "budget": m, "seed": config.seed, "version": version, "shards": len(keys)}
    lam = float(totals.lam)
    source = f", s from {sampler_meta['sensitivity_source']}" if "sensitivity_source" in sampler_meta else ""
    yield MaterializeResult(
        asset_key="sensitivity_subset",
        metadata={
            **common,
            "dagster/row_count": s_sum["rows"],
            "sampling": config.sampling,
            "alpha": alpha,
            "alpha_rule": alpha_rule,
            **sampler_meta,
            "lambda": lam,
            "z": float(totals.z),
            **{k_: v for k_, v in s_sum.items() if k_ != "rows"},
            "summary": MetadataValue.md(
                f"Drew **{m}** of **{n}** examples by sensitivity ({config.sampling}, seed {config.seed}, "
                f"lambda {lam:.4g}, alpha {alpha:g}, {alpha_rule}{source}).\n\n{comparison}"
            ),
            "weights": histogram(sens_picked.sample.weights, "importance weights", "weight"),
            "cluster_shares": share_plot,
        },
    )
    yield MaterializeResult(
        asset_key="uniform_subset",
        metadata={**common, "dagster/row_count": u_sum["rows"],
                  **{k_: v for k_, v in u_sum.items() if k_ != "rows"}},
    )
