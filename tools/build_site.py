#!/usr/bin/env python3
"""Build the course's site: the six notebooks as a book (Sphinx, myst-nb, sphinx-book-theme), warnings as errors.

The notebooks are rendered with the outputs they were committed with; nothing is executed. The landing page is the
README's introduction, followed by the chapters and their "What you will learn" lists; the README's Measured
section and docs/*.md are pages too (site/conf.py, site/index.md). Every build starts from nothing, so that a
warning of an unchanged page cannot hide behind a cache, and any warning (a broken link or cross-reference, a
missing image, an unknown directive) fails it.

    python tools/build_site.py                  # into build/site/; open build/site/index.html
    python tools/build_site.py --out /tmp/site  # elsewhere

It runs, from the repository's root (`sphinx-build` is the same as `python -m sphinx`):

    python -m sphinx -W --keep-going -q -b html -c site -d build/.site-doctrees . build/site

Exit status: 0 built, 1 the build failed (its warnings are printed, and no site is left behind), 3 the site's packages are missing
(`pip install -e ".[docs]"`; Python 3.11 or newer).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXIT_MISSING = 3
PACKAGES = {"sphinx": "sphinx", "myst_nb": "myst-nb", "sphinx_book_theme": "sphinx-book-theme",
            "sphinx-mathjax-offline": "sphinx-mathjax-offline"}


def missing_packages() -> str | None:
    """Say what the build lacks (Python version, packages of the docs extra), or None."""
    if sys.version_info < (3, 11):
        version = sys.version.split()[0]
        return f"the site's packages (Sphinx 9, myst-nb, sphinx-book-theme) need Python 3.11 or newer, not {version}"
    absent = [name for module, name in PACKAGES.items() if importlib.util.find_spec(module) is None]
    if absent:
        return f"{', '.join(absent)} not installed: pip install -e \".[docs]\""
    return None


def work_folders(out: Path) -> tuple[Path, Path]:
    """The build's own folders beside `out`: Sphinx's doctrees, and myst-nb's extracted outputs (its fixed location)."""
    return out.parent / f".{out.name}-doctrees", out.parent / "jupyter_execute"


def clear(out: Path) -> None:
    """Remove a previous build at `out` and its work folders; refuse to touch a folder that is not one."""
    if out.exists() and any(out.iterdir()) and not (out / ".buildinfo").exists():
        raise SystemExit(f"build_site: {out} exists and holds no earlier site build (no .buildinfo): "
                         "choose an empty or new --out folder")
    for folder in (out, *work_folders(out)):
        shutil.rmtree(folder, ignore_errors=True)


def sphinx_command(out: Path, quiet: bool = True) -> list[str]:
    """The sphinx-build command line, run from the repository's root."""
    doctrees, _ = work_folders(out)
    return [sys.executable, "-m", "sphinx", "-W", "--keep-going", *(["-q"] if quiet else []), "-b", "html",
            "-c", str(ROOT / "site"), "-d", str(doctrees), str(ROOT), str(out)]


def count_pages(out: Path) -> dict[str, int]:
    """How many HTML pages the site has: chapters, other pages of content, and Sphinx's own (search, index, redirect)."""
    pages = [p.relative_to(out).as_posix() for p in out.rglob("*.html") if "_static" not in p.relative_to(out).parts]
    own = {"index.html", "search.html", "genindex.html"}
    chapters = [p for p in pages if p.startswith("notebooks/")]
    return {"pages": len(pages), "chapters": len(chapters), "content": len(pages) - len(own & set(pages))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 built, 1 the build failed, 3 the site's packages are missing.")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="where the site goes (default build/site)")
    p.add_argument("--verbose", action="store_true", help="Sphinx's progress lines too, not only its warnings")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the site; return the exit status."""
    args = parse_args(argv)
    problem = missing_packages()
    if problem:
        print(f"build_site: cannot build: {problem}", file=sys.stderr)
        return EXIT_MISSING
    out = args.out.absolute()
    clear(out)
    cmd = sphinx_command(out, quiet=not args.verbose)
    print("build_site: " + " ".join(cmd[1:]), flush=True)
    started = time.monotonic()
    status = subprocess.run(cmd, cwd=ROOT).returncode
    seconds = time.monotonic() - started
    if status != 0:
        # With --keep-going Sphinx writes every page it could: remove them, so that no half-built site is checked or published.
        clear(out)
        print(f"build_site: FAILED after {seconds:.1f} s (exit status {status}): fix the warnings above "
              f"(the partial output was removed; the sphinx-build line above keeps it)", file=sys.stderr)
        return 1
    n = count_pages(out)
    print(f"build_site: {n['pages']} pages ({n['content']} of content, {n['chapters']} of them chapters) in {seconds:.1f} s: "
          f"{out / 'index.html'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
