"""The course's own commands as users type them: plain `pytest` runs the notebooks as a smoke test (conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# A notebook that only reports the mode its kernel sees, placed inside the checkout (runs/ is ignored by git) so
# that pytest loads the checkout's conftest.py for it, as it does for notebooks/.
PROBE = {"cells": [{"cell_type": "code", "execution_count": None, "id": "probe", "metadata": {}, "outputs": [],
                    "source": ["import os\n", "from helpers.course import reduced_mode\n",
                               "assert reduced_mode() == (os.environ['EXPECT'] == 'reduced'), os.environ['EXPECT']"]}],
         "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
         "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def probe_notebook():
    folder = REPO / "runs" / "test-commands"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"probe_{os.getpid()}.ipynb"
    path.write_text(json.dumps(PROBE))
    yield path
    path.unlink(missing_ok=True)


def run_pytest(notebook: Path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "ALEXNET_REDUCED", "PYTEST_ADDOPTS")}
    return subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
                           "-s", "-q", str(notebook)], cwd=REPO, env={**clean, **env}, capture_output=True, text=True,
                          timeout=300)


def test_plain_pytest_runs_notebooks_reduced_and_full_mode_is_one_switch_away(probe_notebook):
    assert os.environ.get("CIFAR10_ROOT") or (REPO / "data" / "cifar-10-batches-py").is_dir() or pytest.skip("no data")
    reduced = run_pytest(probe_notebook, EXPECT="reduced")  # the kernel asserts the mode it sees
    assert reduced.returncode == 0, reduced.stdout + reduced.stderr
    assert run_pytest(probe_notebook, EXPECT="full").returncode == 1  # the probe can fail
    full = run_pytest(probe_notebook, ALEXNET_REDUCED="0", EXPECT="full")
    assert full.returncode == 0, full.stdout + full.stderr
    assert "FULL MODE (ALEXNET_REDUCED=0): the notebooks train at full size" in full.stdout


def test_missing_data_stops_the_session_once_with_what_to_do(probe_notebook, tmp_path):
    incomplete = tmp_path / "data" / "cifar-10-batches-py"
    incomplete.mkdir(parents=True)
    (incomplete / "data_batch_1").write_bytes(b"x")
    done = run_pytest(probe_notebook, CIFAR10_ROOT=str(tmp_path / "data"), EXPECT="reduced")
    out = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert out.count("The notebooks need CIFAR-10") == 1 and "is incomplete" in out and "CIFAR10_ROOT" in out
    assert "passed" not in out  # not one notebook ran


def test_in_ci_the_browser_test_runs_the_notebooks_and_nbval_only_those_with_checked_outputs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("root_conftest", REPO / "conftest.py")
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    plain, checked, tagged = tmp_path / "plain.ipynb", tmp_path / "checked.ipynb", tmp_path / "tagged.ipynb"
    plain.write_text(json.dumps(PROBE))
    checked.write_text(json.dumps(PROBE).replace("import os", "# NBVAL_CHECK_OUTPUT\\nimport os"))
    with_tag = json.loads(json.dumps(PROBE))
    with_tag["cells"][0]["metadata"]["tags"] = ["nbval-check-output"]  # the form the course's notebooks use
    tagged.write_text(json.dumps(with_tag))

    def collect(**env) -> list[bool]:
        for name in ("ALEXNET_REQUIRE_BROWSER", "ALEXNET_NBVAL_ALL"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        items = [SimpleNamespace(name=n, path=p, marks=[]) for n, p in (
            ("test_every_notebook_runs_in_jupyterlab_in_chromium", REPO / "tests" / "test_browser.py"),
            ("Cell 0", plain), ("Cell 0", checked), ("Cell 0", tagged))]
        for item in items:
            item.add_marker = item.marks.append
        root.pytest_collection_modifyitems(None, items)
        return [bool(item.marks) for item in items]

    assert collect() == [False, False, False, False]  # a machine without the browser test's requirement runs everything
    assert collect(ALEXNET_REQUIRE_BROWSER="1") == [False, True, False, False]  # CI: the browser test runs them
    assert collect(ALEXNET_REQUIRE_BROWSER="1", ALEXNET_NBVAL_ALL="1") == [False, False, False, False]
