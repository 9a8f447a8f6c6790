#!/usr/bin/env python3
"""Write each notebook's "Before you run" line and the memory table of docs/maintaining.md from the measured record.

    python tools/before_you_run.py            # rewrite them from results/notebook_costs_cpu.json
    python tools/before_you_run.py --check    # change nothing; exit 1 if anything differs from what would be written

The record is written by `tools/notebook_memory.py --record` after a "Run all" in a fresh kernel (full mode:
ALEXNET_REDUCED=0; reduced mode: ALEXNET_REDUCED=1). A learner gets one paragraph under the title: how long "Run all"
took, that a GPU is optional, and the line that switches to reduced mode (plus a Binder warning where the kernel does
not fit). The memory peaks, a maintainer's concern, go to docs/maintaining.md between MEMORY_START and MEMORY_END.
Everything there is generated: edit this script or the record, never the text.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from lab_check import BINDER_KERNEL_ANON_MB  # noqa: E402  (tools/ is on sys.path for a script)
from notebook_memory import NOTEBOOK_COSTS, notebook_costs  # noqa: E402
from sync_links import write_notebook  # noqa: E402

MARK = "**Before you run.**"
MEMORY_START, MEMORY_END = "<!-- MEMORY -->", "<!-- /MEMORY -->"
# torch's CUDA build allocates this much more on import than Binder's CPU-only build (358 vs 211 MB, measured with
# torch 2.13: docs/maintaining.md, Binder memory), so a peak measured with it errs high by as much on Binder.
CUDA_BUILD_EXTRA_MB = 147


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _binder_peak(entry: dict) -> float:
    return entry["peak_anon_mb"] - (CUDA_BUILD_EXTRA_MB if "+cu" in entry.get("torch", "") else 0)


def cell_text(costs: dict[str, dict]) -> str:
    """The markdown of a notebook's "Before you run" cell from its recorded costs ({"full": ..., "reduced": ...})."""
    full = costs.get("full")
    took = (f"*Run all* took {_duration(full['seconds'])} on a 2-core CPU (`results/{NOTEBOOK_COSTS}`, "
            f"{full['date']})" if full else "*Run all* has not been timed yet")
    text = (f"{MARK} {took}; a GPU is optional and only makes it faster. For a quick smoke test on a few images, run "
            f"`%env ALEXNET_REDUCED=1` in a new cell above the setup cell, then *Run all*.")
    if full and _binder_peak(full) > BINDER_KERNEL_ANON_MB:
        text += (" On Binder, whose 2 GB this notebook's kernel outgrows in full mode, use reduced mode or run it on Colab "
                 "or your own machine.")
    return text


def memory_table(costs: dict[str, dict[str, dict]]) -> str:
    """docs/maintaining.md's table of each notebook's measured time and kernel peak, per mode (from the record)."""
    numbers = sorted(costs)
    rows = ["| notebook | mode | Run all | kernel peak | of it anonymous | on Binder's CPU-only torch, about | machine; date |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for number in numbers:
        for mode in ("full", "reduced"):
            e = costs[number].get(mode)
            if e:
                rows.append(f"| {number} | {mode} | {_duration(e['seconds'])} | {e['peak_mb']:,} MB | {e['peak_anon_mb']:,} MB "
                            f"| {_binder_peak(e):,.0f} MB | {e['device'].replace(' | ', ', ')}; {e['date']} |")
    return "\n".join([MEMORY_START, "", *rows, "", MEMORY_END])


def sync(root: Path = ROOT, write: bool = True) -> list[str]:
    """Bring every notebook's "Before you run" cell and the docs' memory table in line with the record; return changes."""
    costs = notebook_costs(root / "results" / NOTEBOOK_COSTS)
    changes = []
    for path in sorted((root / "notebooks").glob("[0-9]*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        text = cell_text(costs.get(path.name[:2], {}))
        cells = nb["cells"]
        at = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                   and "".join(c["source"]).startswith((MARK, "## Before you run"))), None)
        if at is None:
            cells.insert(1, {"cell_type": "markdown", "id": f"before-you-run-{path.name[:2]}", "metadata": {},
                             "source": [text]})
            changes.append(f"{path.name}: 'Before you run' added")
        elif "".join(cells[at]["source"]) != text:
            cells[at]["source"] = [text]
            changes.append(f"{path.name}: 'Before you run' updated")
        else:
            continue
        if write:
            write_notebook(path, nb)
    docs = root / "docs" / "maintaining.md"
    page = docs.read_text(encoding="utf-8")
    if MEMORY_START not in page or MEMORY_END not in page:
        raise SystemExit(f"{docs} has no {MEMORY_START} ... {MEMORY_END} block for the memory table; add the two markers")
    start, end = page.index(MEMORY_START), page.index(MEMORY_END) + len(MEMORY_END)
    table = memory_table(costs)
    if page[start:end] != table:
        changes.append(f"{docs.relative_to(root)}: memory table updated")
        if write:
            docs.write_text(page[:start] + table + page[end:], encoding="utf-8")
    return changes


def main(argv: list[str] | None = None) -> int:
    """Command line: rewrite them, or with --check only report; exit 1 when something differs (with --check)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; list what differs and exit 1 if anything does")
    args = p.parse_args(argv)
    changes = sync(write=not args.check)
    print("\n".join(changes) if changes else "every 'Before you run' line and the memory table match the record")
    return 1 if args.check and changes else 0


if __name__ == "__main__":
    sys.exit(main())
