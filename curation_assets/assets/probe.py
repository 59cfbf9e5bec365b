"""The probe's tables, made in the `centroids` step (one gather of the vectors serves both).

The probe stands in for the model being trained when every example has a label: a logistic
regression on the embeddings fit on a seeded uniform pilot, stored as p(y | x) = softmax(W x + b)
so that cluster_assignments can score every row in its pass over the vectors, and its losses on
held-out rows (holdout_losses), on which the sampler chooses its design and alpha."""

import numpy as np
import pyarrow as pa

from ..algorithms.scorers import LinearProbeScorer, softmax_coefficients
from ..stored_inputs import RowsByNumber

PROBE_SCHEMA = pa.schema([("class", pa.string()), ("coefficients", pa.list_(pa.float64())),
                          ("intercept", pa.float64()), ("version", pa.string())])


def probe_tables(rows: RowsByNumber, pilot: np.ndarray, holdout: np.ndarray, C: float, seed: int,
                 version: str) -> tuple[pa.Table, pa.Table, dict]:
    """(probe, holdout_losses, metadata) of the probe fit on the `pilot` rows (global row numbers,
    read into `rows`) and scored on the `holdout` rows."""
    labels = np.asarray(rows.labels, dtype=object)
    at_pilot, at_holdout = rows.positions(pilot), rows.positions(holdout)
    model = LinearProbeScorer(C=C).fit(rows.x[at_pilot], labels[at_pilot])
    held = model.losses(rows.x[at_holdout], labels[at_holdout]) if len(holdout) else np.zeros(0)
    classes, w, b = softmax_coefficients(model.model)
    probe = pa.table({
        "class": pa.array([str(c) for c in classes], pa.string()),
        "coefficients": pa.array(list(w), pa.list_(pa.float64())),
        "intercept": pa.array(b, pa.float64()),
        "version": pa.array([version] * len(b), pa.string())}, schema=PROBE_SCHEMA)
    holdout_losses = pa.table({  # empty when the pilot took every row
        "example_id": pa.array([rows.ids[i] for i in at_holdout], pa.string()),
        "loss": pa.array(held, pa.float64()),
        "version": pa.array([version] * len(at_holdout), pa.string())})
    meta = {
        "dagster/row_count": len(classes),
        "fit": True,
        "classes": len(classes),
        "pilot_size": int(len(pilot)),
        "pilot_seed": seed,
        "holdout_size": int(len(holdout)),
        "probe_train_accuracy": float(model.model.score(rows.x[at_pilot], labels[at_pilot])),
        **({"probe_holdout_accuracy": float(model.model.score(rows.x[at_holdout], labels[at_holdout])),
            "mean_holdout_loss": float(held.mean())} if len(holdout) else {}),
        "version": version,
    }
    return probe, holdout_losses, meta


def no_probe(reason: str) -> tuple[pa.Table, None, dict]:
    """An empty probe table: the constant scorer decides, and there is no labelled holdout."""
    return PROBE_SCHEMA.empty_table(), None, {"dagster/row_count": 0, "fit": False, "reason": reason}
