"""Downstream models trained on a weighted subset: how much of the full data's value it keeps.

Both models take the subset's importance weights in their loss, normalised to mean 1, so a
weighted subset trains as if it were the data it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

DOWNSTREAM_MODELS = ("logreg", "mlp")


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float


def _normalised(weights, n: int) -> np.ndarray:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError("weights: one finite, positive weight per training example is required")
    return w * (n / w.sum())


def fit_predict_logreg(x_train, y_train, weights, x_test, *, C: float = 1.0, seed: int = 0) -> np.ndarray:
    """Weighted multinomial logistic regression; a single-class subset predicts that class."""
    y_train = np.asarray(y_train)
    classes = np.unique(y_train)
    if classes.size == 1:
        return np.full(len(x_test), classes[0], dtype=y_train.dtype)
    model = LogisticRegression(C=C, max_iter=1000, random_state=seed)
    model.fit(x_train, y_train, sample_weight=_normalised(weights, len(y_train)))
    return model.predict(x_test)


def fit_predict_mlp(x_train, y_train, weights, x_test, *, classes, seed: int = 0, hidden: int = 128,
                    epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-3) -> np.ndarray:
    """A one-hidden-layer torch MLP, full-batch Adam, the weights in its cross-entropy.

    Runs on one thread: at these sizes (hundreds of rows) a second thread only adds
    synchronisation, and on a loaded machine it made each fit 10x slower (0.27 s vs 3 s).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_predict_mlp(torch, x_train, y_train, weights, x_test, classes=classes, seed=seed,
                                hidden=hidden, epochs=epochs, lr=lr, weight_decay=weight_decay)
    finally:
        torch.set_num_threads(threads)


def _fit_predict_mlp(torch, x_train, y_train, weights, x_test, *, classes, seed, hidden, epochs, lr,
                     weight_decay) -> np.ndarray:
    y_train = np.asarray(y_train)
    classes = np.asarray(classes)
    index = {c: i for i, c in enumerate(classes)}
    g = torch.Generator().manual_seed(int(seed))
    xt = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    yt = torch.as_tensor(np.array([index[c] for c in y_train], dtype=np.int64))
    wt = torch.as_tensor(_normalised(weights, len(y_train)), dtype=torch.float32)
    layer1 = torch.nn.Linear(xt.shape[1], hidden)
    layer2 = torch.nn.Linear(hidden, classes.size)
    for layer in (layer1, layer2):  # seeded init, independent of torch's global RNG
        bound = 1.0 / np.sqrt(layer.in_features)
        with torch.no_grad():
            layer.weight.uniform_(-bound, bound, generator=g)
            layer.bias.uniform_(-bound, bound, generator=g)
    model = torch.nn.Sequential(layer1, torch.nn.ReLU(), layer2)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(model(xt), yt, reduction="none") * wt).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(torch.as_tensor(np.asarray(x_test, dtype=np.float32))).argmax(dim=1).numpy()
    return classes[pred]


def scores(y_true, y_pred) -> Scores:
    return Scores(float(accuracy_score(y_true, y_pred)), float(f1_score(y_true, y_pred, average="macro")))
