#!/usr/bin/env python3
"""Run a notebook cell by cell in a fresh kernel and print how much memory the kernel holds after each cell.

For each code cell: its seconds, the kernel's resident memory (RSS), its peak so far (VmHWM), and the
anonymous part of that peak, the kernel's own heap and tensors (helpers.plumbing.memory), which is what has to
fit in a Binder session (2 GB for the kernel and the Jupyter server together). This finds the cell
that would restart a Binder kernel; tools/lab_check.py enforces the limit on reduced mode in CI, and
this script measures full mode, which CI cannot afford.

    ALEXNET_REDUCED=1 python tools/notebook_memory.py notebooks/03_training.ipynb
    python tools/notebook_memory.py notebooks/06_performance.ipynb --write   # full mode, keep the outputs

Cells marked # NBVAL_SKIP (they need the network) are not run. With --write the executed notebook is
saved in place (skipped cells keep their committed outputs). Linux only (/proc).
The run stops at the first cell with an error output.
Exit status: 0 no error output and under --max-anon-mb, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from lab_check import nbval_marked  # the same rule as the browser test (tools/ is on sys.path for a script)
from nbclient import NotebookClient
from static_outputs import finish_progress_bars

from helpers.plumbing.memory import process_memory


def main(argv: list[str] | None = None) -> int:
    """Run the notebook; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("--write", action="store_true", help="save the executed notebook in place")
    p.add_argument("--max-anon-mb", type=float, default=None,
                   help="fail when the kernel's peak anonymous memory exceeds this many MB")
    p.add_argument("--timeout", type=float, default=7200, help="seconds one cell may take (default 7200)")
    p.add_argument("--record", type=Path, help="store the run's seconds and memory in this JSON file "
                                                "(results/notebook_costs_cpu.json: the notebooks' 'Before you run' tables)")
    args = p.parse_args(argv)
    path = args.notebook.resolve()
    nb = nbformat.read(path, as_version=4)
    # allow_errors: a failing cell is reported (and ends the run) here instead of raising inside nbclient
    client = NotebookClient(nb, timeout=int(args.timeout), kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    failed, started = [], time.monotonic()
    with client.setup_kernel():
        pid = client.km.provisioner.process.pid
        memory = process_memory(pid)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            first_line = cell.source.splitlines()[0][:60] if cell.source else ""
            if nbval_marked(cell, "skip"):
                print(f"cell {index:2d}: not run (NBVAL_SKIP)", flush=True)
                continue
            t = time.monotonic()
            client.execute_cell(cell, index)
            memory = process_memory(pid)
            failed = [o.ename for o in cell.outputs if o.output_type == "error"]
            print(f"cell {index:2d}: {time.monotonic() - t:7.1f} s  rss {memory['rss']:5.0f} MB  peak {memory['peak']:5.0f} MB"
                  f"  anonymous peak {memory['peak_anon']:5.0f} MB  {first_line!r}"
                  f"{'  ERROR ' + failed[0] if failed else ''}", flush=True)
            if failed:  # later cells would fail for the same reason and measure nothing useful
                break
    if args.write:
        finish_progress_bars(nb)  # GitHub and the site show a bar's first text: make it the finished bar's
        nbformat.write(nb, path)
    peak = memory["peak_anon"]
    print(f"{path.name}: {time.monotonic() - started:.0f} s; kernel peak {memory['peak']:.0f} MB, "
          f"{peak:.0f} MB of it anonymous"
          f"{'; wrote ' + str(path) if args.write else ''}")
    if args.record and not failed:
        record(args.record, path.name, time.monotonic() - started, memory)
    too_big = args.max_anon_mb is not None and peak > args.max_anon_mb
    if too_big:
        print(f"the anonymous peak, {peak:.0f} MB, exceeds --max-anon-mb {args.max_anon_mb:.0f}")
    return 1 if failed or too_big else 0


def record(out: Path, name: str, seconds: float, memory: dict) -> None:
    """Store this run under its notebook number and the mode the kernel ran in (it inherits ALEXNET_REDUCED)."""
    from datetime import datetime, timezone

    import torch

    from helpers.course import reduced_mode
    from helpers.data.cifar10 import dataset_label
    from helpers.device import describe_device, pick_device

    mode = "reduced" if reduced_mode() else "full"
    record_notebook_cost(out, name, mode, {
        "seconds": round(seconds), "peak_mb": round(memory["peak"]), "peak_anon_mb": round(memory["peak_anon"]),
        "device": describe_device(pick_device()), "torch": torch.__version__, "data": dataset_label(),
        "date": datetime.now(timezone.utc).date().isoformat()})
    print(f"recorded {name} ({mode} mode) in {out}")


NOTEBOOK_COSTS = "notebook_costs_cpu.json"


def notebook_costs(path: str | os.PathLike | None = None) -> dict[str, dict[str, dict]]:
    """Measured cost of each notebook's "Run all": {"03": {"full": {seconds, peak_mb, ...}, "reduced": {...}}} (README)."""
    from helpers.course import results_dir

    path = Path(path) if path is not None else results_dir() / NOTEBOOK_COSTS
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("notebooks", {})


def record_notebook_cost(path: str | os.PathLike, notebook: str, mode: str, entry: dict) -> None:
    """Store one notebook's measured "Run all" (seconds, memory, machine) under its number and mode, atomically (tools)."""
    from helpers.plumbing.checks import one_of
    from helpers.plumbing.files import atomic_write_json

    one_of("mode", mode, ("full", "reduced"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("what", 'seconds and kernel memory of a "Run all" of each notebook in a fresh kernel '
                            "(tools/notebook_memory.py --record), per mode")
    data.setdefault("notebooks", {}).setdefault(notebook[:2], {})[mode] = entry
    atomic_write_json(path, data)


if __name__ == "__main__":
    sys.exit(main())
