
import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from resources.storage import CurationStore

from .. import lineage
from ..algorithms.scorers import LinearProbeScorer, seeded_holdout, seeded_pilot, softmax_coefficients
from ..graph import NEW_SHARDS_TAG
from ..stored_inputs import RowsByNumber, label_summary, registered_shards

PROBE_SCHEMA = pa.schema([("class", pa.string()), ("coefficients", pa.list_(pa.float64())),
                          ("intercept", pa.float64()), ("version", pa.string())])


class ProbeConfig(Config):
    pilot_size: int | None = Field(
        default=None, ge=2,
        description="Labelled pilot examples the probe is fit on; default 5% of n, in [100, 20,000].")
    seed: int = Field(default=0, ge=0, description="Seeds the pilot and holdout samples.")
    probe_C: float = Field(default=1.0, gt=0, description="Inverse L2 regularisation of the logistic-regression probe.")


@asset(
    deps=["raw_examples", "embeddings"],
    group_name="curation",
    kinds={"scikitlearn", "parquet"},
    tags={NEW_SHARDS_TAG: "kept"},  # new shards are scored by the probe fit on the earlier ones
    description="The stand-in model, when every example has a label: a logistic regression on the embeddings "
                "fit on a seeded uniform pilot, p(y | x) = softmax(W x + b), and its losses on held-out rows "
                "(holdout_losses). cluster_assignments scores every row with it in its pass over the vectors.",
)
def probe(context: AssetExecutionContext, config: ProbeConfig, store: CurationStore) -> MaterializeResult:
    keys = registered_shards(context)
    counts, unlabelled, distinct = label_summary(store, keys)
    n = int(counts.sum())
    provenance = lineage.expected(store, "probe", None, keys, config, run=context.run.run_id)
    if unlabelled or len(distinct) < 2:  # an empty table: no probe, the constant scorer decides
        store.write("probe", PROBE_SCHEMA.empty_table(), provenance=provenance)
        reason = f"{unlabelled} example(s) without a label" if unlabelled else "fewer than 2 classes"
        context.log.info(f"probe: none fit ({reason})")
        return MaterializeResult(metadata={"dagster/row_count": 0, "fit": False, "reason": reason})
    pilot = seeded_pilot(n, config.pilot_size, config.seed)
    holdout = seeded_holdout(n, pilot, config.seed)
    rows = RowsByNumber(store, keys, counts, np.concatenate([pilot, holdout]), with_text=False)
    labels = np.asarray(rows.labels, dtype=object)
    at_pilot, at_holdout = rows.positions(pilot), rows.positions(holdout)
    model = LinearProbeScorer(C=config.probe_C).fit(rows.x[at_pilot], labels[at_pilot])
    holdout_losses = model.losses(rows.x[at_holdout], labels[at_holdout]) if len(holdout) else np.zeros(0)
    classes, w, b = softmax_coefficients(model.model)
    version = context.run.run_id
    # The holdout first (empty when the pilot took every row): the file carrying the provenance marks
    # the step done, so a run killed between the writes redoes the step, never leaving it "current"
    # beside an older holdout.
    store.write("holdout_losses", pa.table({
        "example_id": pa.array([rows.ids[i] for i in at_holdout], pa.string()),
        "loss": pa.array(holdout_losses, pa.float64()),
        "version": pa.array([version] * len(at_holdout), pa.string())}))
    store.write("probe", pa.table({
        "class": pa.array([str(c) for c in classes], pa.string()),
        "coefficients": pa.array(list(w), pa.list_(pa.float64())),
        "intercept": pa.array(b, pa.float64()),
        "version": pa.array([version] * len(b), pa.string())}, schema=PROBE_SCHEMA), provenance=provenance)
    return MaterializeResult(metadata={
        "dagster/row_count": len(classes),
        "fit": True,
        "classes": len(classes),
        "pilot_size": int(len(pilot)),
        "pilot_seed": config.seed,
        "holdout_size": int(len(holdout)),
        "probe_train_accuracy": float(model.model.score(rows.x[at_pilot], labels[at_pilot])),
        "probe_holdout_accuracy": float(model.model.score(rows.x[at_holdout], labels[at_holdout]))
        if len(holdout) else float("nan"),
        "mean_holdout_loss": float(holdout_losses.mean()) if len(holdout) else float("nan"),
        "version": version,
    })
