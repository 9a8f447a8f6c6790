"""The Apple MPS branches, reached on a machine without one by standing in for torch.backends.mps and torch.mps."""

from __future__ import annotations

import platform

import pytest
import torch

import helpers.device as device_module
from helpers.training import distributed


@pytest.fixture
def pretend_mps(monkeypatch) -> list[str]:
    """torch answers as on an Apple-silicon Mac without CUDA; returns the log of calls that would touch the GPU."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("mps synchronize"))
    return calls


def test_mps_is_picked_before_the_cpu_and_named_as_apple(pretend_mps):
    assert device_module.available_devices() == ["mps", "cpu"]
    assert device_module.pick_device() == torch.device("mps") and device_module.pick_device("cpu").type == "cpu"
    line = device_module.describe_device("mps")
    assert line.startswith(f"device=mps | Apple MPS ({platform.machine()}) | torch ") and "CUDA" not in line


def test_a_timer_waits_for_queued_mps_work(pretend_mps):
    device_module.synchronize(torch.device("mps"))
    assert pretend_mps == ["mps synchronize"]


def test_mps_trains_in_float32_unless_bf16_is_asked_for(pretend_mps):
    mps = torch.device("mps")
    assert device_module.amp_dtype("auto", mps) is None and device_module.amp_dtype("off", mps) is None
    assert device_module.amp_dtype("bf16", mps) is torch.bfloat16 and device_module.amp_dtype("fp16", mps) is torch.float16
    assert device_module.native_bf16(mps) is False  # never chosen for the learner: MPS is left to ask for it


def test_several_processes_are_refused_on_mps_with_what_to_do_instead(pretend_mps, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="not supported on Apple MPS; use --device cpu or one process"):
        distributed.init_distributed("mps")
