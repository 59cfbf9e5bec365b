"""How well a weighted subset estimates a full-data average."""

from __future__ import annotations

import numpy as np


def weighted_mean(values, indices, weights, n: int) -> float:
    """(1/n) sum_S w_i f_i: the subset's estimate of the full mean of f."""
    f = np.asarray(values, dtype=np.float64)
    return float(np.dot(np.asarray(weights, dtype=np.float64), f[np.asarray(indices)]) / n)


def relative_error(estimate: float, truth: float) -> float:
    if truth == 0:
        return abs(estimate)
    return abs(estimate - truth) / abs(truth)
