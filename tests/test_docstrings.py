"""Every "(notebook NN)" tag in a helpers docstring names a notebook that really uses or shows that name."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TAG = re.compile(r"\(notebooks? ([0-9, and]+)(?:'s [^)]*)?\)")


def notebook_text(number: str) -> str:
    (path,) = (REPO / "notebooks").glob(f"{number}_*.ipynb")
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells)


def tagged_names() -> list[tuple[str, str, str]]:
    """(module, public name, notebook number) for every tag in a first docstring line under helpers/."""
    out = []
    for path in sorted((REPO / "helpers").rglob("*.py")):
        tree = ast.parse(path.read_text())
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if node.name.startswith("_") or not doc:
                continue
            for match in TAG.finditer(doc.splitlines()[0]):
                if "'s " in match.group(0):  # "(notebook 03's engine)": used by the engine, not the notebook
                    continue
                for number in re.findall(r"\d\d", match.group(1)):
                    out.append((str(path.relative_to(REPO / "helpers").with_suffix("")), node.name, number))
    return out


TAGS = tagged_names()


def test_tags_were_found():
    assert len(TAGS) > 50  # the check below is not vacuous


@pytest.mark.parametrize("module, name, number", TAGS, ids=[f"{m}.{n}-{k}" for m, n, k in TAGS])
def test_tagged_notebook_mentions_the_name(module, name, number):
    assert re.search(rf"\b{re.escape(name)}\b", notebook_text(number)), (
        f"helpers/{module}.py: {name} says '(notebook {number})' but notebook {number} never mentions it; "
        f"name the notebook that does, or the real user (e.g. '(notebook 03's engine)', '(README)', '(tests)')")
