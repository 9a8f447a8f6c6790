"""Every notebook in a real JupyterLab, in headless Chromium: no errors, live widgets, plots, memory (tools/lab_check.py).

Skipped when Chromium or Playwright is missing, unless ALEXNET_REQUIRE_BROWSER=1 (CI), which makes that a failure.
ALEXNET_LAB_PYTHON picks the Python whose JupyterLab and kernel run the notebooks (CI: the Binder environment).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.mode import env_flag

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SCRIPT = ROOT / "tools" / "lab_check.py"

# tools/ is a folder of scripts, not a package: import the script by its path.
_spec = importlib.util.spec_from_file_location("lab_check", SCRIPT)
lab_check = importlib.util.module_from_spec(_spec)
sys.modules["lab_check"] = lab_check  # dataclasses look their module up while the class is built
_spec.loader.exec_module(lab_check)


def browser_required() -> bool:
    """True when ALEXNET_REQUIRE_BROWSER says a missing browser must fail the test instead of skipping it."""
    return bool(env_flag("ALEXNET_REQUIRE_BROWSER"))


def test_lab_check_has_a_help_text():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--python" in out.stdout and "Exit status" in out.stdout


def test_copies_are_cleared_and_skip_what_nbval_skips(tmp_path: Path):
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in NOTEBOOKS}
    copies, skipped = lab_check.copy_notebooks(NOTEBOOKS, tmp_path / "notebooks")
    for original, copy in zip(NOTEBOOKS, copies):
        src, nb = (json.loads(p.read_text(encoding="utf-8")) for p in (original, copy))
        assert [c["source"] for c in nb["cells"]] == [c["source"] for c in src["cells"]]
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
        raw = [c for c, s in zip(nb["cells"], src["cells"]) if c["cell_type"] == "raw" and s["cell_type"] == "code"]
        marked = sum(lab_check.nbval_skip(c) for c in src["cells"] if c["cell_type"] == "code")
        assert len(raw) == skipped[original.name] == marked
        assert "widgets" not in nb["metadata"]
    assert sum(skipped.values()) >= 1  # notebook 01's torchvision download
    assert digest == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in NOTEBOOKS}, "the committed notebooks changed"


def test_every_notebook_runs_in_jupyterlab_in_chromium(tmp_path: Path, capsys: pytest.CaptureFixture):
    python = os.environ.get("ALEXNET_LAB_PYTHON") or sys.executable
    chromium = os.environ.get("ALEXNET_CHROMIUM", lab_check.CHROMIUM)
    missing = lab_check.missing_tools(chromium, python)
    if missing:
        if browser_required():
            pytest.fail(f"ALEXNET_REQUIRE_BROWSER is set, but: {missing}")
        pytest.skip(missing)
    report = tmp_path / "report.json"
    cmd = [sys.executable, str(SCRIPT), "--python", python, "--chromium", chromium, "--report", str(report),
           "--max-anon-mb", str(lab_check.BINDER_KERNEL_ANON_MB)]  # every notebook fits a Binder session
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    with capsys.disabled():  # the per-notebook lines (times, widgets, images, memory) belong in the CI log
        print("\n" + "\n".join(line for line in proc.stdout.splitlines() if line.startswith("lab_check:")))
    assert proc.returncode == 0, f"{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
    results = json.loads(report.read_text(encoding="utf-8"))
    assert [r["name"] for r in results] == [p.name for p in NOTEBOOKS]
    for r in results:
        assert r["problems"] == [] and r["code_cells"] > 0 and r["executed"] == r["code_cells"], r
        assert r["screenshots"] and all(Path(s).is_file() for s in r["screenshots"]), r


def test_a_notebook_read_during_a_save_is_read_again(tmp_path: Path):
    # Jupyter's server writes a notebook in place: for a moment the file can be empty (seen in CI).
    import threading

    path = tmp_path / "saving.ipynb"
    path.write_text("", encoding="utf-8")
    later = threading.Timer(1.0, lambda: path.write_text(json.dumps({"cells": []}), encoding="utf-8"))
    later.start()
    try:
        assert lab_check.read_while_saving(path, timeout=20) == {"cells": []}
    finally:
        later.cancel()
    path.write_text('{"cells": [', encoding="utf-8")
    with pytest.raises(RuntimeError, match="still not valid JSON after 1 s"):
        lab_check.read_while_saving(path, timeout=1)
