"""Reading a process's memory from /proc: its peak, anonymous and file-backed parts (helpers/memory.py)."""

from __future__ import annotations

import mmap
import sys

import pytest

from helpers.memory import process_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_heap_counts_as_anonymous_and_a_mapped_file_does_not(tmp_path):
    before = process_memory()
    block = bytearray(64 * 1024 * 1024)  # 64 MB of heap, written so that its pages are resident
    block[::4096] = b"\1" * len(block[::4096])
    heap = process_memory()
    assert heap["rss_anon"] - before["rss_anon"] > 50 and heap["peak_anon"] - before["peak_anon"] > 50
    assert heap["peak"] >= heap["rss"] >= heap["rss_anon"] + heap["rss_file"] - 1
    path = tmp_path / "file.bin"
    path.write_bytes(b"\2" * (64 * 1024 * 1024))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert sum(mapped[i] for i in range(0, len(mapped), 4096)) == 2 * 16384  # every page touched
        mapped_file = process_memory()
    assert mapped_file["rss_file"] - heap["rss_file"] > 50  # the file's pages are resident ...
    assert mapped_file["peak_anon"] - heap["peak_anon"] < 10  # ... and not counted as the process's own
    del block


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_notebook_memory_tool_reports_each_cell_and_enforces_a_limit(tmp_path):
    import subprocess
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
