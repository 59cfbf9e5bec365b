"""Which hardware torch and faiss run on: CUDA when present, else the CPU."""


from typing import Literal

from dagster import ConfigurableResource


class ComputeDevice(ConfigurableResource):
    """`auto` uses a GPU when one is visible, `cpu` never does, `cuda` insists on one."""

    device: Literal["auto", "cpu", "cuda"] = "auto"

    def torch_device(self) -> str:
        import torch

        if self.device == "cpu":
            return "cpu"
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
