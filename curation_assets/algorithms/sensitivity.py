"""Clustering-based sensitivity scores (Axiotis et al., ICML 2024).

    s_i = v_{a(i)} + lambda * d_i^z,    p_i = s_i / sum_k s_k

v_j is the model's loss on cluster j's representative, d_i the distance of example i to its
centroid. If the loss is Holder continuous in the embedding (|l(e) - l(e')| <= lambda ||e-e'||^z),
then l_i <= s_i for every i, and importance sampling from p has variance at most
(1/m) * sum(s) * sum(l): the guarantee of the paper.
"""

from __future__ import annotations

import numpy as np

from .validation import check_nonnegative


def distance_term(sq_dist, z: float) -> np.ndarray:
    """d^z computed from squared distances, without a square root when z == 2."""
    sq = np.asarray(sq_dist, dtype=np.float64)
    if z == 2.0:
        return sq
    return np.power(np.maximum(sq, 0.0), z / 2.0)


MAX_Z = 16.0  # d^z overflows float64 long before any useful exponent beyond this


def check_z(z: float) -> float:
    if not np.isfinite(z) or z <= 0 or z > MAX_Z:
        raise ValueError(f"z: must be a number in (0, {MAX_Z:g}], got {z!r}")
    return float(z)


def check_cluster_losses(cluster_losses) -> np.ndarray:
    return check_nonnegative(cluster_losses, "cluster_losses", "representative loss")


def check_sq_dist(sq_dist, cluster_ids) -> np.ndarray:
    """Squared distances: one finite value >= 0 per example (same shape as cluster_ids)."""
    return check_nonnegative(sq_dist, "sq_dist", "squared distance", shape=np.shape(cluster_ids))


def balanced_lambda(cluster_losses, cluster_ids, sq_dist, z: float = 2.0) -> float:
    """lambda that gives the loss term and the distance term equal total mass.

    sum_i v_{a(i)} = lambda * sum_i d_i^z. Scale-free (it does not depend on the units of the
    embedding or of the loss), and it makes p a half/half mixture of loss-proportional and
    distance-proportional sampling, so neither term alone can starve part of the data.
    Returns 0 when every point sits on its centroid.
    """
    v = check_cluster_losses(cluster_losses)
    z = check_z(z)
    ids = np.asarray(cluster_ids, dtype=np.int64)
    dz = distance_term(check_sq_dist(sq_dist, cluster_ids), z)
    return balanced_lambda_from_cluster_sums(
        v, np.bincount(ids, minlength=v.size), np.bincount(ids, weights=dz, minlength=v.size)
    )


def balanced_lambda_from_cluster_sums(cluster_losses, cluster_sizes, cluster_distance_sums) -> float:
    """balanced_lambda from per-cluster totals (size_j and sum of d^z over cluster j): O(k), so a
    shard can compute the global lambda without reading every other shard."""
    v = check_cluster_losses(cluster_losses)
    sizes = np.asarray(cluster_sizes, dtype=np.float64)
    dz = float(np.sum(cluster_distance_sums))
    if dz <= 0:
        return 0.0
    return float(np.dot(sizes, v) / dz)


def sensitivity_scores(cluster_losses, cluster_ids, sq_dist, lam: float, z: float = 2.0) -> np.ndarray:
    """s_i = v_{a(i)} + lam * d_i^z for every example (float64, all > 0)."""
    v = check_cluster_losses(cluster_losses)
    z = check_z(z)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lambda_: must be a finite number >= 0, got {lam!r}")
    ids = np.asarray(cluster_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= v.size):
        raise ValueError(
            f"cluster_ids: values must lie in [0, {v.size}), got range [{ids.min()}, {ids.max()}]"
        )
    s = v[ids] + lam * distance_term(check_sq_dist(sq_dist, ids), z)
    if (s <= 0).any():
        raise ValueError(
            f"sensitivities: {(s <= 0).sum()} example(s) have zero sensitivity (zero loss at "
            "their representative and zero distance, or lambda_ = 0): they could never be "
            "sampled; use a positive lambda_ or a scorer with positive losses"
        )
    return s


def sampling_probabilities(sensitivities) -> np.ndarray:
    """p_i = s_i / sum(s)."""
    s = np.asarray(sensitivities, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"sensitivities: expected a non-empty 1-d array, got shape {s.shape}")
    if not np.isfinite(s).all() or (s <= 0).any():
        raise ValueError("sensitivities: every value must be finite and > 0")
    return s / s.sum()
