"""Reading a process's memory from /proc, GPU-only library pages apart (helpers/memory.py)."""

from __future__ import annotations

import sys

import pytest

from helpers.memory import gpu_library_kb, process_memory

SMAPS = """\
55d0c0000000-55d0c0021000 r--p 00000000 08:01 1234   /usr/bin/python3.11
Size:                132 kB
Rss:                 120 kB
7f0000000000-7f0004000000 rw-p 00000000 00:00 0
Size:              65536 kB
Rss:               50000 kB
7f1000000000-7f1003000000 r-xp 00000000 08:01 99     /venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcublasLt.so.13
Size:              49152 kB
Rss:               30000 kB
7f2000000000-7f2001000000 r-xp 00000000 08:01 98     /venv/lib/python3.11/site-packages/torch/lib/libtorch_cuda.so
Rss:                4000 kB
Pss:                4000 kB
7f3000000000-7f3001000000 r-xp 00000000 08:01 97     /venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so
Rss:                9000 kB
7f4000000000-7f4001000000 r-xp 00000000 08:01 96     /venv/lib/python3.11/site-packages/triton/_C/libtriton.so
Rss:                 700 kB
7f5000000000-7f5001000000 r--p 00000000 08:01 95     /home/u/notes/my_cuda_notes.txt
Rss:                  50 kB
"""


def test_gpu_library_pages_are_counted_and_nothing_else():
    # cuBLAS, libtorch_cuda and Triton count; the interpreter, anonymous memory, libtorch_cpu and a file
    # that merely has "cuda" in its name do not.
    assert gpu_library_kb(SMAPS) == 30000 + 4000 + 700
    assert gpu_library_kb("") == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_process_memory_of_this_process():
    before = process_memory()
    block = bytearray(64 * 1024 * 1024)  # 64 MB, written so that the pages are resident
    block[::4096] = b"\1" * len(block[::4096])
    after = process_memory()
    assert after["rss"] - before["rss"] > 50 and after["peak"] >= after["rss"]
    assert 0 <= after["gpu_libraries"] < after["peak"]
    assert after["peak_without_gpu_libraries"] == pytest.approx(after["peak"] - after["gpu_libraries"])
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

    ok = run("--max-rss-mb", "100000", "--write")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = [line for line in ok.stdout.splitlines() if line.startswith("cell")]
    assert [line.split(":")[0] for line in lines] == ["cell  1", "cell  2", "cell  3"] and "not run" in lines[1]
    rss = [float(line.split("rss")[1].split("MB")[0]) for line in lines if "rss" in line]
    assert rss[0] > 200  # the 200 MB block is resident
    assert nbformat.read(path, as_version=4).cells[3].outputs[0]["text"] == "done\n"  # --write kept the outputs
    too_big = run("--max-rss-mb", "150")
    assert too_big.returncode == 1 and "exceeds --max-rss-mb 150" in too_big.stdout
    nb.cells[3].source = "1 / 0"
    nbformat.write(nb, path)
    failed = run()
    assert failed.returncode == 1 and "ERROR ZeroDivisionError" in failed.stdout
