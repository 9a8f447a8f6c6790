#!/usr/bin/env python3
"""Make a notebook's committed outputs read right where no kernel runs (GitHub, nbconvert, the course's site).

A tqdm progress bar in a notebook is a widget: the output saved with it holds the widget's id and, as the text every
other renderer shows, the bar as it was drawn first ("0%|          | 0/175"). Its later states travel only to a live
frontend, so GitHub shows every finished bar at 0%. `finish_progress_bars` replaces each such output with the text of
the finished bar (100%, n/n): what a reader of the run's record should see.

    python tools/static_outputs.py notebooks/03_training.ipynb [...]   # rewrite in place
    python tools/static_outputs.py --check notebooks/*.ipynb           # exit 1 if a bar would change

tools/notebook_memory.py --write calls it on every notebook it saves.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

WIDGET = "application/vnd.jupyter.widget-view+json"
# tqdm's text form: "<desc>: <pct>%|<bar>| <n>/<total> [<elapsed><<remaining>, <rate><postfix>]"
BAR = re.compile(r"^(?P<desc>.*?)\s*(?P<pct>\d+)%\|(?P<bar>[^|]*)\|\s*(?P<n>[\d.]+[kMG]?)/(?P<total>[\d.]+[kMG]?)"
                 r"(?:\s*\[(?P<rest>[^\]]*)\])?\s*$")
WIDTH = 10  # tqdm's bar width in a notebook's text form


def finished_bar(text: str) -> str | None:
    """The text of a tqdm bar at its end ("desc: 100%|██████████| 175/175"), or None if `text` is not a tqdm bar."""
    match = BAR.match(text.strip())
    if match is None:
        return None
    desc = f"{match['desc']} " if match["desc"] else ""
    return f"{desc}100%|{'█' * WIDTH}| {match['total']}/{match['total']}"


def finish_progress_bars(nb: dict) -> int:
    """Replace every progress-bar widget output of `nb` by the finished bar's text; returns how many were replaced."""
    replaced = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET not in data:
                continue
            plain = data.get("text/plain", "")
            text = finished_bar("".join(plain) if isinstance(plain, list) else plain)
            if text is not None:
                output["data"] = {"text/plain": text}
                replaced += 1
    return replaced


def unfinished_bars(nb: dict) -> list[str]:
    """Progress bars a static view of `nb` would show unfinished: widget outputs with a tqdm text (repository check)."""
    found = []
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            plain = data.get("text/plain", "")
            text = "".join(plain) if isinstance(plain, list) else plain
            if WIDGET in data and finished_bar(text) is not None:
                found.append(f"cell {index}: {text.strip()[:60]}")
    return found


def main(argv: list[str] | None = None) -> int:
    """Command line: rewrite the notebooks given, or with --check only report; exit 1 when a bar is unfinished."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--check", action="store_true", help="change nothing; list unfinished bars and exit 1 if any")
    args = p.parse_args(argv)
    from sync_links import write_notebook

    status = 0
    for path in args.notebooks:
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            print(f"error: {path}: cannot be read as a notebook ({err})")
            return 2
        if args.check:
            bars = unfinished_bars(nb)
            status = max(status, 1 if bars else 0)
            print("\n".join(f"{path.name}: {b}" for b in bars) or f"{path.name}: every progress bar reads as finished")
        elif finish_progress_bars(nb):
            write_notebook(path, nb)
            print(f"{path.name}: progress bars finished")
    return status


if __name__ == "__main__":
    sys.exit(main())
