#!/usr/bin/env python3
"""Rewrite every launch link of the course from pyproject.toml: Colab and Binder badges, Colab install lines.

The repository's URL is written in one place, pyproject.toml's `[project.urls] Repository`; the git ref that
the badges open and that Colab installs is the release tag "v" + `[project] version`. This script writes
them into README.md (between the LAUNCH markers), into each notebook's title cell (a badge line under the
title) and into each notebook's setup cell (the one `%pip install` line, run on Colab only):

    python tools/sync_links.py           # rewrite what drifted
    python tools/sync_links.py --check   # list what drifted, change nothing; exit 1 if anything did

Only the title cell's and the setup cell's sources are touched; outputs and metadata stay as they are.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"
README_START, README_END = "<!-- LAUNCH -->", "<!-- /LAUNCH -->"
BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]")
INSTALL_LINE = re.compile(r"^(?P<indent>\s*)%pip install .*git\+")
SETUP_MARK = "from helpers.course import start"
GUARD = 'if "google.colab" in sys.modules:'
# The setup cell after its install line. A failed install stops with one line that points at the README's section on
# what to do (Colab, forks, uploads, a local install), instead of a ModuleNotFoundError that says nothing about them.
README_HELP = "if-the-setup-cell-fails"


@dataclass(frozen=True)
class Launch:
    """Where the course is published: package name, GitHub owner/name, and the git ref users get."""

    package: str
    url: str
    slug: str
    ref: str

    def colab(self, notebook: str) -> str:
        """Colab's URL for one notebook of the repository at the ref."""
        return f"https://colab.research.google.com/github/{self.slug}/blob/{self.ref}/notebooks/{notebook}"

    def binder(self, notebook: str | None = None) -> str:
        """mybinder.org's URL opening JupyterLab on one notebook (or the notebooks folder)."""
        return f"https://mybinder.org/v2/gh/{self.slug}/{self.ref}?urlpath=lab/tree/notebooks/{notebook or ''}"

    def badges(self, notebook: str) -> str:
        """The badge line of a notebook's title cell: Open in Colab, Launch Binder."""
        return (f"[![Open In Colab]({COLAB_BADGE})]({self.colab(notebook)}) "
                f"[![Launch Binder]({BINDER_BADGE})]({self.binder(notebook)})")

    def setup_help(self) -> str:
        """The line of the setup cell that says where to read what to do when the course is not installed."""
        return (f'    raise SystemExit("The course\'s package is not installed; what to do: '
                f'{self.url}/blob/{self.ref}/README.md#{README_HELP}") from None')

    def setup_tail(self) -> list[str]:
        """The setup cell's lines after its install line: import start(), or stop with where to read what to do."""
        return ["try:", f"    {SETUP_MARK}", "except ModuleNotFoundError:  # the course is not installed",
                self.setup_help(), "device = start()"]

    def install(self, indent: str = "    ") -> str:
        """The setup cell's Colab install line: the package at the ref, with Colab's own torch pinned so pip keeps it."""
        return f'{indent}%pip install -q "{self.package} @ git+{self.url}@{self.ref}" "torch=={{torch.__version__}}"'


def read_launch(pyproject: Path = ROOT / "pyproject.toml") -> Launch:
    """Read the package name, version and repository URL from pyproject.toml."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib

        data = tomllib.loads(text)
        project = data["project"]
        name, version, url = project["name"], project["version"], project["urls"]["Repository"]
    except ImportError:  # Python 3.10: read the three keys with patterns
        name, version, url = (_toml_key(text, "name"), _toml_key(text, "version"), _toml_key(text, "Repository"))
    except KeyError as err:
        raise SystemExit(f"{pyproject}: missing {err}; it needs [project] name, version and [project.urls] Repository") from err
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?", url)
    if not match:
        raise SystemExit(f"{pyproject}: Repository = {url!r} is not a https://github.com/OWNER/NAME URL "
                         "(Colab and Binder need one)")
    return Launch(package=name, url=url.rstrip("/"), slug=match.group(1), ref=f"v{version}")


def _toml_key(text: str, key: str) -> str:
    """The first `key = "value"` of a TOML text."""
    match = re.search(rf'^{key}\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise SystemExit(f"pyproject.toml: no {key} = \"...\" found")
    return match.group(1)


def title(nb: dict) -> str:
    """The notebook's title: its first markdown heading, without the #."""
    first = "".join(nb["cells"][0]["source"]).splitlines()[0]
    return first.lstrip("#").strip()


def readme_block(launch: Launch, notebooks: list[Path]) -> str:
    """The generated part of README.md's launch section: the course's Binder badge and one row per notebook."""
    rows = [f"[![Launch Binder]({BINDER_BADGE})]({launch.binder()}) — the whole course in JupyterLab on mybinder.org", "",
            "| notebook | Colab | Binder |", "| --- | --- | --- |"]
    for path in notebooks:
        nb = json.loads(path.read_text(encoding="utf-8"))
        rows.append(f"| {title(nb)} | [![Open In Colab]({COLAB_BADGE})]({launch.colab(path.name)}) "
                    f"| [![Launch Binder]({BINDER_BADGE})]({launch.binder(path.name)}) |")
    return "\n".join([README_START, *rows, README_END])


def _lines(cell: dict) -> list[str]:
    """A cell's source as lines without their newlines."""
    return "".join(cell["source"]).split("\n")


def _set_lines(cell: dict, lines: list[str]) -> None:
    """Store lines as Jupyter does: a list of strings, each but the last ending in a newline."""
    *body, last = lines
    cell["source"] = [line + "\n" for line in body] + ([last] if last else [])


def setup_cell(nb: dict) -> dict | None:
    """The notebook's setup cell: the first code cell, which calls helpers.course.start()."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    return code[0] if code and SETUP_MARK in "".join(code[0]["source"]) else None


def sync_notebook(nb: dict, name: str, launch: Launch) -> list[str]:
    """Bring one notebook's badge line and install line in line with `launch`; return what changed."""
    changes = []
    head = nb["cells"][0]
    if head["cell_type"] != "markdown" or not "".join(head["source"]).startswith("#"):
        return [f"{name}: the first cell is not a markdown title cell"]
    lines = _lines(head)
    badge = launch.badges(name)
    at = [i for i, line in enumerate(lines) if BADGE_LINE.match(line)]
    if not at:
        lines[1:1] = ["", badge]  # under the title line, a paragraph of its own
        changes.append(f"{name}: badge line added")
    elif lines[at[0]] != badge:
        lines[at[0]] = badge
        changes.append(f"{name}: badge line updated")
    _set_lines(head, lines)

    cell = setup_cell(nb)
    if cell is None:
        return [*changes, f"{name}: no setup cell (the first code cell must call {SETUP_MARK})"]
    lines = _lines(cell)
    at = [i for i, line in enumerate(lines) if INSTALL_LINE.match(line)]
    if len(at) != 1:
        return [*changes, f"{name}: the setup cell has {len(at)} '%pip install ... git+' lines, not one; fix it by hand"]
    wanted = [*lines[:at[0]], launch.install(INSTALL_LINE.match(lines[at[0]]).group("indent")), *launch.setup_tail()]
    if lines != wanted:
        changes.append(f"{name}: setup cell updated")
    _set_lines(cell, wanted)
    return changes


def write_notebook(path: Path, nb: dict) -> None:
    """Write a notebook the way Jupyter does (nbformat's JSON layout), so that diffs show only the change."""
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def sync(root: Path = ROOT, write: bool = True) -> list[str]:
    """Bring README.md and every notebook in line with pyproject.toml; return what changed (or would change)."""
    launch = read_launch(root / "pyproject.toml")
    notebooks = sorted((root / "notebooks").glob("[0-9]*.ipynb"))
    changes = []
    for path in notebooks:
        nb = json.loads(path.read_text(encoding="utf-8"))
        done = sync_notebook(nb, path.name, launch)
        changes += done
        if write and any(c.endswith(("added", "updated")) for c in done):
            write_notebook(path, nb)
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = readme_block(launch, notebooks)
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        changes.append(f"README.md: no {README_START} ... {README_END} block; add the two markers where the table goes")
    elif text[start:end + len(README_END)] != block:
        changes.append("README.md: launch table updated")
        if write:
            readme.write_text(text[:start] + block + text[end + len(README_END):], encoding="utf-8")
    return changes


def main(argv: list[str] | None = None) -> int:
    """Command line: rewrite, or with --check only report; exit 1 when something drifted (with --check) or failed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; list the drift and exit 1 if there is any")
    args = p.parse_args(argv)
    changes = sync(write=not args.check)
    for change in changes:
        print(change)
    problems = [c for c in changes if not c.endswith(("added", "updated"))]
    if args.check and changes:
        print("launch links drifted from pyproject.toml: run python tools/sync_links.py", file=sys.stderr)
        return 1
    if not changes:
        print("launch links match pyproject.toml")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
