"""When new shards have drifted far enough from the clustering to warn, or to refit it."""

from dagster import ConfigurableResource
from pydantic import Field


class DriftPolicy(ConfigurableResource):
    """Thresholds on the per-shard drift that `cluster_assignments` records (see algorithms/drift.py).

    A shard past a `warn_` threshold fails the (non-blocking) drift check; a shard that arrived
    after the fit and is past a `refit_` threshold makes `centroids` stale, so the next `curate run`, the daily refresh or the
    `refit_on_drift` sensor refits the clustering and recomputes what depends on it.
    """

    warn_cost_ratio: float = Field(default=1.25, description="Mean squared distance over the fit's.")
    warn_share_shift: float = Field(default=0.10, description="Cluster-share TV distance beyond sampling noise.")
    refit_cost_ratio: float = Field(default=1.5)
    refit_share_shift: float = Field(default=0.25)
    min_examples: int = Field(default=200, description="Smaller shards are measured but never flagged: "
                                                       "their cost per point is too noisy to act on.")

    def verdict(self, cost_ratio: float, excess_share_shift: float, examples: int | None = None) -> str:
        for name, value in (("warn_cost_ratio", self.warn_cost_ratio), ("warn_share_shift", self.warn_share_shift),
                            ("refit_cost_ratio", self.refit_cost_ratio), ("refit_share_shift", self.refit_share_shift)):
            if not value > 0:
                raise ValueError(f"drift.{name}: must be a positive number, got {value!r}")
        if examples is not None and examples < self.min_examples:
            return "ok"
        if cost_ratio > self.refit_cost_ratio or excess_share_shift > self.refit_share_shift:
            return "refit"
        if cost_ratio > self.warn_cost_ratio or excess_share_shift > self.warn_share_shift:
            return "warn"
        return "ok"
