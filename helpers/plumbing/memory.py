"""How much memory a process holds, read from Linux's /proc: its peak, and how much of that is its own.

The kernel can drop file-backed pages (library code), not anonymous ones (the heap): the anonymous peak must fit; needs no torch.
"""

from __future__ import annotations

import re
from pathlib import Path


def process_memory(pid: int | str = "self") -> dict[str, float]:
    """Resident memory of a process in MB: rss, peak (VmHWM), rss_anon, rss_file and peak_anon (tools/lab_check.py).

    `peak_anon` is VmHWM less the file-backed and shared pages resident now (low if a library loaded after the peak).
    """
    status = (Path("/proc") / str(pid) / "status").read_text()
    kb = {k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile",
                                                                          "RssShmem")}
    mb = {k: v / 1024 for k, v in kb.items()}
    peak_anon = max(mb["RssAnon"], mb["VmHWM"] - mb["RssFile"] - mb["RssShmem"])
    return {"rss": mb["VmRSS"], "peak": mb["VmHWM"], "rss_anon": mb["RssAnon"], "rss_file": mb["RssFile"],
            "peak_anon": peak_anon}
