"""pytest's settings for the whole checkout: notebooks run as a smoke test unless asked otherwise, and need data.

Loaded by `pytest`, `pytest tests`, `pytest --nbval-lax notebooks/` and `pytest notebooks/03_training.ipynb` alike.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# Under pytest the default is reduced mode (few epochs on a data subset); ALEXNET_REDUCED=0 asks for full mode.
# Set when pytest starts, before any notebook kernel: nbval's kernels inherit this process's environment.
os.environ.setdefault("ALEXNET_REDUCED", "1")
# tools/ is a folder of scripts that import each other: the tests import them the same way.
TOOLS = str(Path(__file__).parent / "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)


def pytest_collection_finish(session: pytest.Session) -> None:
    notebooks = sorted({Path(item.path).name for item in session.items if Path(item.path).suffix == ".ipynb"})
    if not notebooks:
        return
    from helpers.course import reduced_mode

    if not reduced_mode():
        print(f"\nFULL MODE (ALEXNET_REDUCED=0): {full_mode_estimate(notebooks)}")
    message = data_problem()
    if message:
        pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)


def full_mode_estimate(notebooks: list[str]) -> str:
    """What a full-mode run of these notebooks costs, from the measured times in results/ (README)."""
    from notebook_memory import notebook_costs

    recorded = {nb: notebook_costs().get(nb[:2], {}).get("full") for nb in notebooks}
    parts = [f"{nb[:2]}: " + ("unknown" if r is None else f"{r['seconds'] / 60:.0f} min") for nb, r in recorded.items()]
    total = sum(r["seconds"] for r in recorded.values() if r)
    where = next((r["device"] for r in recorded.values() if r), "a machine of unknown kind")
    return (f"the notebooks train at full size; measured on {where}: {', '.join(parts)} "
            f"(about {total / 60:.0f} min in all, more where unknown). Ctrl-C stops; ALEXNET_REDUCED=1 is the smoke test.")


def data_problem() -> str | None:
    """None when CIFAR-10 is there (or could be downloaded just now); else one message saying what to do."""
    from helpers.data import load_cifar10
    from helpers.data.cifar10 import CIFAR10Error

    try:
        load_cifar10()
    except CIFAR10Error as err:
        return f"The notebooks need CIFAR-10, which is not available, so none of them was run.\n{err}"
    return None


def checks_outputs(path: Path) -> bool:
    """True for a notebook with a cell whose output nbval compares (tag nbval-check-output, or nbval's comment)."""
    from lab_check import nbval_marked  # the same rule as the browser test and tools/notebook_memory.py

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return any(nbval_marked(c, "check-output") for c in cells)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In CI the browser test runs every notebook in JupyterLab; nbval then runs only notebooks with checked outputs."""
    from helpers.course import env_flag

    browser = any(item.name == "test_every_notebook_runs_in_jupyterlab_in_chromium" for item in items)
    if not (browser and env_flag("ALEXNET_REQUIRE_BROWSER")) or env_flag("ALEXNET_NBVAL_ALL"):
        return
    # Running each notebook a second time here would double the CI's longest part. A notebook with cells whose
    # outputs nbval compares (tag nbval-check-output) still runs here: the browser test executes but does not compare.
    skip = pytest.mark.skip(reason="run in JupyterLab by tests/test_browser.py (CI); ALEXNET_NBVAL_ALL=1 runs it here too")
    checked: dict[Path, bool] = {}  # every cell of a notebook is an item: read each notebook once
    for item in items:
        path = Path(item.path)
        if path.suffix != ".ipynb":
            continue
        if path not in checked:
            checked[path] = checks_outputs(path)
        if not checked[path]:
            item.add_marker(skip)
