"""The CUDA-only branches, reached on a machine without a GPU by standing in for torch.cuda where PyTorch allows it.

Each test names the branch it reaches. What no test here can reach (a real kernel on a real GPU) is listed in the
README's "Tested versions" section.
"""

from __future__ import annotations

import torch
import torch.distributed

import helpers.device as device_module
import helpers.training.checkpoint as checkpoint
import helpers.training.distributed as dist
from helpers.data import measure_throughput
from helpers.speed import device_peak
from helpers.training import recipe_for_device

CUDA = torch.device("cuda", 0)


def pretend_cuda(monkeypatch, name: str = "NVIDIA H100 80GB HBM3", count: int = 1) -> list[str]:
    """torch.cuda answers as on a machine with `count` GPUs; returns the log of calls that would touch one."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(f"synchronize {device}"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(f"set_device {device}"))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.arange(4, dtype=torch.uint8)])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(f"set_rng {len(states)}"))
    return calls


def test_a_gpu_is_picked_first_and_described_with_its_cuda_version(monkeypatch):
    pretend_cuda(monkeypatch)
    assert device_module.available_devices()[0] == "cuda" and device_module.pick_device() == torch.device("cuda")
    line = device_module.describe_device("cuda")
    assert line.startswith("device=cuda | NVIDIA H100 80GB HBM3") and f"CUDA {torch.version.cuda}" in line
    assert recipe_for_device("cuda") == "gpu"


def test_timers_wait_for_the_gpu_and_memory_is_handed_back(monkeypatch):
    calls = pretend_cuda(monkeypatch)
    device_module.synchronize(CUDA)
    device_module.release_memory()

    class Batch:  # what a loader yields on a GPU: something with a length on a CUDA device
        device = CUDA

        def __len__(self) -> int:
            return 8

    measure_throughput([(Batch(), None)] * 3)
    assert calls == [f"synchronize {CUDA}", "empty_cache", f"synchronize {CUDA}"]


def test_checkpoints_carry_every_gpus_random_state(monkeypatch):
    calls = pretend_cuda(monkeypatch)
    state = checkpoint.rng_state()
    assert torch.equal(state["cuda"][0], torch.arange(4, dtype=torch.uint8))
    checkpoint.set_rng_state(state)
    assert calls == ["set_rng 1"]


def test_several_processes_on_gpus_use_nccl_one_gpu_each(monkeypatch):
    calls = pretend_cuda(monkeypatch, count=2)
    monkeypatch.setattr(device_module, "pick_device", lambda prefer=None: torch.device("cuda"))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: calls.append(f"backend {backend}"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist.init_distributed("cuda") == torch.device("cuda", 1)
    assert calls == ["set_device cuda:1", "backend nccl"]
    monkeypatch.setenv("LOCAL_RANK", "2")
    try:
        dist.init_distributed("cuda")
    except ValueError as err:
        assert "local rank 2 but only 2 GPUs" in str(err)
    else:
        raise AssertionError("a third process on a two-GPU machine was accepted")


def test_ddp_gets_the_processs_gpu(monkeypatch):
    made = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel",
                        lambda model, device_ids=None: made.append(device_ids) or model)
    model = torch.nn.Linear(2, 2)
    assert dist.wrap_model(model, torch.device("cuda", 1)) is model and made == [[1]]
    dist.wrap_model(model, torch.device("cpu"))
    assert made == [[1], None]  # gloo on CPUs: no device ids


def test_utilisation_divides_by_the_datasheet_peak_of_the_gpu(monkeypatch):
    pretend_cuda(monkeypatch, name="Tesla T4")
    peak = device_peak(CUDA)
    assert peak["gpu"] == "T4" and peak["tf32_peak"] is None and peak["bf16_peak"] == 65e12  # T4: FP16 tensor cores
