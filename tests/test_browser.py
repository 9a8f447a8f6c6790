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

from helpers.course import env_flag

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


def test_nbval_markers_are_read_from_a_tag_or_from_nbvals_comment():
    def cell(source: str, tags: list[str] = (), kind: str = "code") -> dict:
        return {"cell_type": kind, "source": [source], "metadata": {"tags": list(tags)}}

    assert lab_check.nbval_marked(cell("x = 1", ["nbval-skip"]), "skip")
    assert lab_check.nbval_marked(cell("  # NBVAL_SKIP\nx = 1"), "skip")
    assert lab_check.nbval_marked(cell("# NBVAL_CHECK_OUTPUT\nx", []), "check-output")
    assert lab_check.nbval_marked(cell("x", ["nbval-check-output"]), "check-output")
    assert not lab_check.nbval_marked(cell("x", ["nbval-skip"]), "check-output")
    assert not lab_check.nbval_marked(cell("x = 1  # NBVAL_SKIP is a comment at the end, not a marker"), "skip")
    assert not lab_check.nbval_marked(cell("# NBVAL_SKIPPED\nx"), "skip")
    assert not lab_check.nbval_marked(cell("text", ["nbval-skip"], kind="markdown"), "skip")


def test_copies_are_cleared_and_skip_what_nbval_skips(tmp_path: Path):
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in NOTEBOOKS}
    copies, skipped = lab_check.copy_notebooks(NOTEBOOKS, tmp_path / "notebooks")
    for original, copy in zip(NOTEBOOKS, copies):
        src, nb = (json.loads(p.read_text(encoding="utf-8")) for p in (original, copy))
        assert [c["source"] for c in nb["cells"]] == [c["source"] for c in src["cells"]]
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
        raw = [c for c, s in zip(nb["cells"], src["cells"]) if c["cell_type"] == "raw" and s["cell_type"] == "code"]
        marked = sum(lab_check.nbval_marked(c, "skip") for c in src["cells"])
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


class FakePage:
    """Just enough of a Playwright page for start_run_all: clicks are counted, states come from a script."""

    def __init__(self, states_after_click: list[list[dict]]):
        self.script, self.clicks, self.menu_clicks, self.current = states_after_click, 0, 0, [None]

    def locator(self, selector: str, has_text=None):
        page = self

        class Found:
            first = property(lambda found: found)

            def click(self):
                if "runmenu:run-all" in selector:
                    page.menu_clicks += 1
                    page.current = list(page.script[min(page.menu_clicks, len(page.script)) - 1])
                page.clicks += 1

        return Found()

    def evaluate(self, js: str):
        return self.current.pop(0) if len(self.current) > 1 else self.current[0]


def test_run_all_is_clicked_again_only_when_the_first_click_started_nothing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lab_check.time, "sleep", lambda s: None)
    idle = {"cells": 3, "done": 0, "running": 0, "tracebacks": [], "kernel": "idle"}
    queued = dict(idle, running=3, kernel="busy")
    lost_then_started = FakePage([[idle], [queued]])  # the first click lands before the panel is ready
    lab_check.start_run_all(lost_then_started, attempts=3, wait_s=0.05)
    assert lost_then_started.menu_clicks == 2
    started = FakePage([[queued]])
    lab_check.start_run_all(started, attempts=3, wait_s=0.05)
    assert started.menu_clicks == 1  # cells are queued: clicking again would run them twice
    never = FakePage([[idle]])
    with pytest.raises(RuntimeError, match="started nothing in 2 tries"):
        lab_check.start_run_all(never, attempts=2, wait_s=0.05)
    assert never.menu_clicks == 2
