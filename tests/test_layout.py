"""The package's layout: imports go one way (plumbing at the bottom, the commands at the top), no module imports one
that imports it back (function-local imports included), each command's module runs once, notebooks import little."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "helpers"

# Each part of the package and the parts it may import from. A module may always import within its own part.
ALLOWED = {
    "plumbing": set(),
    "device": {"plumbing"},
    "course": {"device", "plumbing"},
    "data": {"course", "device", "plumbing"},
    "models": {"plumbing"},
    "training": {"data", "models", "course", "device", "plumbing"},
    "evaluation": {"data", "models", "plumbing"},
    "speed": {"training", "data", "models", "course", "device", "plumbing"},
    "ablation": {"training", "data", "models", "course", "device", "plumbing"},
    "commands": {"ablation", "training", "data", "models", "course", "device", "plumbing"},
    "train": {"commands"},
}


def module_names() -> dict[str, Path]:
    """helpers.x.y -> file, packages by their __init__.py."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = module_names()


def imports_of(name: str) -> dict[str, bool]:
    """The helpers modules `name` imports -> whether only inside a function; `from pkg import submodule` is the submodule."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = here.split(".")
            target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) if node.level \
                else node.module
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            targets = subs if len(subs) == len(node.names) else [target, *subs]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target in MODULES and target != name:
                found[target] = found.get(target, True) and id(node) not in top
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def part(name: str) -> str:
    """The part of the package a module belongs to: helpers.training.engine -> training, helpers.ablation.__main__ -> train."""
    if name == "helpers.ablation.__main__":
        return "train"  # a command's entry point, like helpers/train.py
    return name.split(".")[1] if name != "helpers" else "helpers"


def test_the_import_graph_was_read():
    assert len(MODULES) > 30 and GRAPH["helpers.training.engine"]  # the checks below are not vacuous
    assert GRAPH["helpers.train"] == {"helpers.commands": True}  # an import below the top level is seen, and marked so


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "helpers"))
def test_imports_only_go_down(name):
    mine = part(name)
    wrong = sorted(t for t in GRAPH[name] if part(t) != mine and part(t) not in ALLOWED[mine])
    assert not wrong, f"{name} ({mine}) imports {wrong}; {mine} may import only from {sorted(ALLOWED[mine])}"


def test_no_module_imports_one_that_imports_it_back():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in MODULES:
        if v not in index:
            visit(v)
    assert cycles == []


def test_nothing_imports_a_command_entry_point():
    entry = {"helpers.train", "helpers.ablation.__main__"}
    assert not [n for n in MODULES if entry & set(GRAPH[n])]


@pytest.mark.parametrize("command", ["helpers.train", "helpers.ablation"])
def test_each_command_module_runs_once(command):
    # -X importtime lists every module imported; the module run as __main__ must not be imported a second time.
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", command, "--help"], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    entry = "helpers.train" if command == "helpers.train" else "helpers.ablation.__main__"
    assert entry not in imported and "helpers.commands" in imported


def notebook_imports(path: Path) -> set[str]:
    modules = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
                modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", sorted((REPO / "notebooks").glob("[0-9]*.ipynb")), ids=lambda p: p.stem)
def test_a_notebook_imports_from_a_few_modules_none_of_them_plumbing(path):
    modules = notebook_imports(path)
    assert modules and len(modules) <= 6, sorted(modules)
    assert not [m for m in modules if part(m) in ("plumbing", "commands", "train")], sorted(modules)
