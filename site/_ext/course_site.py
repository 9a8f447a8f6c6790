"""Sphinx extension for the course's site (site/conf.py loads it): what Sphinx and myst-nb do not do for this course.

- Notebooks are read with their widget outputs turned into static HTML (`read_notebook`). The committed widget state
  does not hold the models that the outputs name (it was saved from an older kernel session), so the usual
  embedding of ipywidgets, which also loads its JavaScript from a CDN, would render nothing and raise errors.
- Linked remote images in markdown (the Colab and Binder badges) become text links (`local_badges`).
- Navigation is derived from the notebooks at build time: the `course-chapters` directive lists each chapter's
  title (its first heading) and its "What you will learn" list, and each chapter page's sidebar shows that list.
- Files included from elsewhere (README.md into site/) keep their relative links: `include-read` rebases them on
  the including page, so they resolve or fail the build like any other link. A file published through such an
  include rather than as a page of its own (`course_published_as`: README.md as the landing page) takes the links
  that point at it there.
- After the build: MathJax copied from the sphinx-mathjax-offline package (the site loads nothing from the network),
  a redirect from the site's top-level index.html to the landing page, and .nojekyll for GitHub Pages.
"""

from __future__ import annotations

import copy
import html
import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
GOALS_HEADING = re.compile(r"^\s*(?:#{1,6}\s*|\*\*)What you will learn\b", re.IGNORECASE)
LIST_ITEM = re.compile(r"^(?P<indent>\s*)(?:[-*+]|\d+[.)])\s+(?P<text>.*)$")
# tqdm's text form: "epoch 3/10:   0%|          | 0/175 [00:00<?, ?batch/s]"
TQDM = re.compile(r"^(?P<desc>.*?):?\s*\d+%\|.*?\|\s*\d+/(?P<total>\d+)\s*\[[^\]]*?\?(?P<unit>[\w ]+)/s\]")
# ipywidgets' text form of interact(): "interactive(children=(Dropdown(description='class', ...), Output()), ...)"
CONTROL = re.compile(r"(?P<kind>\w+)\((?:[^()]*?)description='(?P<name>[^']*)'")
# A linked image whose picture lives on another site, such as the notebooks' "Open In Colab" badges.
REMOTE_BADGE = re.compile(r"\[!\[(?P<alt>[^\]]*)\]\(https?://[^)]*\)\]\((?P<href>[^)]+)\)")
LINK = re.compile(r"(?P<head>\]\(\s*<?)(?P<target>[^)\s>]+)")
MATHJAX_FILES = ("tex-chtml-full.js", "output/chtml/fonts/woff-v2")


@dataclass(frozen=True)
class Chapter:
    """One notebook as the site lists it: where it is, its title and what it teaches."""

    docname: str
    path: Path
    title: str
    goals: tuple[str, ...]


def _source(cell: dict) -> str:
    """A cell's source as one string."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def notebook_title(nb: dict) -> str | None:
    """The notebook's title: the first level-1 heading of its markdown cells, without the #."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in _source(cell).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return None


def learning_goals(nb: dict) -> tuple[str, ...]:
    """The items of the notebook's "What you will learn" list (markdown), continuation lines joined."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        lines = _source(cell).splitlines()
        start = next((i for i, line in enumerate(lines) if GOALS_HEADING.match(line)), None)
        if start is None:
            continue
        items: list[str] = []
        for line in lines[start + 1:]:
            item = LIST_ITEM.match(line)
            if item and not item.group("indent"):
                items.append(item.group("text").strip())
            elif items and line.strip() and line[:1].isspace():
                items[-1] += " " + line.strip()  # an item's wrapped line
            elif items and not line.strip():
                continue
            elif items:
                break  # the first paragraph after the list ends it
        return tuple(items)
    return ()


def read_chapter(docname: str, path: Path) -> Chapter:
    """Title and goals of one notebook file; ValueError naming the file when either is missing."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    title, goals = notebook_title(nb), learning_goals(nb)
    if not title:
        raise ValueError(f"{path}: no '# title' line in its markdown cells (the site's navigation shows it)")
    if not goals:
        raise ValueError(f"{path}: no 'What you will learn' list in its markdown cells (the site lists it in the "
                         "navigation): a line '**What you will learn**' or a heading, then a bulleted or numbered list")
    return Chapter(docname, path, title, goals)


def _describe_widget(text: str, model: dict | None) -> str:
    """Static HTML standing for one widget output: what it was and that it lives only in a running notebook."""
    tqdm = TQDM.match(text)
    if tqdm:
        desc = tqdm.group("desc").strip() or "progress"
        return (f'<div class="course-widget course-widget-progress" role="note"><span class="course-widget-kind">progress '
                f'bar</span> {html.escape(desc)} · {tqdm.group("total")} {html.escape(tqdm.group("unit").strip())}</div>')
    controls = [f"{html.escape(m.group('kind'))} <em>{html.escape(m.group('name'))}</em>" for m in CONTROL.finditer(text)]
    kind = "interactive widget" if text.startswith("interactive(") else f"widget {html.escape(text.split('(')[0][:40])}"
    what = f" with {', '.join(controls)}" if controls else ""
    saved = " The output below is the one saved with the notebook." if model is not None else ""
    return (f'<div class="course-widget course-widget-interact" role="note"><span class="course-widget-kind">{kind}'
            f'</span>{what}: it works only in a running notebook (the launch button at the top of this page opens one '
            f'on Colab or Binder).{saved}</div>')


def _saved_outputs(state: dict, model_id: str, seen: set[str] | None = None) -> list[dict]:
    """The outputs held by the Output widgets under one widget model of the saved state, in order."""
    seen = set() if seen is None else seen
    model = state.get(model_id)
    if model is None or model_id in seen:
        return []
    seen.add(model_id)
    values = model.get("state", {})
    if model.get("model_name") == "OutputModel":
        return [copy.deepcopy(o) for o in values.get("outputs", [])]
    found = []
    for child in values.get("children", []):
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            found += _saved_outputs(state, child[len("IPY_MODEL_"):], seen)
    return found


def local_badges(nb: dict) -> int:
    """Turn linked remote images in markdown cells (the Colab and Binder badges) into text links; return how many.

    The site loads nothing from the network, so that it reads offline and the browser check can load every image;
    the links themselves, written by tools/sync_links.py, stay as they are.
    """
    count = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            text, n = REMOTE_BADGE.subn(r"[\g<alt>](\g<href>)", _source(cell))
            if n:
                cell["source"], count = text, count + n
    return count


def static_widgets(nb: dict) -> int:
    """Replace every widget output of a notebook (a dict, changed in place) by static HTML; return how many there were."""
    state = nb.get("metadata", {}).pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    count = 0
    for cell in nb.get("cells", []):
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(out)
                continue
            count += 1
            text = "".join(out["data"].get("text/plain", ""))
            model_id = view.get("model_id", "")
            data = {"text/html": _describe_widget(text, state.get(model_id)), "text/plain": text}
            outputs.append({"output_type": "display_data", "data": data, "metadata": {}})
            outputs += [o for o in _saved_outputs(state, model_id) if WIDGET_VIEW not in o.get("data", {})]
        if "outputs" in cell:
            cell["outputs"] = outputs
    return count


def read_notebook(text: str):
    """myst-nb's notebook reader for .ipynb (nb_custom_formats): nbformat's, widget outputs static, badges as text."""
    import nbformat

    nb = json.loads(text)
    static_widgets(nb)
    local_badges(nb)
    return nbformat.reads(json.dumps(nb), as_version=4)


def rebase_links(text: str, source_dir: Path, target_dir: Path) -> str:
    """Markdown `text` from a file in source_dir, its relative links to existing files made relative to target_dir."""
    def rebase(match: re.Match) -> str:
        target = match.group("target")
        path, sep, fragment = target.partition("#")
        if not path or "://" in path or path.startswith(("/", "mailto:")) or not (source_dir / path).exists():
            return match.group(0)  # anchors, URLs, and links to nothing: MyST resolves or reports them as they are
        moved = Path(os.path.relpath(source_dir / path, target_dir)).as_posix()
        return f"{match.group('head')}{moved}{sep}{fragment}"

    return LINK.sub(rebase, text)


def course_chapters(env) -> list[Chapter]:
    """The course's notebooks among the site's documents, in course order (their file names)."""
    chapters = []
    for docname in sorted(d for d in env.found_docs if d.startswith("notebooks/")):
        chapters.append(read_chapter(docname, Path(env.doc2path(docname))))
    return chapters


def _goals_html(chapter: Chapter) -> str:
    """A chapter's goals as an HTML list, for the sidebar."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").render("\n".join(f"- {g}" for g in chapter.goals))


def _on_include_read(app, relative_path: Path, parent_docname: str, content: list[str]) -> None:
    """Rebase the links of an included file on the page that includes it (MyST's include emits this event)."""
    source_dir = (Path(app.srcdir) / relative_path).parent
    target_dir = Path(app.env.doc2path(app.env.docname)).parent
    if source_dir.resolve() != target_dir.resolve():
        content[0] = rebase_links(content[0], source_dir, target_dir)


def _on_page_context(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Give a chapter page's sidebar its "What you will learn" list."""
    if pagename.startswith("notebooks/") and pagename in app.env.found_docs:
        chapter = read_chapter(pagename, Path(app.env.doc2path(pagename)))
        context["chapter_goals_html"] = _goals_html(chapter)


def _mathjax_source() -> Path:
    """The MathJax folder of the sphinx-mathjax-offline package."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("sphinx-mathjax-offline is not installed: pip install -e '.[docs]'")
    return Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax"


def _on_build_finished(app, exception: Exception | None) -> None:
    """MathJax into _static (only what the pages load), the top-level redirect and .nojekyll."""
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    source = _mathjax_source()
    for rel in MATHJAX_FILES:
        src, dest = source / rel, out / "_static" / "mathjax" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest)
    root = app.config.root_doc
    if root != "index":
        target = html.escape(f"{root}.html")
        (out / "index.html").write_text(
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(app.config.html_title)}'
            f'</title><meta http-equiv="refresh" content="0; url={target}"><link rel="canonical" href="{target}"></head>'
            f'<body><p>The course is at <a href="{target}">{target}</a>.</p></body></html>\n', encoding="utf-8")
    (out / ".nojekyll").write_text("", encoding="utf-8")  # GitHub Pages would hide _static/ and _images/ otherwise


def setup(app) -> dict:
    """Register the directive, the post-transform, the config value and the event handlers."""
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx import addnodes
    from sphinx.transforms.post_transforms import SphinxPostTransform
    from sphinx.util.docutils import SphinxDirective

    class CourseChapters(SphinxDirective):
        """The chapters in course order, each a link with its "What you will learn" list, read from the notebooks."""

        def run(self) -> list:
            here = Path(self.env.doc2path(self.env.docname)).parent
            try:
                chapters = course_chapters(self.env)
            except ValueError as err:
                raise self.error(str(err)) from err
            if not chapters:
                raise self.error("course-chapters: no notebooks/ document found (include_patterns in site/conf.py)")
            lines = []
            for chapter in chapters:
                self.env.note_dependency(str(chapter.path))
                link = Path(os.path.relpath(chapter.path, here)).as_posix()
                lines.append(f"- **[{chapter.title}]({link})**")
                lines += [f"  - {goal}" for goal in chapter.goals]
            container = nodes.container(classes=["course-chapters"])
            self.state.nested_parse(StringList(lines, source=self.env.docname), self.content_offset, container)
            return [container]

    class PublishedAs(SphinxPostTransform):
        """Point MyST links at a file published inside another page (README.md: the landing page) to that page."""

        default_priority = 8  # before MyST's resolver (9), which would report the file as an unknown document

        def run(self, **kwargs) -> None:
            moved = self.config.course_published_as
            for node in self.document.findall(addnodes.pending_xref):
                if node.get("reftype") == "myst" and node.get("refdomain") == "doc" and node["reftarget"] in moved:
                    node["reftarget"] = moved[node["reftarget"]]

    app.add_config_value("course_published_as", {}, "env", types=[dict])
    app.add_post_transform(PublishedAs)
    app.add_directive("course-chapters", CourseChapters)
    app.connect("include-read", _on_include_read)
    app.connect("html-page-context", _on_page_context)
    app.connect("build-finished", _on_build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
