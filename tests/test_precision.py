"""Which precision runs where: one rule (helpers.device.amp_dtype) for every NVIDIA generation, the CPU and MPS."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import helpers.device as device_module
from helpers.course import seed_everything
from helpers.data import DeviceLoader
from helpers.device import amp_dtype, native_bf16
from helpers.models import build_model
from helpers.training import Recipe, fit, load_checkpoint

GPUS = {"P100": (6, 0), "V100": (7, 0), "T4": (7, 5), "A100": (8, 0), "L4": (8, 9), "H100": (9, 0)}


def pretend_gpu(monkeypatch, capability: tuple[int, int]) -> torch.device:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what recent PyTorch says on a T4
    return torch.device("cuda")


@pytest.mark.parametrize("gpu", GPUS)
def test_each_gpu_generation_gets_its_native_precision(monkeypatch, gpu):
    cuda = pretend_gpu(monkeypatch, GPUS[gpu])
    native = GPUS[gpu] >= (8, 0)
    assert native_bf16(cuda) is native
    assert amp_dtype("auto", cuda) == (torch.bfloat16 if native else torch.float16)
    assert amp_dtype("fp16", cuda) == torch.float16 and amp_dtype("off", cuda) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert amp_dtype("bf16", cuda) == (torch.bfloat16 if native else torch.float16)
    assert bool(caught) is not native
    if not native:
        assert "no native bfloat16" in str(caught[0].message) and f"{GPUS[gpu][0]}.{GPUS[gpu][1]}" in str(caught[0].message)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_the_cpu_uses_bf16_only_where_it_is_native(monkeypatch, has_bf16):
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: has_bf16)
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None
    if has_bf16:
        assert amp_dtype("bf16", cpu) == torch.bfloat16
    else:
        with pytest.warns(UserWarning, match="no native bfloat16.*float32 instead"):
            assert amp_dtype("bf16", cpu) is None
    assert amp_dtype("auto", torch.device("mps")) is None


def test_fp16_on_a_cpu_that_cannot_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(device_module, "_cpu_fp16_works", lambda: False)
    with pytest.raises(ValueError, match="--amp fp16: this PyTorch cannot autocast to float16 on the CPU"):
        amp_dtype("fp16", torch.device("cpu"))


def _tiny_fp16_run(tmp_path, monkeypatch, init_scale: float):
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=init_scale))
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (64,), generator=gen)
    seed_everything(0)
    model = build_model("cifar_alexnet_small", dropout=0.0, width=0.25, fc_size=32)  # float16 on a CPU is slow
    start = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05, amp="fp16", channels_last=False, tta=False)
    history = fit(model, DeviceLoader(images, labels, 16), DeviceLoader(images, labels, 32, shuffle=False), recipe,
                  checkpoint=tmp_path / f"{init_scale}.pt", progress=False)
    return model, start, history, load_checkpoint(tmp_path / f"{init_scale}.pt")["scaler"]


def test_fp16_with_a_gradient_scaler_trains_for_real_on_the_cpu(tmp_path, monkeypatch):
    model, start, history, scaler = _tiny_fp16_run(tmp_path, monkeypatch, 2.0**16)
    assert torch.isfinite(torch.tensor(history.last["train_loss"]))
    assert not torch.equal(model.features[0].weight, start["features.0.weight"])  # the steps were taken
    assert scaler["scale"] > 0


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # every step skipped
def test_the_gradient_scaler_skips_steps_whose_gradients_overflow(tmp_path, monkeypatch):
    model, start, history, scaler = _tiny_fp16_run(tmp_path, monkeypatch, 2.0**100)  # every fp16 gradient is inf
    assert scaler["scale"] == 2.0**100 * 0.5**4  # 4 steps, each skipped, each halving the scale
    assert torch.equal(model.features[0].weight, start["features.0.weight"])  # no step reached the weights
