"""Scorers give the loss v_j at each cluster representative.

`LinearProbeScorer` stands in for the model being trained when labels exist: a logistic
regression on the embeddings fit on a small uniform pilot, scored by cross-entropy.
`ConstantScorer` is for unlabelled data: every cluster gets the same loss, so sampling depends
on the geometry alone (the distance term decides who is atypical).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression

from .validation import as_embedding_matrix, check_nonnegative


@dataclass
class ConstantScorer:
    value: float = 1.0
    name: str = field(default="constant", init=False)

    def __post_init__(self):
        if not np.isfinite(self.value) or self.value <= 0:
            raise ValueError(f"constant_loss: must be a positive finite number, got {self.value!r}")

    def losses(self, embeddings, labels=None) -> np.ndarray:
        return np.full(len(embeddings), float(self.value))


@dataclass
class LinearProbeScorer:
    """Multinomial logistic regression; loss = -log p(true label | embedding)."""

    C: float = 1.0
    max_iter: int = 1000
    name: str = field(default="linear_probe", init=False)
    model: LogisticRegression | None = field(default=None, init=False, repr=False)

    def fit(self, embeddings, labels) -> "LinearProbeScorer":
        x = as_embedding_matrix(embeddings, "pilot embeddings")
        y = np.asarray(labels)
        if y.shape[0] != x.shape[0]:
            raise ValueError("pilot labels: one label per pilot embedding is required")
        classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(
                f"pilot sample: holds {classes.size} class(es); a probe needs at least 2 "
                "(increase pilot_size)"
            )
        self.model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.model.fit(x, y)
        return self

    def losses(self, embeddings, labels) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("LinearProbeScorer.losses called before fit")
        x = as_embedding_matrix(embeddings)
        proba = self.model.predict_proba(x)
        col = {c: i for i, c in enumerate(self.model.classes_)}
        # A label the pilot never saw has probability 0 under the probe: cap its loss.
        eps = 1e-12
        p_true = np.array(
            [proba[r, col[y]] if y in col else 0.0 for r, y in enumerate(np.asarray(labels))]
        )
        return -np.log(np.clip(p_true, eps, 1.0))

    def expected_losses(self, embeddings) -> np.ndarray:
        """The probe's expected loss at each row, without labels (see `expected_losses`)."""
        if self.model is None:
            raise RuntimeError("LinearProbeScorer.expected_losses called before fit")
        _, w, b = softmax_coefficients(self.model)
        return expected_losses(as_embedding_matrix(embeddings), w, b)


def softmax_coefficients(model: LogisticRegression) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes, W (c, d), b (c,)) with p(y | x) = softmax(W x + b): a fitted scikit-learn
    logistic regression in one form for any number of classes (the binary model's single row w
    becomes the rows 0 and w, since sigmoid(t) = softmax(0, t)), so it can be stored and reused."""
    w, b = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
    if w.shape[0] == 1 and len(model.classes_) == 2:
        w, b = np.vstack([np.zeros_like(w), w]), np.concatenate([[0.0], b])
    return np.asarray(model.classes_), w, b


def _log_softmax_entropy(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log softmax of the logits W x + b, row by row, and its entropy): the product in the
    vectors' precision, the rest in float64, shifted by each row's maximum so exp never overflows."""
    wx = np.asarray(w, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64)
    t = (x @ wx.T).astype(np.float64) + b
    t -= t.max(axis=1, keepdims=True)
    log_p = t - np.log(np.exp(t).sum(axis=1, keepdims=True))
    return log_p, np.maximum(-(np.exp(log_p) * log_p).sum(axis=1), 0.0)


def expected_losses(x, w: np.ndarray, b: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """E[-log p(y | x)] under the probe's own p: the entropy of softmax(W x + b) at each row.

    Why: a calibrated probe's expected cross-entropy at x is its loss there on average over
    the label, known without the label, so it can steer sampling toward the rows of a cluster
    whose loss is high (stratified_sampling.py), which one representative per cluster cannot."""
    x = np.asarray(x)
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        out[start:start + chunk] = _log_softmax_entropy(x[start:start + chunk], w, b)[1]
    return out


LOSS_CAP = -np.log(1e-12)  # the loss at a label the probe gives probability 0 (one it never saw)


def probe_losses(x, w: np.ndarray, b: np.ndarray, label_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expected loss, loss at the label) of p = softmax(W x + b) at each row, from one product.

    label_index: the column of each row's label in W (-1: no label, NaN out; -2: a label the
    probe never saw, LOSS_CAP as LinearProbeScorer.losses gives it). The expected loss is
    `expected_losses`'; the loss at the label is LinearProbeScorer.losses', so the pass that
    assigns every row can score every row, and the representatives need no vectors read again.
    Between faiss calls, run it with the other BLAS pools serial (ComputeDevice.faiss_owns_cores)."""
    log_p, expected = _log_softmax_entropy(np.asarray(x), w, b)
    label_index = np.asarray(label_index, dtype=np.int64)
    at = np.full(x.shape[0], np.nan)
    seen = label_index >= 0
    at[seen] = np.minimum(-log_p[np.flatnonzero(seen), label_index[seen]], LOSS_CAP)
    at[label_index == -2] = LOSS_CAP
    return expected, at


def probe_fit_scorer(embeddings, labels, C: float = 1.0) -> Callable:
    """fit_scorer for adaptive sampling: chosen rows -> a linear probe fit on them, returned as
    loss_of(rows); a constant loss while the chosen rows hold fewer than two classes."""
    x = np.asarray(embeddings)
    y = np.asarray(labels, dtype=object)

    def fit(chosen):
        if np.unique(y[chosen]).size < 2:
            return lambda rows: np.ones(len(rows))
        probe = LinearProbeScorer(C=C).fit(x[chosen], y[chosen])
        return lambda rows: probe.losses(x[rows], y[rows])

    return fit


def load_scorer_function(path: str) -> Callable:
    """Import a user scorer given as 'package.module:function'.

    The function is called with keyword arguments example_ids (list of str), texts, labels (lists,
    entries may be None) and embeddings ((k, d) float32) of the representatives, and returns one
    loss per representative: the user's own model, evaluated on k examples only.
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"scorer_function: expected 'package.module:function', got {path!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"scorer_function: cannot import {path!r}: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"scorer_function: {path!r} is not callable")
    return fn


def check_losses(values, expected: int, name: str = "scorer_function") -> np.ndarray:
    v = check_nonnegative(np.ravel(values) if np.ndim(values) else values, name, "loss")
    if v.size != expected:
        raise ValueError(f"{name}: returned {v.size} losses for {expected} representatives")
    return v


MAX_DEFAULT_PILOT = 20_000


def default_pilot_size(n: int) -> int:
    """5% of n, at least 100 and at most 20,000: a linear probe's accuracy has long stopped
    improving by then, and the pilot's embeddings must fit in memory at any n."""
    return min(n, max(100, min(MAX_DEFAULT_PILOT, int(np.ceil(0.05 * n)))))


def seeded_pilot(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted row numbers of a uniform pilot of `size` rows (default `default_pilot_size(n)`)."""
    size = default_pilot_size(n) if size is None else size
    if not 2 <= size <= n:
        raise ValueError(f"centroids.pilot_size: must be in [2, {n}], got {size}")
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


HOLDOUT_PER_PILOT = 2


def seeded_holdout(n: int, pilot: np.ndarray, seed: int) -> np.ndarray:
    """Sorted row numbers of a uniform sample of the rows outside the pilot, twice the pilot's size
    (or every such row): the probe's losses there are the scored model's own losses on rows it
    was not fit on, the sample the sampler chooses its alpha on. (Out-of-fold losses of probes fit
    on parts of the pilot were tried first; they rank the designs wrongly where a row's loss
    depends on which neighbours the probe saw: docs/results.md.)"""
    outside = np.ones(n, dtype=bool)
    pilot = np.asarray(pilot, dtype=np.int64)
    outside[pilot[pilot < n]] = False
    rest = np.flatnonzero(outside)  # np.setdiff1d(arange(n), pilot), without its sort of n rows
    size = min(rest.size, HOLDOUT_PER_PILOT * len(pilot))
    return np.sort(np.random.default_rng([seed, 1]).choice(rest, size=size, replace=False))


def resolve_scorer(configured: str, scorer_function: str | None, labelled: bool) -> str:
    """'auto' is the user's function when one is named, else the probe when every example has a
    label (and there are two classes), else the constant."""
    if configured != "auto":
        return configured
    return "function" if scorer_function else ("linear_probe" if labelled else "constant")


@dataclass
class RepresentativeScorer:
    """The loss at given rows, and what the choice of scorer leaves to record."""

    name: str                                   # constant or function:<path>
    losses_at: Callable[[np.ndarray], np.ndarray]  # row positions -> one loss each
    info: dict = field(default_factory=dict)


def representative_scorer(name: str, x: np.ndarray, labels: np.ndarray, *, ids=None, texts=None,
                          constant_loss: float = 1.0, scorer_function: str | None = None) -> RepresentativeScorer:
    """The scorer `name` over rows (x, labels[, ids, texts]).
    function: the user's `scorer_function`, called on the rows asked for. constant: `constant_loss`
    everywhere. (The linear probe scores every row in the assignments' pass: `probe_losses`.)
    """
    if name == "function":
        if not scorer_function:
            raise ValueError("representative_losses.scorer_function: scorer 'function' needs "
                             "'package.module:function'")
        fn = load_scorer_function(scorer_function)

        def losses_at(pos):
            return check_losses(fn(example_ids=[ids[p] for p in pos], texts=[texts[p] for p in pos],
                                   labels=[labels[p] for p in pos], embeddings=x[pos]),
                                len(pos), "representative_losses.scorer_function")
        return RepresentativeScorer(f"function:{scorer_function}", losses_at,
                                    info={"scorer_function": scorer_function})
    constant = ConstantScorer(constant_loss)
    return RepresentativeScorer("constant", lambda pos: constant.losses(np.empty((len(pos), 1))),
                                info={"constant_loss": constant_loss})
