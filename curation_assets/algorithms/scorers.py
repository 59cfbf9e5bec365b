"""Scorers give the loss v_j at each cluster representative.

`LinearProbeScorer` stands in for the model being trained when labels exist: a logistic
regression on the embeddings fit on a small uniform pilot, scored by cross-entropy.
`ConstantScorer` is for unlabelled data: every cluster gets the same loss, so sampling depends
on the geometry alone (the distance term decides who is atypical).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression

from .validation import as_embedding_matrix

SCORERS = ("auto", "linear_probe", "constant")


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
