"""Several processes, one training run: PyTorch's DistributedDataParallel under `torchrun`.

Every process trains on its slice of each global batch (DDP averages the gradients); without torchrun all is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..device import pick_device


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) started this process as one of several (README, "Several processes")."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device | str | None = None) -> torch.device:
    """Join the process group torchrun set up and return this process's device: NCCL on GPUs, gloo on CPUs (README)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPUs: start at most that "
                             f"many processes per machine (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise ValueError("distributed training is not supported on Apple MPS; use --device cpu or one process")
    else:
        # torchrun sets OMP_NUM_THREADS=1 for several processes; share the machine's cores among them instead.
        torch.set_num_threads(cores_per_process(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend(device))
    return device


def backend(device: torch.device) -> str:
    """The process-group backend for a device type: NCCL between GPUs, gloo between CPU processes (README)."""
    return "nccl" if device.type == "cuda" else "gloo"


def cores_per_process(processes: int) -> int:
    """This machine's CPU cores shared out among `processes` processes, at least one each (README)."""
    return max(1, (os.cpu_count() or 1) // processes)


def close_distributed() -> None:
    """Leave the process group at the end of a run (README)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's index among all processes; 0 without torchrun (README)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """How many processes train together; 1 without torchrun (README)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    """True for the process that prints, writes checkpoints and logs (rank 0) (README)."""
    return rank() == 0


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (in place, also returned); unchanged for one process (README)."""
    if world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_reduce_max(value: float, device: torch.device) -> float:
    """The largest of a number over all processes, e.g. the slowest process's epoch time (README)."""
    if world_size() > 1:
        t = torch.tensor(value, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.item()
    return value


def gather_objects(obj) -> list:
    """Every process's `obj`, in rank order (e.g. RNG states for an exact resume); [obj] for one process (README)."""
    if world_size() > 1:
        out = [None] * world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def split_batch(batch_size: int) -> int:
    """Each process's share of a global batch; a ValueError if the processes cannot share it evenly (README)."""
    n = world_size()
    if batch_size % n:
        raise ValueError(f"the batch size {batch_size} is the global batch and must be divisible by the {n} processes; "
                         f"pick e.g. --batch-size {max(n, batch_size // n * n)}")
    return batch_size // n


def barrier() -> None:
    """Wait until every process gets here (README)."""
    if world_size() > 1:
        dist.barrier()


def wrap_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` when several processes train, else `model` itself (README)."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
