"""How much memory a process holds, read from Linux's /proc, and how much of it a CPU-only torch would not.

A Binder machine has a memory limit (2 GB on mybinder.org) and installs the CPU-only build of
torch. Measured with a CUDA build, a process also holds the resident pages of the CUDA, NVIDIA and
Triton libraries, which the CPU build never loads; `process_memory` reports them separately so that
a measurement on a machine with the CUDA build can be read for Binder. The browser test
(tools/lab_check.py) and tools/notebook_memory.py use it; it needs no torch.
"""

from __future__ import annotations

import re
from pathlib import Path

# File mappings that only a CUDA build of torch has: the CUDA libraries of the nvidia-* wheels, torch's
# own CUDA parts, and Triton (the compiler torch.compile uses on GPUs, loaded when torch.optim starts).
GPU_ONLY_LIBRARY = re.compile(
    r"/(nvidia|triton)/|/lib(torch_cuda|c10_cuda|cudnn|cublas|cufft|curand|cusolver|cusparse|nccl|nvrtc|nvJitLink"
    r"|cudart|cupti|nvToolsExt)[^/]*\.so"
)
_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+\s")


def gpu_library_kb(smaps: str) -> int:
    """Resident kB of GPU-only library mappings in the text of a /proc/PID/smaps file (tools/lab_check.py)."""
    total, gpu_only = 0, False
    for line in smaps.splitlines():
        if _MAPPING.match(line):
            fields = line.split(maxsplit=5)
            gpu_only = len(fields) == 6 and bool(GPU_ONLY_LIBRARY.search(fields[5]))
        elif gpu_only and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def process_memory(pid: int | str = "self") -> dict[str, float]:
    """Resident memory of a process in MB: rss, peak (VmHWM), gpu_libraries, peak_without_gpu_libraries (tools/).

    `peak_without_gpu_libraries` approximates the same run's peak with a CPU-only torch. It errs
    high: the libraries' pages are loaded at import and stay, so they were resident at the peak too,
    and the heap those libraries allocate is not subtracted.
    """
    proc = Path("/proc") / str(pid)
    status = (proc / "status").read_text()
    value = {k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) / 1024 for k in ("VmRSS", "VmHWM")}
    gpu = gpu_library_kb((proc / "smaps").read_text()) / 1024
    return {"rss": value["VmRSS"], "peak": value["VmHWM"], "gpu_libraries": gpu,
            "peak_without_gpu_libraries": value["VmHWM"] - gpu}
