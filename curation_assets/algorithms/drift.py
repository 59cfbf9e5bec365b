"""How far new data sits from the clustering it is assigned to.

Two numbers per batch of new points, both against what the k-means fit saw:
- cost ratio: mean squared distance to the nearest centroid over the fit's own mean. Points from
  a region the centroids never covered land far from every centroid, so the ratio grows.
- share shift: total-variation distance between the batch's cluster shares and the fit's,
  minus what sampling noise alone would give (a batch of n points drawn from the fit's shares
  has E[TV] ~ 1/2 sum_j sqrt(2 q_j (1 - q_j) / (pi n))), so small shards do not raise alarms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Drift:
    n: int
    cost_per_point: float
    cost_ratio: float
    share_shift: float  # total-variation distance to the fit's shares
    share_shift_noise: float  # its expected value under no drift
    excess_share_shift: float  # share_shift - share_shift_noise, floored at 0


def expected_share_shift(fit_share, n: int, fit_size: int | None = None) -> float:
    q = np.asarray(fit_share, dtype=np.float64)
    var = q * (1.0 - q) * (1.0 / max(n, 1) + (1.0 / fit_size if fit_size else 0.0))
    return float(0.5 * np.sum(np.sqrt(2.0 * var / np.pi)))


def measure_drift(cluster_ids, sq_dist, fit_share, fit_cost_per_point: float,
                  fit_size: int | None = None) -> Drift:
    labels = np.asarray(cluster_ids, dtype=np.int64)
    d2 = np.asarray(sq_dist, dtype=np.float64)
    q = np.asarray(fit_share, dtype=np.float64)
    if labels.shape != d2.shape or labels.size == 0:
        raise ValueError(f"cluster_ids and sq_dist: need equal, non-empty shapes, got {labels.shape} and {d2.shape}")
    if labels.min() < 0 or labels.max() >= q.size:
        raise ValueError(f"cluster_ids: values must lie in [0, {q.size})")
    n = labels.size
    share = np.bincount(labels, minlength=q.size) / n
    tv = float(0.5 * np.abs(share - q).sum())
    noise = expected_share_shift(q, n, fit_size)
    cost = float(d2.mean())
    ratio = cost / fit_cost_per_point if fit_cost_per_point > 0 else (1.0 if cost == 0 else float("inf"))
    return Drift(n, cost, float(ratio), tv, noise, max(0.0, tv - noise))
