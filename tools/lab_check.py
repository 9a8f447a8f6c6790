#!/usr/bin/env python3
"""Run every course notebook in a real JupyterLab, driven by headless Chromium, and check what a user would see.

The script copies notebooks/ to a temporary folder (the committed notebooks are never touched; the copies'
outputs are cleared first, so that everything checked afterwards comes from this run), starts JupyterLab on
127.0.0.1 with a random port and token and a kernel in reduced mode, opens each notebook in Debian's
Chromium through Playwright, runs Run > Run All Cells, waits until every code cell has an execution count
and the kernel is idle, then checks:

- no error output, in the page and in the saved copy's JSON;
- ipywidgets render as live controls (no "Loading widget..." / "Error displaying widget"), and a
  Dropdown of each `interact` really re-runs its function when changed;
- plots render (output <img> elements with a decoded width), in notebooks whose committed copy has plots;
- with --max-anon-mb, the kernel's peak anonymous memory (its heap: what cannot be dropped and re-read
  from disk, helpers.plumbing.memory) stays under the limit;

and saves screenshots of each notebook after the run to screenshots/ (ignored by git).

    python tools/lab_check.py                          # all notebooks, JupyterLab from this Python
    python tools/lab_check.py --python .binder-venv/bin/python 01 04

Exit status: 0 all checks passed, 1 a check failed, 3 the browser tooling (Chromium, Playwright) is missing.
Needs: `apt-get install chromium` and `pip install playwright` (or `pip install -e ".[browser]"`); Playwright
drives the system Chromium, so `playwright install` (a browser download) is never needed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from helpers.plumbing.memory import process_memory

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Playwright adds --headless and a fresh temporary --user-data-dir itself. Without the networking flags
# Chromium keeps trying to reach Google's services, which a closed network refuses many times a second.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
EXIT_MISSING = 3
# mybinder.org gives a session 2 GB (2048 MiB) for everything, no swap. The Jupyter server held 115 MB in our
# runs, and the kernel's file-backed pages in use (library code: reclaimable, but what runs must stay) were
# 113 MB with a CPU-only torch after torch, matplotlib, pandas, seaborn and a few training steps. That
# leaves the kernel's own, anonymous memory about 1800 MB. The measure errs high: in CI it runs on the CUDA
# build of torch, which allocates 147 MB more on import (358 MB anonymous, against 211 MB for torch 2.13.0+cpu,
# measured here).
BINDER_KERNEL_ANON_MB = 1800
VIEWPORT = {"width": 1400, "height": 1800}

# JupyterLab 4 attaches only the cells near the viewport by default (windowing): "none" puts every cell in
# the DOM so the checks see them all. News and update checks are switched off: no network, no toasts.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}

# Runs in the page: the state of the open notebook's cells and outputs.
STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const prompts = cells.map(c => (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '');
  const outputs = [...panel.querySelectorAll('.jp-OutputArea-output')];
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  return {
    cells: cells.length,
    done: prompts.filter(p => /^\\s*\\[\\d+\\]:\\s*$/.test(p)).length,
    running: prompts.filter(p => p.includes('*')).length,
    tracebacks: outputs.filter(o => /Traceback \\(most recent call last\\)/.test(o.textContent)).map(
      o => o.textContent.slice(-600)),
    kernel: indicator ? indicator.getAttribute('data-status') : null,
  };
}"""

# Runs in the page after the run: widgets and images as rendered.
RENDER_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const outputs = [...panel.querySelectorAll('.jp-OutputArea-output')];
  const text = outputs.map(o => o.innerText).join('\\n');  // outputs only: the sources may quote these messages
  const imgs = [...panel.querySelectorAll('.jp-OutputArea-output img')];
  return {
    live_widgets: outputs.filter(o => [...o.children].some(c => c.classList.contains('jupyter-widgets'))).length,
    // Without the jupyterlab_widgets extension JupyterLab shows a widget's text/plain form instead.
    as_text: outputs.filter(
      o => /^\\s*(interactive|HBox|VBox|FloatProgress|IntProgress|Dropdown|IntSlider)\\(/.test(o.textContent)
    ).map(o => o.textContent.slice(0, 120)),
    controls: panel.querySelectorAll(['select', 'input', 'button', '.widget-slider', '.widget-progress'].map(
      c => '.jp-OutputArea-output .jupyter-widgets ' + c).join(', ')).length,
    interacts: panel.querySelectorAll('.widget-interact').length,
    loading: (text.match(/Loading widget\\.\\.\\./g) || []).length,
    widget_errors: (text.match(/Error displaying widget[^\\n]*/g) || []),
    images: imgs.length,
    broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
  };
}"""


@dataclass
class NotebookResult:
    """What one notebook did in the browser, and every check that failed."""

    name: str
    seconds: float = 0.0
    code_cells: int = 0
    executed: int = 0
    skipped: int = 0
    widget_views: int = 0
    live_widgets: int = 0
    controls: int = 0
    interacts_live: int = 0
    images: int = 0
    peak_rss_mb: float | None = None
    peak_anon_mb: float | None = None  # of the peak: anonymous memory (heap, tensors), the rest is mapped files
    screenshots: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def missing_tools(chromium: str = CHROMIUM, python: str | None = None) -> str | None:
    """Say what is missing to run the browser check (Chromium, Playwright, JupyterLab in `python`), or None."""
    missing = []
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        missing.append(f"Chromium not found at {chromium} (Debian: apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright for Python is not installed (pip install playwright, or pip install -e '.[browser]')")
    if python is not None:
        probe = subprocess.run([python, "-c", "import jupyterlab, ipykernel, jupyterlab_widgets"], capture_output=True, text=True)
        if probe.returncode != 0:
            missing.append(f"{python} cannot import jupyterlab, ipykernel and jupyterlab_widgets: {probe.stderr.strip()[-300:]}")
    return "; ".join(missing) or None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nbval_marked(cell: dict, marker: str) -> bool:
    """True for a code cell with an nbval marker ("skip", "check-output"): its tag or nbval's `# NBVAL_...` comment."""
    if cell["cell_type"] != "code":
        return False
    comment = "NBVAL_" + marker.upper().replace("-", "_")
    source = "".join(cell["source"])
    return (f"nbval-{marker}" in cell.get("metadata", {}).get("tags", [])
            or bool(re.search(rf"^\s*#\s*{comment}\b", source, re.MULTILINE)))


def copy_notebooks(names: list[Path], dest: Path, run_skipped: bool = False) -> tuple[list[Path], dict[str, int]]:
    """Copy notebooks to dest with outputs cleared (every output checked later comes from this run).

    Cells that nbval skips become raw cells in the copy, unless `run_skipped`: Run All passes over them, as
    nbval does (they need the network). Returns the copies and how many cells each skips.
    """
    dest.mkdir(parents=True)
    copies, skipped = [], {}
    for src in names:
        nb = json.loads(src.read_text(encoding="utf-8"))
        skipped[src.name] = 0
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            if nbval_marked(cell, "skip") and not run_skipped:
                cell["cell_type"] = "raw"
                del cell["outputs"], cell["execution_count"]
                skipped[src.name] += 1
            else:
                cell["outputs"], cell["execution_count"] = [], None
        nb["metadata"].pop("widgets", None)
        copy = dest / src.name
        copy.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        copies.append(copy)
    return copies, skipped


def write_lab_settings(folder: Path) -> None:
    """User settings for the temporary JupyterLab (JUPYTERLAB_SETTINGS_DIR)."""
    for rel, values in LAB_SETTINGS.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


def start_lab(python: str, work: Path, port: int, token: str, log: Path, timeout: float = 180) -> subprocess.Popen:
    """Start JupyterLab from `python` on 127.0.0.1:port serving `work`, kernels in reduced mode; wait until it answers."""
    env = dict(os.environ)
    # Everything JupyterLab reads or writes lives in the temporary folder: no user config, kernelspecs or
    # workspaces of this machine leak in, and the kernel is the server's own Python.
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):
        env[var] = str(work / sub)
    env["ALEXNET_REDUCED"] = "1"
    env.pop("JUPYTER_PATH", None)
    write_lab_settings(work / "settings")
    cmd = [python, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--ServerApp.open_browser=False", "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root; Jupyter refuses that without being told
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with status {proc.returncode}; its log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s; its log:\n{log.read_text()[-3000:]}")


def api(port: int, token: str, path: str, method: str = "GET") -> object:
    """Call the Jupyter server's REST API; returns the decoded JSON (None for an empty answer)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else None


def kernel_memory(runtime_dir: Path) -> dict[str, float] | None:
    """Memory (helpers.plumbing.memory.process_memory, MB) of the kernel started by our server, read from /proc (Linux)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "ipykernel" in cmdline and str(runtime_dir) in cmdline:
                return process_memory(proc.name)
        except OSError:  # a process that ended while we looked
            continue
    return None


def read_while_saving(path: Path, timeout: float = 30) -> dict:
    """The notebook JSON at `path`, waiting out a save in progress.

    Jupyter's server writes a notebook in place (keeping a backup copy aside), so a reader can find the
    file empty or cut short for a moment while JupyterLab saves it (seen in CI).
    """
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(encoding="utf-8")
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} is still not valid JSON after {timeout:.0f} s ({len(text)} characters): "
                                   f"{err}") from err
            time.sleep(0.5)


def saved_notebook_problems(path: Path) -> tuple[list[str], dict]:
    """Errors and unexecuted cells in the saved copy, and counts of its image and widget outputs."""
    nb = read_while_saving(path)
    problems, counts = [], {"images": 0, "widgets": 0}
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {i} has no execution count in the saved notebook")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            data = out.get("data", {})
            counts["images"] += "image/png" in data or "image/jpeg" in data or "image/svg+xml" in data
            counts["widgets"] += "application/vnd.jupyter.widget-view+json" in data
    return problems, counts


def committed_expectations(path: Path) -> dict:
    """What the committed notebook shows: plots, widgets, interact controls; the run must show them too."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return {
        "images": any("image/png" in o.get("data", {}) for o in outputs),
        "widgets": any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs),
        # ipywidgets marks the box of interact() with this class; the saved widget state keeps it.
        "interact": sum("widget-interact" in m.get("state", {}).get("_dom_classes", []) for m in state.values()),
    }


def click_menu(page, menu: str, command: str) -> None:
    """Open a main-menu entry (Run, File, ...) and click the item that runs `command`."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{menu}$")).first.click()
    page.locator(f'.lm-Menu-item[data-command="{command}"]').first.click()


def start_run_all(page, attempts: int = 3, wait_s: float = 60) -> None:
    """Click Run > Run All Cells until a cell is queued, running or done: on a loaded machine a first click can land
    before the notebook's panel is ready and start nothing. A click that queued cells is never repeated."""
    state = None
    for _ in range(attempts):
        page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.click()  # Run All acts on the focused notebook
        click_menu(page, "Run", "runmenu:run-all")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            state = page.evaluate(STATE_JS)
            if state and (state["done"] or state["running"] or state["tracebacks"]):
                return
            time.sleep(1)
    raise RuntimeError(f"Run All Cells started nothing in {attempts} tries of {wait_s:.0f} s; state: {state}")


def wait_for_run(page, timeout: float) -> dict:
    """Poll the notebook until every code cell has an execution count and the kernel is idle, or an error stops it."""
    started = time.monotonic()
    deadline, state, idle_since = started + timeout, None, None
    while time.monotonic() < deadline:
        state = page.evaluate(STATE_JS)  # start_run_all saw the run start: no "started nothing" case here
        if state and state["running"] == 0 and state["kernel"] in ("idle", None):
            if state["tracebacks"] or state["done"] == state["cells"]:
                # Idle twice in a row a second apart: not a gap between two queued cells.
                if idle_since is not None and time.monotonic() - idle_since >= 1:
                    return state
                idle_since = idle_since or time.monotonic()
        else:
            idle_since = None
        time.sleep(1)
    raise TimeoutError(f"the notebook did not finish within {timeout:.0f} s; last state: {state}")


def check_interacts(page, result: NotebookResult) -> None:
    """Move the first control of every `interact` (a Dropdown, else a slider) and wait for its output to change.

    The output changes only when the kernel re-runs the function, so this shows the controls are live.
    """
    interacts = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-interact")
    for k in range(interacts.count()):
        box = interacts.nth(k)
        out = box.locator(".widget-output").first
        before = out.inner_html()
        select, handle = box.locator("select").first, box.locator(".noUi-handle").first
        if select.count():
            options = [o.get_attribute("value") for o in select.locator("option").all()]
            target = next(o for o in options if o != select.input_value())
            select.scroll_into_view_if_needed()
            select.select_option(target)
            moved = f"dropdown set to {target!r}"
        elif handle.count():
            handle.scroll_into_view_if_needed()
            handle.focus()
            page.keyboard.press("ArrowRight")  # noUiSlider, behind ipywidgets 8's sliders, takes the arrow keys
            moved = "slider moved one step"
        else:
            result.problems.append(f"interact {k}: no dropdown or slider found to move")
            continue
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and out.inner_html() == before:
            time.sleep(0.5)
        if out.inner_html() == before:
            result.problems.append(f"interact {k}: {moved}, but its output did not change within 60 s")
        else:
            result.interacts_live += 1


def screenshots(page, stem: str, folder: Path) -> list[str]:
    """Scroll the notebook from its first cell to its last, one viewport-sized screenshot per step."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{stem}-*.png"):
        old.unlink()
    # The notebook scrolls inside its own panel, not the page; its content ends at the last cell's bottom
    # (JupyterLab adds empty space below that, which the screenshots skip).
    scroller = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer"
    end, view = page.evaluate(f"""() => {{
        const s = document.querySelector('{scroller}');
        if (!s) return [0, 0];
        const cells = s.querySelectorAll('.jp-Cell');
        const last = cells[cells.length - 1];
        const bottom = last ? last.getBoundingClientRect().bottom - s.getBoundingClientRect().top + s.scrollTop : s.scrollHeight;
        return [bottom, s.clientHeight];
    }}""")
    paths, top, k = [], 0, 1
    while True:
        page.evaluate(f"() => {{ const s = document.querySelector('{scroller}'); if (s) s.scrollTop = {top}; }}")
        page.wait_for_timeout(400)
        path = folder / f"{stem}-{k:02d}.png"
        page.screenshot(path=str(path))
        paths.append(str(path))
        top, k = top + max(view - 60, 200), k + 1  # 60 px overlap: no line falls between two shots
        if view == 0 or top >= end - 60:
            return paths


def run_notebook(page, base: str, token: str, copy: Path, committed: Path, runtime_dir: Path, port: int,
                 shots: Path, timeout: float, max_anon_mb: float | None = None) -> NotebookResult:
    """Open one notebook in JupyterLab, run all cells, check errors, widgets and plots, take screenshots."""
    result = NotebookResult(copy.name)
    started = time.monotonic()
    # A workspace of its own per notebook: JupyterLab opens this notebook alone, not the previous one too.
    page.goto(f"{base}/lab/workspaces/check-{copy.stem}/tree/notebooks/{copy.name}?token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function("() => { const i = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');"
                           " return i && i.getAttribute('data-status') === 'idle'; }", timeout=120_000)
    # Collapse the left side bar: the screenshots get the full width for the notebook.
    current_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if current_tab.count():
        current_tab.first.click()
    # start_run_all gives the notebook the focus back first: the side bar just had it.
    start_run_all(page)
    state = wait_for_run(page, timeout)
    result.code_cells, result.executed = state["cells"], state["done"]
    result.problems += [f"error output in the page: ...{t.strip()[-300:]}" for t in state["tracebacks"]]
    page.wait_for_timeout(1500)  # the last outputs' images and widget views finish rendering
    check_interacts(page, result)
    render = page.evaluate(RENDER_JS)
    result.live_widgets = render["live_widgets"]
    result.controls, result.images = render["controls"], render["images"]
    expect = committed_expectations(committed)
    if render["loading"]:
        result.problems.append(f'{render["loading"]} widget(s) still show "Loading widget..."')
    result.problems += [f"widget error: {e}" for e in render["widget_errors"]]
    result.problems += [f"a widget rendered as plain text (is jupyterlab_widgets installed?): {t}" for t in render["as_text"]]
    if expect["widgets"] and render["live_widgets"] == 0:
        result.problems.append("the committed notebook shows widgets, this run rendered none")
    if render["interacts"] < expect["interact"]:
        result.problems.append(f"the committed notebook shows {expect['interact']} interact control(s), "
                               f"this run rendered {render['interacts']}")
    if render["broken_images"]:
        result.problems.append(f"{render['broken_images']} output image(s) did not decode")
    if expect["images"] and render["images"] == 0:
        result.problems.append("the committed notebook has plots, this run rendered none")

    click_menu(page, "File", "docmanager:save")
    deadline = time.monotonic() + 60
    saved_problems, counts = saved_notebook_problems(copy)
    while time.monotonic() < deadline and any("no execution count" in p for p in saved_problems):
        time.sleep(1)
        saved_problems, counts = saved_notebook_problems(copy)
    result.problems += [f"saved notebook: {p}" for p in saved_problems]
    result.widget_views = counts["widgets"]
    if expect["images"] and counts["images"] == 0:
        result.problems.append("the saved notebook has no image output")

    memory = kernel_memory(runtime_dir)
    if memory:
        result.peak_rss_mb, result.peak_anon_mb = round(memory["peak"]), round(memory["peak_anon"])
        if max_anon_mb and memory["peak_anon"] > max_anon_mb:
            result.problems.append(f"the kernel's peak anonymous memory, {memory['peak_anon']:.0f} MB, exceeds "
                                   f"--max-anon-mb {max_anon_mb:.0f}: it would not fit a Binder session")
    elif max_anon_mb:
        result.problems.append("--max-anon-mb was given but the kernel's memory could not be read from /proc")
    result.screenshots = screenshots(page, copy.stem, shots)
    for session in api(port, token, "/api/sessions"):
        api(port, token, f"/api/sessions/{session['id']}", method="DELETE")
    result.seconds = round(time.monotonic() - started, 1)
    return result


def select_notebooks(folder: Path, wanted: list[str]) -> list[Path]:
    """The notebooks of `folder` whose names start with one of `wanted` (all when empty), in order."""
    all_nbs = sorted(folder.glob("[0-9]*.ipynb"))
    chosen = [p for p in all_nbs if not wanted or any(p.name.startswith(w) for w in wanted)]
    if not chosen:
        raise SystemExit(f"no notebook in {folder} matches {wanted}")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 passed, 1 a check failed, 3 Chromium or Playwright missing.")
    p.add_argument("notebooks", nargs="*", help="notebook name prefixes such as 01 03 (default: all)")
    p.add_argument("--python", default=os.environ.get("ALEXNET_LAB_PYTHON") or sys.executable,
                   help="the Python whose JupyterLab and kernel run the notebooks, e.g. .binder-venv/bin/python "
                        "(default: $ALEXNET_LAB_PYTHON, else this Python)")
    p.add_argument("--source", type=Path, default=ROOT / "notebooks", help="folder of the committed notebooks")
    p.add_argument("--screenshots", type=Path, default=ROOT / "screenshots", help="where the screenshots go")
    p.add_argument("--report", type=Path, help="also write the results as JSON here")
    p.add_argument("--chromium", default=os.environ.get("ALEXNET_CHROMIUM", CHROMIUM), help="Chromium executable")
    p.add_argument("--timeout", type=float, default=900, help="seconds one notebook may take to run (default 900)")
    p.add_argument("--max-anon-mb", type=float, default=None,
                   help="fail a notebook whose kernel's peak anonymous memory (heap and tensors, not mapped library "
                        f"files) exceeds this many MB; the browser test uses {BINDER_KERNEL_ANON_MB} for Binder's 2 GB")
    p.add_argument("--run-skipped", action="store_true",
                   help="also run the cells nbval skips (# NBVAL_SKIP: they need the network); by default the copy skips them")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (copies, JupyterLab log)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit status."""
    args = parse_args(argv)
    python = shutil.which(args.python) or args.python
    python = str(Path(python).absolute())  # not resolved: a venv's python is a symlink that must stay one
    problem = missing_tools(args.chromium, python)
    if problem:
        print(f"lab_check: cannot run: {problem}", file=sys.stderr)
        return EXIT_MISSING
    from playwright.sync_api import sync_playwright

    committed = select_notebooks(args.source, args.notebooks)
    work = Path(tempfile.mkdtemp(prefix="lab-check-"))
    copies, skipped = copy_notebooks(committed, work / "notebooks", args.run_skipped)
    port, token = free_port(), secrets.token_hex(16)
    version = subprocess.run([python, "-c", "import jupyterlab, sys; print(jupyterlab.__version__, sys.version.split()[0])"],
                             capture_output=True, text=True).stdout.strip()
    print(f"lab_check: JupyterLab {version} from {python}, notebooks copied to {work}", flush=True)
    t0 = time.monotonic()
    lab = start_lab(python, work, port, token, work / "jupyterlab.log")
    print(f"lab_check: JupyterLab answered after {time.monotonic() - t0:.1f} s on 127.0.0.1:{port}", flush=True)
    results: list[NotebookResult] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
            print(f"lab_check: Chromium {browser.version}", flush=True)
            page = browser.new_page(viewport=VIEWPORT)
            for copy, original in zip(copies, committed):
                try:
                    result = run_notebook(page, f"http://127.0.0.1:{port}", token, copy, original, work / "runtime", port,
                                          args.screenshots, args.timeout, args.max_anon_mb)
                except Exception as err:  # one broken notebook must not hide the others' results
                    result = NotebookResult(copy.name, problems=[f"{type(err).__name__}: {err}"])
                    shot = args.screenshots / f"{copy.stem}-failure.png"
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shot))
                    result.screenshots.append(str(shot))
                result.skipped = skipped[copy.name]
                results.append(result)
                print(f"lab_check: {result.name}: {result.seconds} s, {result.executed}/{result.code_cells} cells run "
                      f"({result.skipped} NBVAL_SKIP cells not), "
                      f"{result.live_widgets} live widget output(s) of {result.widget_views} saved ({result.controls} controls, "
                      f"{result.interacts_live} interact answered), {result.images} images, kernel peak RSS "
                      f"{result.peak_rss_mb or 0:.0f} MB ({result.peak_anon_mb or 0:.0f} MB of it anonymous), "
                      f"{len(result.screenshots)} screenshots: "
                      f"{'OK' if not result.problems else 'FAILED'}", flush=True)
                for p in result.problems:
                    print(f"    - {p}", flush=True)
            server = process_memory(lab.pid)
            print(f"lab_check: the Jupyter server itself: {server['rss']:.0f} MB resident ({server['rss_anon']:.0f} MB "
                  f"anonymous), peak {server['peak']:.0f} MB", flush=True)
            browser.close()
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.report:
        args.report.write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")
    failed = [r.name for r in results if r.problems]
    print(f"lab_check: {len(results) - len(failed)}/{len(results)} notebooks passed in {time.monotonic() - t0:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
