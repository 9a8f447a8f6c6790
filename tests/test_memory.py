"""Reading a process's memory from /proc: its peak, anonymous and file-backed parts (helpers/plumbing/memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A fresh process: in pytest's own, an earlier test's peak would hide the one measured here.
PROBE = """
import json, mmap, sys
from helpers.plumbing.memory import process_memory
steps = [process_memory()]
block = bytearray(64 * 1024 * 1024)  # 64 MB of heap, written so that its pages are resident
block[::4096] = b"\\1" * len(block[::4096])
steps.append(process_memory())
with open(sys.argv[1], "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
    touched = sum(mapped[i] for i in range(0, len(mapped), 4096))  # every page of the file
    steps.append(process_memory())
print(json.dumps({"steps": steps, "touched": touched}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_heap_counts_as_anonymous_and_a_mapped_file_does_not(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"\2" * (64 * 1024 * 1024))
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    start, heap, mapped = result["steps"]
    assert result["touched"] == 2 * 16384
    assert heap["rss_anon"] - start["rss_anon"] > 50 and heap["peak_anon"] - start["peak_anon"] > 50
    assert heap["peak"] >= heap["rss"] >= heap["rss_anon"] + heap["rss_file"] - 1
    assert mapped["rss_file"] - heap["rss_file"] > 50  # the file's pages are resident ...
    assert mapped["peak"] - heap["peak"] > 50  # ... they raise the total peak ...
    assert abs(mapped["peak_anon"] - heap["peak_anon"]) < 10  # ... but not the process's own


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_notebook_memory_tool_reports_each_cell_and_enforces_a_limit(tmp_path):
    from pathlib import Path

    import nbformat

    script = Path(__file__).resolve().parent.parent / "tools" / "notebook_memory.py"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# tiny"),
        nbformat.v4.new_code_cell("block = bytearray(200 * 1024 * 1024)\nblock[::4096] = b'1' * len(block[::4096])"),
        nbformat.v4.new_code_cell("# NBVAL_SKIP\nraise SystemExit('a skipped cell must not run')"),
        nbformat.v4.new_code_cell("print('done')"),
    ])
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)

    def run(*args):
        return subprocess.run([sys.executable, str(script), str(path), *args], capture_output=True, text=True,
                              timeout=300)

    ok = run("--max-anon-mb", "100000", "--write")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = [line for line in ok.stdout.splitlines() if line.startswith("cell")]
    assert [line.split(":")[0] for line in lines] == ["cell  1", "cell  2", "cell  3"] and "not run" in lines[1]
    rss = [float(line.split("rss")[1].split("MB")[0]) for line in lines if "rss" in line]
    assert rss[0] > 200  # the 200 MB block is resident
    assert nbformat.read(path, as_version=4).cells[3].outputs[0]["text"] == "done\n"  # --write kept the outputs
    too_big = run("--max-anon-mb", "150")
    assert too_big.returncode == 1 and "exceeds --max-anon-mb 150" in too_big.stdout
    nb.cells[3].source = "1 / 0"
    nbformat.write(nb, path)
    failed = run()
    assert failed.returncode == 1 and "ERROR ZeroDivisionError" in failed.stdout
