"""Training on an exported subset (see assets/subset_export.py): load it, and use its weights.

A subset's weights make it stand in for the full data: the weighted mean over the subset
estimates the full-data mean. A trainer uses them in one of two ways, not both at once:

* draw examples with probability proportional to the weights (`weighted_sampler`), then take
  the plain mean loss of each batch; or
* go through the subset as usual and weight each example's loss (`loss_weights`).

Usage::

    from curation_assets.training import load_subset, loss_weights, weighted_sampler
    df = load_subset("data/curation_tables/subset_export/files/recommended_subset.parquet")
    sampler = weighted_sampler(df["weight"].to_numpy(), seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, sampler=sampler)
    w = loss_weights(df["weight"].to_numpy())           # or, without the sampler:
    loss = (w[batch_idx] * per_example_loss).mean()     # per_example_loss: reduction="none"

torch is imported only by the functions that need it, so loading a subset does not need it.
"""

from pathlib import Path

import numpy as np


def load_subset(path, as_arrow: bool = False):
    """The exported subset at `path` (.parquet or .jsonl) as a pandas DataFrame, or a pyarrow
    Table with `as_arrow=True`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif suffix in (".jsonl", ".json"):
        import pyarrow.json as pj

        table = pj.read_json(path)
    else:
        raise ValueError(f"path: {str(path)!r} must end in .parquet or .jsonl")
    return table if as_arrow else table.to_pandas()


def _check_weights(weights) -> np.ndarray:
    try:
        w = np.array(weights, dtype=np.float64)  # a writable copy: torch.from_numpy warns on read-only arrays
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights: not numbers ({exc})") from None
    if w.ndim != 1:
        raise ValueError(f"weights: must be 1-d, got shape {w.shape}")
    if w.size == 0:
        raise ValueError("weights: empty")
    bad = ~np.isfinite(w) | (w <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"weights: every weight must be finite and > 0; {int(bad.sum())} are not "
                         f"(e.g. weights[{i}] = {w[i]})")
    return w


def weighted_sampler(weights, num_samples: int | None = None, seed: int = 0):
    """A `torch.utils.data.WeightedRandomSampler` drawing indices with probability proportional
    to `weights`, with replacement, `num_samples` per epoch (default len(weights)); seeded, so
    the same seed gives the same draws."""
    import torch

    w = _check_weights(weights)
    n = w.size if num_samples is None else int(num_samples)
    if n <= 0:
        raise ValueError(f"num_samples: must be > 0, got {num_samples}")
    generator = torch.Generator().manual_seed(int(seed))
    # float64 so that tiny weights beside large ones keep their share.
    return torch.utils.data.WeightedRandomSampler(torch.from_numpy(w), n, replacement=True, generator=generator)


def loss_weights(weights, normalize: str = "mean"):
    """Per-example loss weights as a float32 tensor, proportional to `weights`.

    normalize="mean" scales them to average 1, so `(w * loss).mean()` over the whole subset is
    the weighted mean loss, the subset's estimate of the full-data mean loss (and the loss keeps
    the scale a plain mean has, so a learning rate carries over). "sum" scales them to sum 1
    (then use `(w * loss).sum()`); "none" keeps them as they are.
    """
    import torch

    w = _check_weights(weights)
    if normalize == "mean":
        w = w / w.mean()
    elif normalize == "sum":
        w = w / w.sum()
    elif normalize != "none":
        raise ValueError(f"normalize: {normalize!r} must be 'mean', 'sum' or 'none'")
    return torch.from_numpy(w.astype(np.float32))
