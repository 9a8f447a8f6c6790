#!/usr/bin/env python3
"""Open the built course site in headless Chromium, visit every page and check what a reader would see.

The site (`python tools/build_site.py`, into build/site/) is served on 127.0.0.1 with a random port. Every HTML page
of it is opened in Debian's Chromium through Playwright, and the check fails on:

- any console error or uncaught page error, any failed request or HTTP error, and any request that leaves
  127.0.0.1 (the site must load nothing from the network: it is read offline, and CI has no network);
- any <img> that does not load (complete, with a decoded width), and any MathJax error in a formula;
- any internal link that leads nowhere: a file that is not there, or a #fragment that no element of the target
  page has (external links are counted, not followed);
- a chapter page without its launch buttons (Colab and Binder, the URLs tools/sync_links.py writes from
  pyproject.toml), its notebook download link or its "What you will learn" list in the sidebar;
- a search for "CIFAR" that finds no page; the top-level redirect not reaching the landing page.

It saves screenshots of one chapter page and of the landing page to screenshots/ (ignored by git).

    python tools/check_site.py                       # build/site, screenshot of chapter 04
    python tools/check_site.py --site /tmp/site --chapter 02 --report report.json

Exit status: 0 all checks passed, 1 a check failed, 2 no built site, 3 the browser tooling (Chromium, Playwright)
is missing. Needs `apt-get install chromium` and `pip install -e ".[browser]"`; Playwright drives the system
Chromium, so `playwright install` (a browser download) is never needed.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab_check import CHROMIUM, CHROMIUM_FLAGS, EXIT_MISSING, missing_tools
from sync_links import read_launch

ROOT = Path(__file__).resolve().parent.parent
EXIT_NO_SITE = 2
VIEWPORT = {"width": 1400, "height": 1100}
SEARCH_WORD = "CIFAR"
BUILD_HINT = "build it first: python tools/build_site.py (needs pip install -e '.[docs]')"

# Runs in the page once it has loaded: every image made to load now (none stays lazy), then what the page holds.
PAGE_JS = """async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 10000); })));
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id)
    .concat([...document.querySelectorAll('a[name]')].map(e => e.getAttribute('name')));
  return {
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.currentSrc || i.src),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: ids,
    goals: document.querySelectorAll('.course-goals li').length,
    title: document.title,
  };
}"""


# Runs in the page after PAGE_JS: waits for MathJax (where the page has formulas) and the fonts it loads.
MATH_JS = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await document.fonts.ready;
  return {errors: document.querySelectorAll('mjx-merror, .MathJax_Error').length,
          typeset: document.querySelectorAll('mjx-container').length};
}"""


@dataclass
class PageResult:
    """What one page showed in the browser, and every check of it that failed."""

    path: str
    title: str = ""
    seconds: float = 0.0
    images: int = 0
    links: int = 0
    formulas: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class SiteResult:
    """The whole check: pages, links, images, search, screenshots and every problem found."""

    site: str
    pages: list[PageResult] = field(default_factory=list)
    links_checked: int = 0
    link_targets: int = 0
    fragments_checked: int = 0
    external_links: int = 0
    images_loaded: int = 0
    formulas: int = 0
    console_errors: int = 0
    search_results: int = 0
    screenshots: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def all_problems(self) -> list[str]:
        """Site-wide problems and each page's, one list."""
        return self.problems + [f"{p.path}: {m}" for p in self.pages for m in p.problems]


def site_pages(site: Path) -> list[str]:
    """Every HTML page of the built site, as URL paths, the top-level index first (theme templates left out)."""
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if "_static" not in p.parts)
    return sorted(pages, key=lambda p: p != "index.html")


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve `site` on 127.0.0.1 at a free port in a background thread; return the server and its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # noqa: D102 - one line per request would bury the report
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            # The browser drops requests it no longer needs when it leaves a page: not a problem of the site.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def status_of(url: str) -> int:
    """HTTP status of a GET of `url` (a file of the local server)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def redirect_target(html_file: Path) -> str | None:
    """The URL a page's <meta http-equiv="refresh"> sends the browser to, if it has one."""
    text = html_file.read_text(encoding="utf-8", errors="replace")
    marker = 'http-equiv="refresh" content="0; url='
    at = text.find(marker)
    return text[at + len(marker):text.index('"', at + len(marker))] if at >= 0 else None


WATCHED = {"console": "console error", "pageerror": "page error", "failed": "request failed", "external": "left the site"}


def watched(watch: dict[str, list[str]], seen: dict[str, int]) -> list[str]:
    """The browser's errors that came after `seen` (counts per kind), as problems."""
    return [f"{WATCHED[key]}: {m}" for key in WATCHED for m in watch[key][seen[key]:]]


def chapter_checks(path: str, info: dict, launch) -> list[str]:
    """Problems of a chapter page: launch buttons, download link, "What you will learn" in the sidebar."""
    name = Path(path).with_suffix(".ipynb").name
    links, problems = set(info["links"]), []
    for what, url in (("Colab", launch.colab(name)), ("Binder", launch.binder(name))):
        if url not in links:
            problems.append(f"no launch link to {what} ({url})")
    if not any(urllib.parse.urlparse(u).path.endswith(f"_sources/notebooks/{name}") for u in links):
        problems.append(f"no download link to the notebook (_sources/notebooks/{name})")
    if info["goals"] == 0:
        problems.append("the sidebar shows no 'What you will learn' list")
    return problems


def visit(page, base: str, site: Path, path: str, launch, watch: dict) -> tuple[PageResult, dict]:
    """Open one page, wait for its images, formulas and fonts, and collect what it holds and the errors it raised."""
    result = PageResult(path)
    started = time.monotonic()
    seen = {key: len(found) for key, found in watch.items()}  # what came before belongs to earlier pages
    target = redirect_target(site / path)
    page.goto(base + path, wait_until="load")
    if target:
        page.wait_for_url(urllib.parse.urljoin(base + path, target), timeout=15000)
        page.wait_for_load_state("load")
    info = page.evaluate(PAGE_JS)
    # Formulas are typeset after the load event, and ask for MathJax's fonts as they are: wait for both.
    math = page.evaluate(MATH_JS)
    info["math_errors"], result.formulas = math["errors"], math["typeset"]
    result.title, result.images, result.links = info["title"], info["images"], len(info["links"])
    result.problems += watched(watch, seen)
    result.problems += [f"image did not load: {src}" for src in info["broken"]]
    if info["math_errors"]:
        result.problems.append(f"{info['math_errors']} formula(s) that MathJax could not typeset")
    if path.startswith("notebooks/"):
        result.problems += chapter_checks(path, info, launch)
    if target and not page.url.endswith(target):
        result.problems.append(f"the redirect to {target} ended at {page.url}")
    result.seconds = round(time.monotonic() - started, 2)
    info["final_url"] = page.url
    return result, info


def check_links(result: SiteResult, base: str, infos: dict[str, dict]) -> None:
    """Every internal link of every page: its file must be served, its #fragment must be an id of that page."""
    ids = {info["final_url"].split("#")[0]: set(info["ids"]) for info in infos.values()}
    ids.update({base + path: set(info["ids"]) for path, info in infos.items()})
    statuses: dict[str, int] = {}
    for path, info in infos.items():
        for href in info["links"]:
            if not href.startswith(base):
                result.external_links += href.startswith(("http://", "https://"))
                continue
            result.links_checked += 1
            url, _, fragment = href.partition("#")
            if url not in statuses:
                statuses[url] = 200 if url in ids else status_of(url)
            if statuses[url] != 200:
                result.problems.append(f"{path}: link to {href[len(base):]} leads nowhere (HTTP {statuses[url]})")
            elif fragment and url.endswith((".html", "/")):
                result.fragments_checked += 1
                page_ids = ids.get(url if not url.endswith("/") else url + "index.html", set())
                if urllib.parse.unquote(fragment) not in page_ids:
                    result.problems.append(f"{path}: link to {href[len(base):]}: no element with id {fragment!r} there")
    result.link_targets = len(statuses)


def check_search(page, base: str) -> tuple[int, list[str]]:
    """Search the site as a reader does (search.html?q=...); return the hits and any problem."""
    if status_of(f"{base}search.html") != 200:
        return 0, [f"no search page (search.html): a search for {SEARCH_WORD!r} cannot run"]
    page.goto(f"{base}search.html?q={SEARCH_WORD}", wait_until="load")
    try:  # Sphinx's search says "Search finished, found N pages ..." (or "did not match") once it has listed them all
        page.wait_for_function("() => /finished|did not match/.test((document.querySelector('p.search-summary') || {})"
                               ".textContent || '')", timeout=20000)
    except Exception:  # Playwright's TimeoutError: the search never finished
        return 0, [f"search for {SEARCH_WORD!r} did not finish"]
    hits = page.locator("ul.search li").count()
    chapters = page.locator("ul.search li a[href*='notebooks/']").count()
    return hits, [] if chapters else [f"search for {SEARCH_WORD!r} found no chapter page"]


def check_site(site: Path, chromium: str, shots: Path, chapter: str) -> SiteResult:
    """Run every check on a built site; return the result (problems listed in it)."""
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    result = SiteResult(str(site))
    launch = read_launch(ROOT / "pyproject.toml")
    server, base = serve(site)
    watch: dict[str, list[str]] = {"console": [], "pageerror": [], "failed": [], "external": []}
    infos: dict[str, dict] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: watch["console"].append(m.text[:300]) if m.type == "error" else None)
            page.on("pageerror", lambda e: watch["pageerror"].append(str(e)[:300]))
            page.on("requestfailed", lambda r: watch["failed"].append(f"{r.url} ({r.failure})")
                    if r.url.startswith(base) else None)
            page.on("response", lambda r: watch["failed"].append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)

            def route(r) -> None:
                # Anything not served by our server would need the network: refuse it and report it.
                if r.request.url.startswith((base, "data:", "blob:")):
                    r.continue_()
                else:
                    watch["external"].append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            shots.mkdir(parents=True, exist_ok=True)
            wanted = next((p for p in site_pages(site) if p.startswith(f"notebooks/{chapter}")), None)
            if wanted is None:
                result.problems.append(f"no chapter page notebooks/{chapter}*.html to take a screenshot of")
            for path in site_pages(site):
                page_result, infos[path] = visit(page, base, site, path, launch, watch)
                result.pages.append(page_result)
                result.console_errors += sum(m.startswith(("console error", "page error")) for m in page_result.problems)
                result.images_loaded += page_result.images - sum(m.startswith("image did not") for m in page_result.problems)
                result.formulas += page_result.formulas
                if path in (wanted, "site/index.html"):
                    shot = shots / f"site-{'landing' if path == 'site/index.html' else Path(path).stem}.png"
                    page.screenshot(path=str(shot))
                    result.screenshots.append(str(shot))
            check_links(result, base, infos)
            seen = {key: len(found) for key, found in watch.items()}
            result.search_results, problems = check_search(page, base)
            result.problems += problems + [f"search.html?q={SEARCH_WORD}: {m}" for m in watched(watch, seen)]
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    result.seconds = round(time.monotonic() - started, 1)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Exit status: 0 passed, 1 a check failed, "
                                "2 no built site, 3 Chromium or Playwright missing.")
    p.add_argument("--site", type=Path, default=Path(os.environ.get("ALEXNET_SITE_DIR") or ROOT / "build" / "site"),
                   help="the built site (default: $ALEXNET_SITE_DIR, else build/site)")
    p.add_argument("--chapter", default="04", help="name prefix of the chapter page to take a screenshot of (default 04)")
    p.add_argument("--screenshots", type=Path, default=ROOT / "screenshots", help="where the screenshots go")
    p.add_argument("--report", type=Path, help="also write the results as JSON here")
    p.add_argument("--chromium", default=os.environ.get("ALEXNET_CHROMIUM", CHROMIUM), help="Chromium executable")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit status."""
    args = parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"check_site: no built site at {args.site} (no index.html): {BUILD_HINT}", file=sys.stderr)
        return EXIT_NO_SITE
    problem = missing_tools(args.chromium)
    if problem:
        print(f"check_site: cannot run: {problem}", file=sys.stderr)
        return EXIT_MISSING
    result = check_site(args.site, args.chromium, args.screenshots, args.chapter)
    for p in result.pages:
        print(f"check_site: {p.path}: {p.images} images, {p.formulas} formulas, {p.links} links, {p.seconds} s: "
              f"{'OK' if not p.problems else 'FAILED'}", flush=True)
    problems = result.all_problems()
    for m in problems:
        print(f"    - {m}")
    print(f"check_site: {len(result.pages)} pages visited, {result.links_checked} internal links checked "
          f"({result.link_targets} distinct targets, {result.fragments_checked} #fragments; {result.external_links} "
          f"external links not followed), {result.images_loaded} images loaded, {result.formulas} formulas typeset, "
          f"{result.console_errors} console "
          f"errors, search {SEARCH_WORD!r}: {result.search_results} results; screenshots: {', '.join(result.screenshots)}; "
          f"{result.seconds} s: {'OK' if not problems else f'FAILED ({len(problems)} problems)'}", flush=True)
    if args.report:
        args.report.write_text(json.dumps(asdict(result), indent=1), encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
