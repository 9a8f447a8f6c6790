#!/usr/bin/env python3
"""Write each notebook's "Before you run" cell: what "Run all" costs, measured, and the line that switches to reduced mode.

    python tools/before_you_run.py            # rewrite the cells from results/notebook_costs_cpu.json
    python tools/before_you_run.py --check    # change nothing; exit 1 if a cell differs from what would be written

The CPU figures come from results/notebook_costs_cpu.json, which `tools/notebook_memory.py --record` writes after
running a notebook in a fresh kernel (full mode: ALEXNET_REDUCED=0; reduced mode: ALEXNET_REDUCED=1). The GPU
figures are estimates until a GPU run records them, and the cell says so. The cell sits right under the title cell and
starts with MARK; everything in it is generated, so edit this script or the record, never the cell.
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

MARK = "## Before you run"
# torch's CUDA build allocates this much more on import than Binder's CPU-only build (358 vs 211 MB, measured with
# torch 2.13: docs/maintaining.md, Binder memory), so a peak measured with it errs high by as much on Binder.
CUDA_BUILD_EXTRA_MB = 147

# Not measured: no GPU has run the notebooks yet. Each estimate says what it rests on.
GPU_ESTIMATES = {
    "03": ("a few minutes", "about 1 minute",
           "the `gpu` recipe trains about 1.4 PFLOP (30 epochs of 45,000 images at about 1 GFLOP each, forward and "
           "backward); a T4 at a quarter of its 65 TFLOP/s fp16 peak needs about 90 s for that, an H100 far less, "
           "and loading, evaluation and the demonstrations add to both"),
    "05": ("seconds", "seconds",
           "in full mode it reads the recorded sweep (`results/ablations.json`) and trains nothing unless "
           "`TRAIN_MISSING = True`; each missing run then costs minutes on a CPU, seconds to a minute on a GPU"),
    "06": ("a few minutes", "1–2 minutes",
           "its timings run a fixed number of steps per setting; on a GPU `torch.compile`'s first step (tens of "
           "seconds per compiled setting) and upstream's 227x227 model dominate"),
}
SHORT = ("about as long as on the CPU, or less", "about as long as on the CPU, or less",
         "this notebook trains nothing long: its time is loading, plotting and small computations")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _memory(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def cell_text(number: str, costs: dict[str, dict]) -> str:
    """The markdown of notebook `number`'s "Before you run" cell from its recorded costs."""
    full, reduced = costs.get("full"), costs.get("reduced")
    t4, h100, basis = GPU_ESTIMATES.get(number, SHORT)
    rows = ['| "Run all" | time | kernel memory, peak (of it anonymous) |', "| --- | --- | --- |"]
    for label, entry in (("full mode, 2-core CPU (measured)", full), ("reduced mode, 2-core CPU (measured)", reduced)):
        rows.append(f"| {label} | " + (f"{_duration(entry['seconds'])} | {_memory(entry['peak_mb'])} "
                                       f"({_memory(entry['peak_anon_mb'])})" if entry else "not measured yet | –") + " |")
    rows += [f"| full mode, Colab's T4 GPU | estimate: {t4} | – |", f"| full mode, H100 GPU | estimate: {h100} | – |"]
    measured = full or reduced
    lines = [MARK, "", *rows, ""]
    if measured:
        lines.append(f"Measured in a fresh kernel by `tools/notebook_memory.py` on `{measured['device']}`, "
                     f"{measured['data']}, {measured['date']}. The GPU figures are estimates, not measurements: {basis}.")
    on_binder = {m: e["peak_anon_mb"] - (CUDA_BUILD_EXTRA_MB if "+cu" in e.get("torch", "") else 0)
                 for m, e in (("full", full), ("reduced", reduced)) if e}
    too_big = [m for m, mb in on_binder.items() if mb > BINDER_KERNEL_ANON_MB]
    close = [m for m, mb in on_binder.items() if BINDER_KERNEL_ANON_MB - 150 < mb <= BINDER_KERNEL_ANON_MB]
    if too_big or close:
        lines.append("")
    if too_big:
        lines.append(f"**Binder:** in {' and '.join(too_big)} mode this kernel holds more than the "
                     f"{BINDER_KERNEL_ANON_MB:,} MB a 2 GB Binder session leaves it; run it on Colab or your own machine.")
    elif close:
        lines.append(f"**Binder:** in {' and '.join(close)} mode this kernel comes within 150 MB of the "
                     f"{BINDER_KERNEL_ANON_MB:,} MB a 2 GB Binder session leaves it "
                     f"(about {max(on_binder[m] for m in close):,.0f} MB "
                     f"with Binder's CPU-only torch, which takes about {CUDA_BUILD_EXTRA_MB} MB less than the CUDA build "
                     "measured here): if the kernel restarts, use reduced mode there.")
    lines += ["", "**Reduced mode** runs every cell on a slice of the data in a few minutes; its numbers are a smoke test, "
              "not results. To switch it on from inside the notebook, run this line in a new cell *above* the setup "
              "cell below, then *Run all*:", "", "```", "%env ALEXNET_REDUCED=1", "```"]
    return "\n".join(lines)


def sync(root: Path = ROOT, write: bool = True) -> list[str]:
    """Bring every notebook's "Before you run" cell in line with the record; return what changed (or would change)."""
    costs = notebook_costs(root / "results" / NOTEBOOK_COSTS)
    changes = []
    for path in sorted((root / "notebooks").glob("[0-9]*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        text = cell_text(path.name[:2], costs.get(path.name[:2], {}))
        cells = nb["cells"]
        at = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                   and "".join(c["source"]).startswith(MARK)), None)
        source = [line + "\n" for line in text.split("\n")[:-1]] + [text.split("\n")[-1]]
        if at is None:
            cells.insert(1, {"cell_type": "markdown", "id": f"before-you-run-{path.name[:2]}", "metadata": {},
                             "source": source})
            changes.append(f"{path.name}: 'Before you run' added")
        elif cells[at]["source"] != source:
            cells[at]["source"] = source
            changes.append(f"{path.name}: 'Before you run' updated")
        else:
            continue
        if write:
            write_notebook(path, nb)
    return changes


def main(argv: list[str] | None = None) -> int:
    """Command line: rewrite the cells, or with --check only report; exit 1 when something differs (with --check)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; list what differs and exit 1 if anything does")
    args = p.parse_args(argv)
    changes = sync(write=not args.check)
    print("\n".join(changes) if changes else "every 'Before you run' cell matches the record")
    return 1 if args.check and changes else 0


if __name__ == "__main__":
    sys.exit(main())
