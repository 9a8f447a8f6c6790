"""Sphinx configuration of the course's site: the six notebooks as a book, built from their committed outputs.

Build it with `python tools/build_site.py` (or the sphinx-build line that prints). The source folder is the repository
itself, so every path in the notebooks, README.md and docs/ is the path on the site; `include_patterns` picks the
pages: site/*.md, notebooks/NN_*.ipynb and docs/*.md. The notebooks are never executed (nb_execution_mode "off").
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))

# The launch buttons come from the one place that names the repository, pyproject.toml, read by the same code that
# writes the notebooks' Colab and Binder badges (tools/sync_links.py is a script, not a package: load it by path).
_spec = importlib.util.spec_from_file_location("site_sync_links", ROOT / "tools" / "sync_links.py")
sync_links = sys.modules["site_sync_links"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(sync_links)
launch = sync_links.read_launch(ROOT / "pyproject.toml")


def _readme_title() -> str:
    """README.md's first heading, the course's name."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise RuntimeError("README.md has no '# title' line; the site takes its name from it")


project = html_title = _readme_title()
root_doc = "site/index"
# README.md is no page of its own: its introduction is the landing page and its Measured section a page, both
# included by reference (site/index.md, site/measured.md). Links to README.md (docs/maintaining.md) go to the landing page.
course_published_as = {"README": root_doc}
extensions = ["myst_nb", "course_site"]

# Sphinx walks the source folder before it filters: leave out every top-level folder that holds no page (virtual
# environments, data, runs and build outputs included), whatever other folders appear there later.
PAGES = ("site", "notebooks", "docs")
include_patterns = ["site/*.md", "notebooks/[0-9]*.ipynb", "docs/*.md"]
exclude_patterns = sorted(p.name for p in ROOT.iterdir() if p.name not in PAGES) + ["site/_*"]

# The committed outputs are the record: never run a notebook to build the site.
nb_execution_mode = "off"
nb_custom_formats = {".ipynb": "course_site.read_notebook"}
nb_ipywidgets_js = {}  # widget outputs are static HTML (course_site): nothing to load from a CDN
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3  # GitHub's heading anchors (docs/maintaining.md#binder-memory) resolve on the site too

# MathJax from the sphinx-mathjax-offline package, copied next to the pages by course_site: no CDN.
mathjax_path = "mathjax/tex-chtml-full.js"

html_theme = "sphinx_book_theme"
# Without a default the theme's first page of a visit logs "Got invalid theme mode" as a console error.
html_context = {"default_mode": "auto"}
html_static_path = ["_static"]
html_css_files = ["course.css"]
templates_path = ["_templates"]
html_show_sourcelink = False
html_copy_source = True  # the download button serves each notebook from _sources/
html_last_updated_fmt = None
# The theme's sidebar, then the open chapter's "What you will learn" list (course_site reads it from the notebook).
html_sidebars = {"**": ["navbar-logo.html", "icon-links.html", "search-button-field.html", "sbt-sidebar-nav.html",
                        "chapter-goals.html"]}
html_theme_options = {
    "repository_url": launch.url,
    "repository_branch": launch.ref,
    "path_to_docs": "",
    "use_repository_button": True,
    "use_download_button": True,
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "navbar_persistent": [],  # the sidebar has the search field: no second one in a header bar of its own
    "launch_buttons": {
        "colab_url": "https://colab.research.google.com",
        "binderhub_url": "https://mybinder.org",
        "notebook_interface": "jupyterlab",
    },
}
