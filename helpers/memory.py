"""How much memory a process holds, read from Linux's /proc: its peak, and how much of that is its own.

A process's resident memory (RSS) has two parts. Anonymous pages are its heap: tensors, Python
objects, everything it allocated; they must stay in memory (Binder has no swap). File-backed pages
are mapped files, mostly the code of shared libraries; they are clean copies of files on disk, so the
kernel drops them when memory is short instead of killing the process, and how many are resident
depends on what the page cache held when the libraries were mapped (README, Memory, has a measured
example). So the measure of
"does it fit in a 2 GB Binder session" is the anonymous peak. The browser test (tools/lab_check.py)
and tools/notebook_memory.py use this module; it needs no torch.
"""

from __future__ import annotations

import re
from pathlib import Path


def process_memory(pid: int | str = "self") -> dict[str, float]:
    """Resident memory of a process in MB: rss, peak (VmHWM), rss_anon, rss_file and peak_anon (tools/lab_check.py).

    Linux records the peak of the total (VmHWM) but not of its parts; `peak_anon` is that peak less
    the file-backed and shared pages resident now. File-backed pages accumulate as libraries are
    loaded and stay, so at the moment of the peak there were at most as many as now, unless a library
    was first loaded after the peak; in that case the figure is low by that library's pages.
    """
    status = (Path("/proc") / str(pid) / "status").read_text()
    kb = {k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile",
                                                                          "RssShmem")}
    mb = {k: v / 1024 for k, v in kb.items()}
    peak_anon = max(mb["RssAnon"], mb["VmHWM"] - mb["RssFile"] - mb["RssShmem"])
    return {"rss": mb["VmRSS"], "peak": mb["VmHWM"], "rss_anon": mb["RssAnon"], "rss_file": mb["RssFile"],
            "peak_anon": peak_anon}
