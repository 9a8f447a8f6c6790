"""Measuring speed: training-step throughput, loader throughput and the device's peak FLOP/s (notebook 06)."""

from __future__ import annotations

import contextlib
import logging
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..course import reduced_mode
from ..data import measure_throughput
from ..device import amp_dtype, autocast, cpuinfo_values, pick_device, release_memory, synchronize
from ..models import build_model
from ..training.recipes import RECIPES, UPSTREAM


@dataclass(frozen=True)
class Setting:
    """One configuration of a training step to time: model, batch, precision, memory format, compile (notebook 06)."""

    label: str
    model: str = "cifar_alexnet_small"  # a preset of helpers.models.PRESETS
    overrides: dict = field(default_factory=dict)  # model overrides, e.g. {"input_size": 227}
    batch_size: int = 256
    amp: str = "off"  # as Recipe.amp: "off", "bf16", "fp16", "auto"
    channels_last: bool = False
    compile: bool = False
    backward: bool = True  # forward + backward + SGD step; False: forward only under no_grad


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        low = 0 if name == "warmup" else 1
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class _Step:
    """A prepared training (or inference) step on a fixed synthetic batch."""

    def __init__(self, setting: Setting, device: torch.device, seed: int = 0) -> None:
        _check_counts(batch_size=setting.batch_size)
        torch.manual_seed(seed)
        self.setting = setting
        self.device = device
        model = build_model(setting.model, **setting.overrides).to(device)
        size = model.config.input_size
        self.x = torch.randn(setting.batch_size, 3, size, size, device=device)
        self.y = torch.randint(0, model.config.num_classes, (setting.batch_size,), device=device)
        if setting.channels_last:
            model = model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.model = model.train(setting.backward)
        self.run_model = torch.compile(model) if setting.compile else model
        self.dtype = amp_dtype(setting.amp, device)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if setting.backward else None

    def __call__(self) -> None:
        if self.setting.backward:
            with autocast(self.device, self.dtype):
                logits = self.run_model(self.x)
            loss = F.cross_entropy(logits.float(), self.y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        else:
            with torch.no_grad(), autocast(self.device, self.dtype):
                self.run_model(self.x)

    def time(self, steps: int) -> float:
        """Seconds for `steps` steps, queued device work included."""
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self()
        synchronize(self.device)
        return time.perf_counter() - start


def compare_throughput(settings: Sequence[Setting], *, steps: int = 5, warmup: int = 2, repeats: int = 3,
                       device: torch.device | str | None = None, progress: bool = True):
    """Images/s of each setting's step on synthetic data, settings interleaved, median over repeats (notebook 06).

    One step's model exists at a time (rebuilt with the same weights each turn) so the upstream model fits Binder's 2 GB.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    _check_counts(steps=steps, warmup=warmup, repeats=repeats)
    if not settings:
        raise ValueError("give at least one Setting to time")
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise ValueError(f"setting labels must be unique, got {labels}")
    device = pick_device() if device is None else torch.device(device)
    bar = tqdm(total=len(settings) * (repeats + 1), desc="timing", unit="run", disable=not progress)
    kept, first, facts = _first_steps(settings, device, bar)
    times: list[list[float]] = [[] for _ in settings]
    for _ in range(repeats):
        for i, s in enumerate(settings):
            step = kept.get(i) or _Step(s, device)
            if warmup:
                step.time(warmup)
            times[i].append(step.time(steps))
            if i in kept and step.optimizer is not None:  # a kept step's gradients need not outlive its turn
                step.optimizer.zero_grad(set_to_none=True)
            del step
            bar.update()
    bar.close()
    return pd.DataFrame([_speed_row(s, size, dtype, t, t0, steps)
                         for s, (size, dtype), t, t0 in zip(settings, facts, times, first)])


def _first_steps(settings: Sequence[Setting], device: torch.device, bar) -> tuple[dict, list, list]:
    """Build and time each setting's first step; keep the compiled ones. Returns (kept, first seconds, facts)."""
    kept: dict[int, _Step] = {}
    first, facts = [], []
    for i, s in enumerate(settings):
        step = _Step(s, device)
        with _quiet_cuda_home_warning() if s.compile else contextlib.nullcontext():
            first.append(step.time(1))  # compilation, allocator and kernel-selection costs land here
        facts.append((step.model.config.input_size, step.dtype))
        if s.compile:
            kept[i] = step
        del step
        release_memory()
        bar.update()
    return kept, first, facts


@contextlib.contextmanager
def _quiet_cuda_home_warning():
    """Raise the level of torch's `torch.utils.cpp_extension` logger to ERROR while a compiled step first runs.

    torch.compile's first call imports that module, which on a CUDA build of torch on a machine without a GPU logs
    "No CUDA runtime is found, using CUDA_HOME=..." once, at import. Compiling for the CPU uses no CUDA, so the line
    says nothing about the timing; only this one logger is raised, and only for the first step, so every other
    warning (and this one on any other occasion) still shows.
    """
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _speed_row(s: Setting, size: int, dtype: torch.dtype | None, t: list[float], t0: float, steps: int) -> dict:
    per_s = [s.batch_size * steps / x for x in t]
    return {**{k: v for k, v in asdict(s).items() if k != "overrides"}, "input_size": size,
            "images_per_s": statistics.median(per_s), "images_per_s_min": min(per_s), "images_per_s_max": max(per_s),
            "ms_per_step": 1000 * statistics.median(t) / steps, "first_step_s": t0,
            "amp_dtype": str(dtype).replace("torch.", "") if dtype is not None else "float32"}


def throughput(model: str = "cifar_alexnet_small", batch_size: int = 256, amp: str = "off", channels_last: bool = False,
               steps: int = 5, *, warmup: int = 2, repeats: int = 3, compile: bool = False, backward: bool = True,
               device: torch.device | str | None = None, **overrides) -> dict:
    """Median images/s of one model's training step on synthetic data; see compare_throughput (notebook 06)."""
    setting = Setting("run", model, overrides, batch_size, amp, channels_last, compile, backward)
    frame = compare_throughput([setting], steps=steps, warmup=warmup, repeats=repeats, device=device, progress=False)
    return frame.iloc[0].to_dict()


def loader_throughput(make_loader: Callable[[], Iterable], max_images: int, repeats: int = 3) -> dict:
    """Median images/s of iterating a fresh loader for `max_images` images, `repeats` times (notebook 06)."""
    _check_counts(max_images=max_images, repeats=repeats)
    runs = [measure_throughput(make_loader(), max_images) for _ in range(repeats)]
    rates = [r["images_per_s"] for r in runs]
    return {"images": runs[0]["images"], "images_per_s": statistics.median(rates),
            "images_per_s_min": min(rates), "images_per_s_max": max(rates), "repeats": repeats}


# FLOPs per core per cycle (2 per FMA), from the vendors' microarchitecture descriptions: 2 FMA units per recent x86 core;
# AMD Zen 4 runs 512-bit instructions on 256-bit units; AVX512-BF16 dot products do two bf16 products per fp32 lane.
_FP32_PER_CYCLE = {"avx512_intel": 64, "avx512_amd": 32, "avx2_fma": 32, "avx": 16, "sse": 8}


def _cpu_flags() -> set[str]:
    flags = cpuinfo_values("flags")
    return set(flags[0].split()) if flags else set()


def _cpu_ghz() -> tuple[float | None, str]:
    """The highest clock the OS tells us: cpufreq's maximum (boost) if present, else /proc/cpuinfo's current MHz."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return int(f.read().strip()) / 1e6, "cpufreq maximum"
    except (OSError, ValueError):
        pass
    try:
        mhz = [float(v) for v in cpuinfo_values("cpu MHz")]
        if mhz:
            return max(mhz) / 1000, "/proc/cpuinfo, often the base clock"
    except ValueError:
        pass
    return None, "assumed"


def cpu_peak_flops(cores: int | None = None, ghz: float | None = None, flags: set[str] | None = None,
                   vendor: str | None = None) -> dict:
    """An ESTIMATE of the CPU's peak FLOP/s: cores x GHz x FLOPs per cycle, for fp32 and bf16 (notebook 06).

    Not a bound either way: cores may boost above a reported base clock, and wide vector instructions throttle them.
    """
    cores = torch.get_num_threads() if cores is None else cores
    measured_ghz, ghz_source = _cpu_ghz() if ghz is None else (ghz, "given")
    flags = _cpu_flags() if flags is None else set(flags)
    vendor = (_cpu_vendor() if vendor is None else vendor).lower()
    if not cores >= 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    if measured_ghz is not None and not measured_ghz > 0:
        raise ValueError(f"ghz must be positive, got {measured_ghz}")
    if "avx512f" in flags:
        isa = "avx512_amd" if "amd" in vendor else "avx512_intel"
    elif "avx2" in flags and "fma" in flags:
        isa = "avx2_fma"
    elif "avx" in flags:
        isa = "avx"
    else:
        isa = "sse"
    fp32 = _FP32_PER_CYCLE[isa]
    if "amx_bf16" in flags:
        bf16, bf16_how = 1024, "AMX tiles"
    elif "avx512_bf16" in flags:
        bf16, bf16_how = 2 * fp32, "AVX512-BF16 dot products"
    else:
        bf16, bf16_how = fp32, "no native bf16 (converted to fp32)"
    clock = measured_ghz if measured_ghz is not None else 3.0
    return {"cores": cores, "ghz": clock, "ghz_source": ghz_source if measured_ghz is not None else "assumed",
            "isa": isa, "fp32_flops_per_cycle": fp32, "bf16_flops_per_cycle": bf16, "bf16_how": bf16_how,
            "fp32_peak": cores * clock * 1e9 * fp32, "bf16_peak": cores * clock * 1e9 * bf16, "estimate": True}


def _cpu_vendor() -> str:
    vendors = cpuinfo_values("vendor_id")
    return vendors[0] if vendors else (platform.processor() or "")


# Dense peak TFLOP/s from NVIDIA's datasheets (FP32, TF32, BF16): their tensor-core figures assume 2:4 sparsity, these are
# half of them. PyTorch runs float32 convolutions on CUDA as TF32 by default (torch.backends.cudnn.allow_tf32).
GPU_PEAK_TFLOPS: dict[str, tuple[float, float | None, float]] = {
    "H100 SXM": (67.0, 494.5, 989.5),  # NVIDIA H100 Tensor Core GPU datasheet
    "H100 PCIe": (51.0, 378.0, 756.5),
    "H100 NVL": (60.0, 417.5, 835.5),
    "H200": (67.0, 494.5, 989.5),  # NVIDIA H200 datasheet (SXM): the H100's compute with more memory
    "A100": (19.5, 156.0, 312.0),  # NVIDIA A100 datasheet
    "L4": (30.3, 60.0, 121.0),  # NVIDIA L4 datasheet
    "T4": (8.1, None, 65.0),  # NVIDIA T4 datasheet: no TF32 or BF16; the last number is FP16 tensor cores
}


def gpu_peak_flops(name: str) -> dict | None:
    """Datasheet peak FLOP/s (FP32, dense TF32 and BF16) for a name like torch.cuda.get_device_name's, or None (notebook 06)."""
    tokens = re.split(r"[\s\-_]+", name.upper())
    if "H100" in tokens:
        key = "H100 PCIe" if "PCIE" in tokens else "H100 NVL" if "NVL" in tokens else "H100 SXM"
    elif "H200" in tokens and "NVL" not in tokens:
        key = "H200"
    else:
        key = next((k for k in ("A100", "L4", "T4") if k in tokens), None)
    if key is None:
        return None
    fp32, tf32, bf16 = GPU_PEAK_TFLOPS[key]
    return {"gpu": key, "fp32_peak": fp32 * 1e12, "tf32_peak": tf32 * 1e12 if tf32 else None, "bf16_peak": bf16 * 1e12,
            "estimate": False, "source": f"NVIDIA {key} datasheet, dense (sparsity figures halved)"}


def device_peak(device: torch.device | str) -> dict | None:
    """Peak FLOP/s of a device: datasheet for known GPUs, an estimate for the CPU, None otherwise (notebook 06)."""
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device))
    if device.type == "cpu":
        return cpu_peak_flops()
    return None


def compile_note(device: torch.device | str) -> str:
    """Why torch.compile is or is not timed in this run, for a notebook to print (notebook 06)."""
    device = torch.device(device)
    if reduced_mode() and device.type == "cpu":
        return ("reduced mode on a CPU: torch.compile is NOT timed here (compiling the C++ kernels of a training "
                "step takes a minute or more on a small CPU); full mode times it")
    return "torch.compile is timed below; its first step includes the compilation"


# On a CPU the upstream model is timed at batch 16 instead of its 128: its weights, gradients and Adam's
# buffers do not shrink with the batch, and batch 128's activations would not fit Binder's 2 GB (README, Memory).
_UPSTREAM_TIMING_BATCH_CPU = 16


def upstream_timing_batch(device_type: str) -> int:
    """Batch for timing the upstream model: its own 128 on a GPU, 16 on a CPU to fit a 2 GB machine (notebook 06)."""
    return _UPSTREAM_TIMING_BATCH_CPU if device_type == "cpu" else RECIPES[UPSTREAM].batch_size
