"""Devices and precision: the fastest available device, the machine in one line, and the one rule for which
floating-point precision trains where (`amp_dtype`)."""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """Return CUDA if present, else Apple MPS, else the CPU (every notebook's start(), the CLI)."""
    available = available_devices()
    if prefer is not None:
        try:
            kind = torch.device(prefer).type
        except (RuntimeError, TypeError) as err:  # "tpu", "gpu0": not a device name torch knows
            raise ValueError(f"{prefer!r} is not a device name; use one of {', '.join(available)}") from err
        if kind not in available:
            raise ValueError(f"device {prefer!r} is not available on this machine; available: {', '.join(available)}")
        return torch.device(prefer)
    return torch.device(available[0])


def available_devices() -> list[str]:
    """List usable device types, fastest first (pick_device)."""
    kinds = []
    if torch.cuda.is_available():
        kinds.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        kinds.append("mps")
    kinds.append("cpu")
    return kinds


def _device_name(device: torch.device | str) -> str:
    """Human name of a device: the GPU model, 'Apple MPS' or the CPU model (describe_device)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    names = cpuinfo_values("model name")
    return names[0] if names else (platform.processor() or platform.machine() or "CPU")


def describe_device(device: torch.device | str | None = None) -> str:
    """One line for notebooks and logs: device, its name, torch version, CPU threads (every notebook's start(), the CLI)."""
    device = pick_device() if device is None else torch.device(device)
    parts = [f"device={device.type}", _device_name(device), f"torch {torch.__version__}"]
    if device.type == "cuda":
        parts.append(f"CUDA {torch.version.cuda}")
    parts.append(f"{torch.get_num_threads()} CPU threads")
    return " | ".join(parts)


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bfloat16 matrix work natively (AVX512-BF16/AMX), so bf16 autocast pays off (notebook 06)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpuinfo_values(field: str) -> list[str]:
    """Every value of one field of /proc/cpuinfo (one per core), or [] if none (notebook 06's cpu_peak_flops, _device_name)."""
    try:
        with open("/proc/cpuinfo") as f:
            return [line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == field]
    except OSError:
        return []


def release_memory() -> None:
    """Free unreferenced tensors and hand freed heap memory back to the OS, before a memory-hungry cell (notebook 06)."""
    import ctypes
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # Binder's 2 GB limit counts what glibc kept for reuse
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so a timer measures it too (notebook 03's engine, 06's timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def native_bf16(device: torch.device | str) -> bool:
    """Whether a device does bfloat16 matrix work natively: a GPU of compute capability >= 8.0 or a CPU with
    AVX512-BF16/AMX; Apple MPS is left to ask for it explicitly (notebook 06)."""
    device = torch.device(device)
    if device.type == "cuda":  # not is_bf16_supported(): True on a T4 (7.5) too, where bf16 is emulated and slow
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and cpu_supports_bf16()


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` (auto/bf16/fp16/off) on a device, or None for float32 (notebook 03's engine, 06's timings).

    "auto" is bf16 on a GPU with native bf16, fp16 (with a gradient scaler) on older GPUs, float32 elsewhere;
    "bf16" where it is not native falls back, with a warning, to fp16 on a GPU and to float32 on a CPU.
    """
    device = torch.device(device)
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp in ("auto", "bf16") and native_bf16(device):
        return torch.bfloat16
    if amp == "bf16" and device.type == "cpu":
        warnings.warn("this CPU has no native bfloat16 (AVX512-BF16 or AMX): training in float32 instead, "
                      "which is faster here than emulated bf16", stacklevel=2)
        return None
    if amp == "bf16" and device.type == "cuda":
        warnings.warn(f"this GPU (compute capability {'.'.join(map(str, torch.cuda.get_device_capability(device)))}) "
                      f"has no native bfloat16: using float16 autocast with a gradient scaler instead", stacklevel=2)
        return torch.float16
    if amp == "fp16" and device.type == "cpu" and not _cpu_fp16_works():
        raise ValueError("--amp fp16: this PyTorch cannot autocast to float16 on the CPU; use --amp bf16 (where the CPU "
                         "has it) or --amp off")
    return torch.bfloat16 if amp == "bf16" else torch.float16


@functools.cache
def _cpu_fp16_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return torch.nn.functional.linear(torch.ones(1, 2), torch.ones(2, 2)).dtype == torch.float16
    except (RuntimeError, ValueError):
        return False


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for `dtype`, or a no-op when dtype is None (notebook 03's engine, 06's timings)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
