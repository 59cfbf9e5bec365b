"""Thin Dagster assets: read from the store, call a pure algorithm, write, record metadata.

`all_assets` is in dependency order (graph.py checks it): the planner runs them in this order.
"""

from .baseline_subsets import baseline_subsets
from .centroids import centroids
from .cluster_assignments import cluster_assignments
from .embeddings import embeddings
from .hierarchical import balanced_subset, hierarchical_centroids
from .raw_examples import raw_examples
from .recommended_subset import recommended_subset
from .representative_losses import representative_losses
from .sensitivities import sensitivities
from .subset_evaluation import subset_evaluation
from .subset_export import subset_export
from .subsets import subsets

all_assets = [
    raw_examples,
    embeddings,
    centroids,
    cluster_assignments,
    representative_losses,
    sensitivities,
    subsets,
    hierarchical_centroids,
    balanced_subset,
    baseline_subsets,
    subset_evaluation,
    recommended_subset,
    subset_export,
]
