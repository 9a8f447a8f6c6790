"""The course's site: built from the committed notebooks (tools/build_site.py), then read in Chromium (tools/check_site.py).

The unit tests need nothing but the repository. The build tests need the docs extra (Sphinx, myst-nb,
sphinx-book-theme) and the browser check needs Chromium and Playwright: each is skipped where its tools are missing,
unless ALEXNET_REQUIRE_SITE=1 (CI), which makes that a failure. With ALEXNET_SITE_DIR set (CI: .ci/run builds the
site first and says how long it took), the browser check reads that build instead of making its own.
"""

from __future__ import annotations

import copy
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
BUILD = ROOT / "tools" / "build_site.py"
CHECK = ROOT / "tools" / "check_site.py"


def _load(name: str, path: Path):
    """Import a script or the site's extension by its path (tools/ and site/ are no packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


course_site = _load("course_site", ROOT / "site" / "_ext" / "course_site.py")
build_site = _load("build_site", BUILD)
sync_links = _load("site_test_sync_links", ROOT / "tools" / "sync_links.py")


def _flag(name: str) -> bool:
    """True when environment variable `name` is set to 1/true/yes/on (as helpers reads ALEXNET_REQUIRE_BROWSER)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def require(problem: str | None, *flags: str) -> None:
    """Skip the test for a missing tool, or fail it when one of `flags` says the tool must be there (CI)."""
    if problem:
        if any(_flag(f) for f in flags):
            pytest.fail(f"{' or '.join(flags)} is set, but: {problem}")
        pytest.skip(problem)


def notebook(path: Path) -> dict:
    """A committed notebook's JSON."""
    return json.loads(path.read_text(encoding="utf-8"))


def widget_outputs(nb: dict) -> int:
    """How many outputs of a notebook are ipywidgets views."""
    return sum(course_site.WIDGET_VIEW in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


# ---- navigation, derived from the notebooks -------------------------------------------------------------------------

def test_every_chapter_has_its_title_and_what_you_will_learn_read_from_the_notebook():
    assert len(NOTEBOOKS) == 6
    for path in NOTEBOOKS:
        nb = notebook(path)
        chapter = course_site.read_chapter(f"notebooks/{path.stem}", path)
        assert chapter.title == sync_links.title(nb)  # the same title the README's launch table shows
        assert len(chapter.goals) >= 3, path.name
        first_cell = "".join(nb["cells"][0]["source"])
        for goal in chapter.goals:  # each item as written, wrapped lines joined, and nothing after the list
            assert goal.split()[0] in first_cell and not goal.startswith(("Run the cells", "The reusable"))


def test_goals_list_ends_at_the_next_paragraph_and_joins_wrapped_lines():
    nb = {"cells": [{"cell_type": "markdown", "source": "# 09 · A title\n\nIntro.\n\n## What you will learn:\n\n"
                     "1. one thing,\n   wrapped\n2. `two`\n\n- three\n\nRun the cells top to bottom.\n- not a goal\n"}]}
    assert course_site.notebook_title(nb) == "09 · A title"
    assert course_site.learning_goals(nb) == ("one thing, wrapped", "`two`", "three")


def test_a_notebook_without_goals_is_an_error_that_names_it(tmp_path: Path):
    path = tmp_path / "07_x.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "# 07 · X\n\nNo list here."}]}))
    with pytest.raises(ValueError, match=r"07_x\.ipynb: no 'What you will learn' list"):
        course_site.read_chapter("notebooks/07_x", path)
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "No title."}]}))
    with pytest.raises(ValueError, match="no '# title' line"):
        course_site.read_chapter("notebooks/07_x", path)


# ---- what the site changes in a notebook as it reads it (never the file) --------------------------------------------

def test_widget_outputs_become_static_html_and_their_stale_state_is_dropped():
    total = 0
    for path in NOTEBOOKS:
        nb = notebook(path)
        expected = widget_outputs(nb)
        assert course_site.static_widgets(nb) == expected
        assert widget_outputs(nb) == 0 and "widgets" not in nb["metadata"]
        html = [o["data"]["text/html"] for c in nb["cells"] for o in c.get("outputs", [])
                if "course-widget" in str(o.get("data", {}).get("text/html", ""))]
        assert len(html) == expected
        total += expected
    assert total >= 3  # the interact() explorers of 01, 02 and 04 (and any tqdm bar a notebook still holds as a widget)


def test_a_progress_bar_and_an_interact_are_described_and_saved_widget_outputs_kept():
    bar = {"output_type": "display_data", "metadata": {}, "data": {
        course_site.WIDGET_VIEW: {"model_id": "aa"}, "text/plain": ["epoch 3/10:   0%|          | 0/175 [00:00<?, ?batch/s]"]}}
    explorer = {"output_type": "display_data", "metadata": {}, "data": {
        course_site.WIDGET_VIEW: {"model_id": "box"},
        "text/plain": ["interactive(children=(Dropdown(description='class', options=('cat', 'dog'), value='cat'), Output()), "
                       "_dom_classes=('widget-interact',))"]}}
    saved = {"name": "stdout", "output_type": "stream", "text": "cat: 1,000 images\n"}
    state = {"box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_dd", "IPY_MODEL_out"]}},
             "dd": {"model_name": "DropdownModel", "state": {}},
             "out": {"model_name": "OutputModel", "state": {"outputs": [saved]}}}
    nb = {"metadata": {"widgets": {course_site.WIDGET_STATE: {"state": state}}},
          "cells": [{"cell_type": "code", "outputs": [bar]}, {"cell_type": "code", "outputs": [copy.deepcopy(explorer)]}]}
    assert course_site.static_widgets(nb) == 2
    first, second = nb["cells"][0]["outputs"], nb["cells"][1]["outputs"]
    assert len(first) == 1 and "progress bar</span> epoch 3/10 · 175 batch" in first[0]["data"]["text/html"]
    assert "interactive widget</span> with Dropdown <em>class</em>" in second[0]["data"]["text/html"]
    assert "saved with the notebook" in second[0]["data"]["text/html"]
    assert second[1] == saved  # what the Output widget held is shown as an ordinary output


def test_badges_become_text_links_to_the_same_launch_urls():
    launch = sync_links.read_launch(ROOT / "pyproject.toml")
    for path in NOTEBOOKS:
        nb = notebook(path)
        assert course_site.local_badges(nb) == 2, path.name
        title = "".join(nb["cells"][0]["source"])
        assert f"[Open In Colab]({launch.colab(path.name)})" in title
        assert f"[Launch Binder]({launch.binder(path.name)})" in title
        markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        assert not re.search(r"!\[[^\]]*\]\(https?://", markdown), f"{path.name} still shows a remote image"


def test_included_links_are_rebased_on_the_including_page():
    text = ("[01](notebooks/01_data.ipynb) [m](docs/maintaining.md#binder-memory) [a](#measured) "
            "[u](https://example.org/x) [gone](notebooks/99_missing.ipynb) ![i](<results/ablations.json>)")
    rebased = course_site.rebase_links(text, ROOT, ROOT / "site")
    assert rebased == ("[01](../notebooks/01_data.ipynb) [m](../docs/maintaining.md#binder-memory) [a](#measured) "
                       "[u](https://example.org/x) [gone](notebooks/99_missing.ipynb) ![i](<../results/ablations.json>)")


def test_the_site_reads_the_repository_url_from_pyproject_and_never_runs_a_notebook():
    namespace = {"__file__": str(ROOT / "site" / "conf.py")}
    exec(compile((ROOT / "site" / "conf.py").read_text(encoding="utf-8"), "conf.py", "exec"), namespace)
    launch = sync_links.read_launch(ROOT / "pyproject.toml")
    options = namespace["html_theme_options"]
    assert (options["repository_url"], options["repository_branch"]) == (launch.url, launch.ref)
    assert namespace["nb_execution_mode"] == "off"
    for path in (ROOT / "site").rglob("*"):
        if path.is_file() and path.suffix in {".py", ".md", ".html", ".css"}:
            assert launch.slug not in path.read_text(encoding="utf-8"), f"{path} names the repository: use pyproject.toml"


# ---- the scripts' own errors ----------------------------------------------------------------------------------------

def test_check_site_without_a_build_says_what_to_run(tmp_path: Path):
    out = subprocess.run([sys.executable, str(CHECK), "--site", str(tmp_path / "nothing")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "python tools/build_site.py" in out.stderr, out.stderr


def test_build_site_refuses_to_clear_a_folder_that_is_not_a_site(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="holds no earlier site build"):
        build_site.clear(tmp_path)
    assert (tmp_path / "notes.txt").exists()


def test_both_scripts_have_a_help_text():
    for script in (BUILD, CHECK):
        out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "Exit status" in out.stdout, script.name


# ---- the build and the browser check --------------------------------------------------------------------------------

def copy_sources(dest: Path) -> Path:
    """What the build reads, copied to dest: the site's sources and pages, and the files their links may point at."""
    skip = {"data", "runs", "build", "screenshots", "notebooks"}  # data, outputs, and the notebooks copied below
    for folder in ROOT.iterdir():
        if folder.is_dir() and folder.name not in skip and (not folder.name.startswith(".") or folder.name == ".ci") \
                and not folder.name.endswith(".egg-info"):
            shutil.copytree(folder, dest / folder.name, ignore=shutil.ignore_patterns("__pycache__", "*.lock", "checkpoints"))
    (dest / "notebooks").mkdir()
    for path in NOTEBOOKS:  # without their outputs, which this test does not need: a quicker build
        nb = notebook(path)
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"] = []
        (dest / "notebooks" / path.name).write_text(json.dumps(nb), encoding="utf-8")
    for name in ("README.md", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def test_a_broken_link_a_missing_image_or_an_unknown_directive_fails_the_build(tmp_path: Path):
    require(build_site.missing_packages(), "ALEXNET_REQUIRE_SITE")
    src = copy_sources(tmp_path / "src")
    (src / "docs" / "broken.md").write_text(
        "# Broken\n\nA [link](../notebooks/07_missing.ipynb), a [reference](#no-such-heading), "
        "![a picture](missing.png)\n\n```{no-such-directive}\n```\n", encoding="utf-8")
    out = subprocess.run([sys.executable, str(src / "tools" / "build_site.py"), "--out", str(tmp_path / "out" / "site")],
                         capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 1, log
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert all("docs/broken.md" in line for line in warnings), log[-3000:]  # the copy itself builds cleanly
    for expected in ("07_missing.ipynb", "no-such-heading", "missing.png", "no-such-directive"):
        assert any(expected in line for line in warnings), f"the build did not report {expected}:\n{log[-3000:]}"
    assert not (tmp_path / "out" / "site").exists(), "a failed build must leave no site behind"


def import_check_site():
    """tools/check_site.py as a module (it imports lab_check and sync_links as the scripts of tools/ do)."""
    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))
    import check_site

    return check_site


def test_the_browser_check_finds_a_broken_image_link_fragment_console_error_and_remote_request(tmp_path: Path):
    check_site = import_check_site()
    chromium = os.environ.get("ALEXNET_CHROMIUM", check_site.CHROMIUM)
    require(check_site.missing_tools(chromium), "ALEXNET_REQUIRE_SITE", "ALEXNET_REQUIRE_BROWSER")
    site = tmp_path / "site"
    site.mkdir()
    (site / "other.html").write_text("<!DOCTYPE html><title>other</title><h1 id='here'>other</h1>", encoding="utf-8")
    (site / "index.html").write_text(
        "<!DOCTYPE html><title>bad</title><img src='missing.png'><a href='nowhere.html'>x</a> <a href='other.html#here'>ok</a>"
        " <a href='other.html#gone'>y</a><img src='https://example.invalid/remote.png'><script>console.error('boom')</script>",
        encoding="utf-8")
    out = subprocess.run([sys.executable, str(CHECK), "--site", str(site), "--screenshots", str(tmp_path / "shots"),
                          "--chromium", chromium], capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 1, log
    for expected in ("image did not load: http://127.0.0.1", "missing.png", "link to nowhere.html leads nowhere (HTTP 404)",
                     "no element with id 'gone'", "console error: boom", "left the site: https://example.invalid/remote.png",
                     "search for 'CIFAR'", "no chapter page notebooks/04"):
        assert expected in log, f"the check did not report {expected!r}:\n{log[-3000:]}"
    assert "id 'here'" not in log


def built_site(tmp_path: Path) -> Path:
    """The site to check: CI's build (ALEXNET_SITE_DIR), else a fresh one made here."""
    given = os.environ.get("ALEXNET_SITE_DIR")
    if given:
        site = Path(given)
        if not (site / "index.html").is_file():
            pytest.fail(f"ALEXNET_SITE_DIR={given} holds no built site (no index.html): the site build failed or did not "
                        "run (python tools/build_site.py)")
        return site
    require(build_site.missing_packages(), "ALEXNET_REQUIRE_SITE")
    site = tmp_path / "build" / "site"
    out = subprocess.run([sys.executable, str(BUILD), "--out", str(site)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    return site


def test_the_site_builds_and_every_page_passes_the_browser_check(tmp_path: Path, capsys: pytest.CaptureFixture):
    site = built_site(tmp_path)
    check_site = import_check_site()
    chromium = os.environ.get("ALEXNET_CHROMIUM", check_site.CHROMIUM)
    require(check_site.missing_tools(chromium), "ALEXNET_REQUIRE_SITE", "ALEXNET_REQUIRE_BROWSER")

    # Pages in course order, the README by reference: the landing page and the Measured page carry its text.
    landing = (site / "site" / "index.html").read_text(encoding="utf-8")
    at = [landing.find(f'href="../notebooks/{p.stem}.html"') for p in NOTEBOOKS]
    assert -1 not in at and at == sorted(at), "the chapters are not listed in course order"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    title = next(line[2:].strip() for line in readme.splitlines() if line.startswith("# "))
    assert f"<h1>{html.escape(title, quote=False)}" in landing
    measured = readme.split("<!-- MEASURED -->")[1].split("<!-- /MEASURED -->")[0]
    recipe_rows = re.findall(r"^\| `(\w+)` \| (\d+ \([\d, ]+\))", measured, re.MULTILINE)
    assert recipe_rows and all(name in (site / "site" / "measured.html").read_text(encoding="utf-8") for name, _ in recipe_rows)

    report = tmp_path / "report.json"
    shots = tmp_path / "screenshots"
    out = subprocess.run([sys.executable, str(CHECK), "--site", str(site), "--report", str(report), "--screenshots", str(shots),
                          "--chromium", chromium], capture_output=True, text=True, timeout=600)
    with capsys.disabled():
        print("\n" + out.stdout.splitlines()[-1] if out.stdout else "", flush=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    result = json.loads(report.read_text(encoding="utf-8"))
    visited = {p["path"] for p in result["pages"]}
    assert {f"notebooks/{p.stem}.html" for p in NOTEBOOKS} | {"site/index.html", "site/measured.html",
                                                              "docs/maintaining.html", "search.html"} <= visited
    pngs = sum("image/png" in o.get("data", {}) for p in NOTEBOOKS for c in notebook(p)["cells"] for o in c.get("outputs", []))
    assert result["images_loaded"] >= pngs > 0
    assert result["console_errors"] == 0 and result["problems"] == []
    assert result["links_checked"] > 100 and result["fragments_checked"] > 0 and result["search_results"] > 0
    assert all(Path(s).stat().st_size > 10_000 for s in result["screenshots"]) and len(result["screenshots"]) == 2
