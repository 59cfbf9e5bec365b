"""Which hardware torch and faiss run on: CUDA when present, else the CPU.

The GPU-heavy assets (embeddings, centroids, cluster_assignments, hierarchical_centroids) are in
the Dagster concurrency pool "accelerator", so an operator can cap how many of their steps share a
GPU at once. In Dagster 1.13 a pool's limit lives in the instance's storage, not in dagster.yaml:

    dagster instance concurrency set accelerator 1     # one GPU step at a time (per GPU: N for N GPUs)

(or Deployment > Concurrency in the UI). dagster.yaml only holds the defaults for every pool:

    concurrency:
      pools:
        default_limit: 1        # limit of a pool nobody set a limit for
        granularity: op         # count steps (op), not whole runs (run)

Without any of this, pools are unlimited.
"""


import os
import sys
from typing import Literal

from dagster import ConfigurableResource

from .blas import other_blas_serial

# Device nodes a CUDA (NVIDIA), ROCm (AMD, which torch also calls "cuda") or WSL GPU driver creates.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def no_gpu_driver() -> bool:
    """True when no GPU driver is visible, so torch (a ~2 s import) cannot see a GPU either."""
    return not any(os.path.exists(node) for node in GPU_DEVICE_NODES)


class ComputeDevice(ConfigurableResource):
    """`auto` uses a GPU when one is visible, `cpu` never does, `cuda` insists on one."""

    device: Literal["auto", "cpu", "cuda"] = "auto"

    def torch_device(self) -> str:
        if self.device == "cpu":
            return "cpu"
        if self.device == "auto" and "torch" not in sys.modules and no_gpu_driver():
            return "cpu"
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if self.device == "cuda":
            raise RuntimeError("compute_device.device: 'cuda' was asked for, but torch sees no GPU")
        return "cpu"

    def faiss_uses_gpu(self) -> bool:
        import faiss

        has_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
        if self.device == "cuda" and not has_gpu:
            raise RuntimeError(
                "compute_device.device: 'cuda' was asked for, but this faiss build sees no GPU "
                "(faiss-cpu is installed; install a faiss GPU build)"
            )
        return self.device != "cpu" and has_gpu

    def faiss_owns_cores(self):
        """A context in which every BLAS pool but faiss's runs serially: for a pass that calls
        faiss and small numpy products in turn (resources/blas.py, other_blas_serial)."""
        return other_blas_serial()

    def kmeans_backend(self) -> tuple[str, str]:
        """(backend, device) for algorithms.kmeans: faiss's GPU build when it sees a GPU, else torch on
        CUDA (PyPI's faiss-cpu has no GPU code), else CPU faiss; device="cpu" always gives CPU faiss."""
        if self.device == "cpu":
            return "faiss", "cpu"
        import faiss

        if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
            return "faiss_gpu", "cuda"
        if self.torch_device() == "cuda":  # raises naming compute_device.device if "cuda" was asked for
            return "torch", "cuda"
        return "faiss", "cpu"
