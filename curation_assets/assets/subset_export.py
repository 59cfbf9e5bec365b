"""The newest version of a subset, joined with its texts, as files a trainer reads as they are.

A subset table holds ids and weights only; training needs the text and label beside each weight.
This asset writes `<subset>.parquet` and `<subset>.jsonl` under `subset_export/files/` of the store
(pandas, pyarrow, polars and Hugging Face `datasets` all read either one), with the rows ordered
by example_id and exactly the subset's rows: a missing or duplicated text fails the run instead
of silently shifting the weights. `curation_assets.training` turns the weights into a sampler or
per-example loss weights.
"""

import json

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from resources.storage import CurationStore, parquet_bytes

from ..arrays import subset_rows
from ..graph import STORED_TAG
from ..plots import markdown_table

# The versioned subset assets. `subset` must be one of these: it names a table and a file, so it
# is checked against this list and never spliced into SQL or a path otherwise.
SUBSET_ASSETS = (
    "recommended_subset",
    "sensitivity_subset",
    "uniform_subset",
    "balanced_subset",
    "stratified_subset",
    "kmeans_centroids_subset",
    "k_center_subset",
    "semdedup_subset",
)
COLUMNS = ["example_id", "text", "label", "weight", "draws", "probability", "cluster_id"]
SCHEMA = pa.schema([
    ("example_id", pa.string()),
    ("text", pa.string()),
    ("label", pa.string()),
    ("weight", pa.float64()),
    ("draws", pa.int64()),
    ("probability", pa.float64()),
    ("cluster_id", pa.int32()),
])


class SubsetExportConfig(Config):
    subset: str = Field(
        default="recommended_subset",
        description=f"Which versioned subset to export (its newest version): one of {', '.join(SUBSET_ASSETS)}.",
    )


def check_subset(name: str) -> str:
    if name not in SUBSET_ASSETS:
        raise ValueError(f"subset_export.subset: {name!r} is not a subset asset; choose one of {list(SUBSET_ASSETS)}")
    return name


JOIN_SQL = """
SELECT s.example_id, r.text, CAST(r.label AS VARCHAR) AS label, s.weight, s.draws, s.probability,
       s.cluster_id, r.example_id IS NULL AS missing
FROM subset_rows s
LEFT JOIN (SELECT CAST(example_id AS VARCHAR) AS example_id, CAST(text AS VARCHAR) AS text, label
           FROM raw_examples
           WHERE CAST(example_id AS VARCHAR) IN (SELECT example_id FROM subset_rows)) r
  ON r.example_id = s.example_id
ORDER BY s.example_id, s.pos
"""


def export_table(store: CurationStore, subset: str) -> tuple[pa.Table, pa.Table, str]:
    """(export rows, the subset version they came from, its name). Raises if any subset row has
    no text or more than one (the export must hold exactly the subset's rows)."""
    check_subset(subset)
    version = store.latest_version(subset)
    stored = store.read_version(subset, version)
    rows = subset_rows(stored)
    with store.connect() as con:
        # The subset is registered from the version read above (not the view), so the rows and
        # the recorded version agree even if a new version lands meanwhile.
        con.register("subset_rows", rows)
        joined = con.sql(JOIN_SQL).to_arrow_table()
    missing = joined.filter(joined.column("missing")).column("example_id").to_pylist()
    if missing:
        raise ValueError(f"subset_export: {len(missing)} example(s) of {subset} are not in raw_examples, "
                         f"e.g. {missing[:5]}; re-materialize the subset")
    if joined.num_rows != rows.num_rows:
        raise ValueError(f"subset_export: raw_examples holds some of {subset}'s example_ids more than once "
                         f"({joined.num_rows} joined rows for {rows.num_rows} subset rows)")
    return joined.select(COLUMNS).cast(SCHEMA), stored, version


def export_files(subset: str) -> tuple[str, str]:
    return f"{subset}.parquet", f"{subset}.jsonl"


def export_is_complete(store: CurationStore, subset: str) -> bool:
    """Both files of the export are there (a run killed between the two writes left one)."""
    return all(store.file_exists("subset_export", name) for name in export_files(subset))


def jsonl_bytes(table: pa.Table) -> bytes:
    # json writes floats by repr, which reads back to the same float64; NaN is refused (not JSON).
    return "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
                   for row in table.to_pylist()).encode("utf-8")


def _preview(table: pa.Table, rows: int = 5) -> str:
    def short(text):  # one table cell: no line breaks or pipes, at most 60 characters
        if text is None:
            return None
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= 60 else text[:57] + "..."

    return markdown_table(
        COLUMNS,
        [[r["example_id"], short(r["text"]), r["label"], r["weight"], r["draws"], r["probability"], r["cluster_id"]]
         for r in table.slice(0, rows).to_pylist()],
    )


@asset(
    deps=["recommended_subset", "raw_examples"],
    group_name="delivery",
    kinds={"parquet", "json"},
    tags={STORED_TAG: "files"},
    description="The newest subset joined with its texts and labels, as <subset>.parquet and <subset>.jsonl "
                "(example_id, text, label, weight, draws, probability, cluster_id) for a trainer.",
)
def subset_export(context: AssetExecutionContext, config: SubsetExportConfig, store: CurationStore):
    subset = check_subset(config.subset)
    table, stored, version = export_table(store, subset)
    # Both files are encoded before either is written, so a failure leaves no half export.
    parquet, jsonl = parquet_bytes(table), jsonl_bytes(table)
    parquet_name, jsonl_name = export_files(subset)
    parquet_path = store.write_file("subset_export", parquet_name, parquet)
    jsonl_path = store.write_file("subset_export", jsonl_name, jsonl)
    runs = sorted(set(stored.column("run").to_pylist())) if "run" in stored.column_names else []
    return MaterializeResult(metadata={
        "dagster/row_count": table.num_rows,
        "subset": subset,
        "subset_rows": stored.num_rows,
        "subset_version": version,
        "subset_run": runs[0] if len(runs) == 1 else ", ".join(runs),
        "weight_sum": float(np.sum(table.column("weight").to_numpy())),
        "parquet_path": MetadataValue.path(str(parquet_path)),
        "jsonl_path": MetadataValue.path(str(jsonl_path)),
        "preview": MetadataValue.md(_preview(table)),
    })
