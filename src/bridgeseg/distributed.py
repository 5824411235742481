"""Distributed data parallel training under ``torchrun`` (NCCL on GPUs, gloo on CPUs).

``torchrun --nproc_per_node N -m bridgeseg train CONFIG ...`` starts N processes; each reads its
rank from the environment. The global batch (``train.batch_size``) is split across ranks, the
loss is normalised by the global number of kept pixels (so one step equals a single process's
step on the same global batch), evaluation shards the images and reduces the statistics, and
only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistributedInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op when alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return DistributedInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """Rank 0 under torchrun (or the only process); usable before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (on CUDA under NCCL); returns it. No-op when alone."""
    if not is_enabled():
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.cuda()
        dist.all_reduce(on_gpu)
        tensor.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(tensor)
    return tensor


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` when alone."""
    if not is_enabled():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if is_enabled():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str | torch.device, local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's CUDA device when CUDA is available, else the CPU; any other name is
    passed to ``torch.device``, and asking for CUDA without CUDA is an error."""
    if str(name) == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(name)!r} was asked for but CUDA is not available; use cpu or auto "
                           "(train.device / --device)")
    return device
