"""Argument checks shared by the algorithms, raising errors that name the bad input."""

from __future__ import annotations

import numbers

import numpy as np


def as_embedding_matrix(x, name: str = "embeddings", dim: int | None = None, dtype=np.float32) -> np.ndarray:
    """Return `x` as a C-contiguous (n, d) matrix of `dtype` (float32 for embeddings), or raise
    naming what is wrong."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d array (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: is empty (0 rows)")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: has dimension 0")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name}: expected dimension {dim}, got {arr.shape[1]}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{name}: {rows.size} row(s) contain NaN or infinite values (first at row {rows[0]})"
        )
    return arr


def check_fraction(value, name: str, *, low_open: bool = False, high_open: bool = False) -> float:
    """A share or probability: a finite number in [0, 1], either end open when asked."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (value > 0 if low_open else value >= 0) and (
            value < 1 if high_open else value <= 1)
    if not ok:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name}: must be a number in {interval}, got {value!r}")
    return value


def check_nonnegative(values, name: str, what: str, shape: tuple | None = None) -> np.ndarray:
    """A 1-d float64 array (of `shape`, when given) whose every entry is finite and >= 0."""
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not numbers ({exc})") from None
    if shape is not None and v.shape != tuple(shape):
        raise ValueError(f"{name}: expected one value per example, shape {tuple(shape)}, got {v.shape}")
    if v.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {v.shape}")
    if not np.isfinite(v).all() or (v < 0).any():
        raise ValueError(f"{name}: every {what} must be finite and >= 0")
    return v


def check_whole_number(value, name: str, minimum: int = 1) -> int:
    """A count (of clusters, iterations, rows...) must be a finite whole number >= minimum."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or int(value) != value
    ):
        raise ValueError(f"{name}: must be a whole number, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name}: must be at least {minimum}, got {int(value)}")
    return int(value)


def check_budget(budget: int, n: int, name: str = "budget") -> int:
    """A subset size must be a whole number in [1, n]."""
    budget = check_whole_number(budget, name, 1)
    if budget > n:
        raise ValueError(f"{name}: {budget} is larger than the number of examples ({n})")
    return budget


def resolve_budget(n: int, budget: int | None, budget_fraction: float | None) -> int:
    """An explicit count wins; otherwise round(fraction * n), at least 1."""
    if budget is not None:
        return check_budget(budget, n)
    if budget_fraction is None:
        raise ValueError("budget: give either budget (a count) or budget_fraction")
    if (
        isinstance(budget_fraction, bool)
        or not isinstance(budget_fraction, numbers.Real)
        or not np.isfinite(budget_fraction)
        or not (0.0 < budget_fraction <= 1.0)
    ):
        raise ValueError(f"budget_fraction: must be in (0, 1], got {budget_fraction!r}")
    return check_budget(max(1, int(round(budget_fraction * n))), n, "budget_fraction * n")
