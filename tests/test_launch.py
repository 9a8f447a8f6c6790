"""Launch files stay consistent: badges and Colab install lines match pyproject.toml, Binder and conda list its packages."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def load_tool(name: str) -> types.ModuleType:
    """Import tools/<name>.py (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


sync_links = load_tool("sync_links")
before_you_run = load_tool("before_you_run")
pin_binder = load_tool("pin_binder")


def pyproject() -> dict:
    """pyproject.toml, parsed (tomllib is in the standard library from Python 3.11)."""
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement(spec: str) -> tuple[str, str]:
    """("name", "bound") of a requirement such as "Pillow>=10": name normalised, extras dropped."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*?)\s*", spec)
    assert match, spec
    return re.sub(r"[-_.]+", "-", match.group(1)).lower(), match.group(3).replace(" ", "")


def project_requirements(*extras: str) -> dict[str, str]:
    """Name -> lower bound of pyproject's dependencies plus the given extras (self-references left out)."""
    data = pyproject()["project"]
    specs = list(data["dependencies"])
    for extra in extras:
        specs += data["optional-dependencies"][extra]
    reqs = dict(requirement(s) for s in specs)
    reqs.pop(data["name"], None)
    return reqs


def test_launch_links_match_pyproject():
    """Every badge and install line is what tools/sync_links.py writes from pyproject.toml (run it to fix)."""
    assert sync_links.sync(write=False) == []


def test_every_notebook_has_its_badges_and_one_guarded_install_line():
    launch = sync_links.read_launch()
    assert re.fullmatch(r"v\d+\.\d+\.\d+\S*", launch.ref), "Colab installs a release tag, never a moving branch"
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        head = "".join(nb["cells"][0]["source"]).split("\n")
        assert nb["cells"][0]["cell_type"] == "markdown" and head[0].startswith("# "), path.name
        assert launch.badges(path.name) in head, f"{path.name}: no badge line under the title"
        assert launch.colab(path.name).endswith(f"/blob/{launch.ref}/notebooks/{path.name}")

        installs = [(i, line) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
                    for line in "".join(c["source"]).split("\n") if re.match(r"\s*[%!]pip\s+install", line)]
        setup = sync_links.setup_cell(nb)
        assert setup is not None, f"{path.name}: the first code cell must call start()"
        assert len(installs) == 1 and installs[0][0] == nb["cells"].index(setup), f"{path.name}: {installs}"
        lines = "".join(setup["source"]).split("\n")
        at = lines.index(launch.install())
        guard = lines.index(sync_links.GUARD)
        # Everything between the guard and the install line is indented under the guard: Colab only.
        assert guard < at and all(line.startswith("    ") for line in lines[guard + 1:at + 1]), lines
        assert any(line.strip().startswith("import torch") for line in lines[guard + 1:at]), "torch must be imported to pin it"
        assert "torch=={torch.__version__}" in lines[at], "pip must keep Colab's own torch"


def test_a_failed_install_stops_the_setup_cell_with_what_to_do(monkeypatch: pytest.MonkeyPatch):
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    lines = "".join(sync_links.setup_cell(nb)["source"]).split("\n")
    code = "\n".join(line for line in lines if not line.lstrip().startswith("%"))  # the magic runs only on Colab
    with monkeypatch.context() as m, pytest.raises(SystemExit) as stop:
        m.setitem(sys.modules, "helpers.course", None)  # as if the package were not installed
        exec(compile(code, "setup cell", "exec"), {})
    message = str(stop.value)
    assert "not installed" in message and message.endswith(f"/README.md#{sync_links.README_HELP}")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")  # the section it points at says what to do
    section = readme[readme.index("### If the setup cell fails"):].split("\n## ")[0]
    for words in ("On Colab", "`%pip` line", "fork", ".zip", 'pip install -e ".[notebooks]"'):
        assert words in section, words
    namespace: dict = {}  # installed: the same lines import start() and raise nothing
    exec(compile(code.replace("device = start()", ""), "setup cell", "exec"), namespace)
    assert callable(namespace["start"])


def test_the_repository_url_is_written_only_where_sync_links_writes_it():
    launch = sync_links.read_launch()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(sync_links.README_START), readme.index(sync_links.README_END)
    assert launch.slug not in readme[:start] + readme[end:]
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        rest = [line for c in nb["cells"] for line in "".join(c["source"]).split("\n")
                if line not in (launch.badges(path.name), launch.install(), launch.setup_help())]
        assert launch.slug not in "\n".join(rest), path.name
    others = [ROOT / "environment.yml", ROOT / ".ci" / "run", *(ROOT / "binder").iterdir(), *(ROOT / "helpers").glob("*.py")]
    for path in others:
        assert launch.slug not in path.read_text(encoding="utf-8"), path


def test_sync_links_rewrites_only_the_badge_and_install_lines(tmp_path: Path):
    (tmp_path / "notebooks").mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, tmp_path / "notebooks")
    shutil.copy(ROOT / "README.md", tmp_path)
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    moved = text.replace(sync_links.read_launch().url, "https://github.com/someone/elsewhere").replace(
        'version = "', 'version = "9.', 1)
    (tmp_path / "pyproject.toml").write_text(moved, encoding="utf-8")

    changes = sync_links.sync(tmp_path)
    assert len(changes) == 2 * len(NOTEBOOKS) + 1 and all(c.endswith("updated") for c in changes), changes
    assert sync_links.sync(tmp_path, write=False) == []
    for path in NOTEBOOKS:
        before = json.loads(path.read_text(encoding="utf-8"))
        after = json.loads((tmp_path / "notebooks" / path.name).read_text(encoding="utf-8"))
        setup = before["cells"].index(sync_links.setup_cell(before))
        assert after["metadata"] == before["metadata"]
        for i, (a, b) in enumerate(zip(after["cells"], before["cells"])):
            assert {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}
            assert (a["source"] != b["source"]) == (i in (0, setup)), (path.name, i)
        assert "someone/elsewhere/blob/v9." in "".join(after["cells"][0]["source"])
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "gh/someone/elsewhere/v9." in readme and sync_links.read_launch().slug not in readme


def test_colab_widget_manager_is_switched_on_only_on_colab(monkeypatch: pytest.MonkeyPatch):
    from helpers import course as notebook

    calls = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("on"))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert notebook.enable_colab_widgets() is False and calls == []

    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab.output, google.colab = output, colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert notebook.enable_colab_widgets() is True and calls == ["on"]


def conda_environment() -> tuple[dict[str, str], dict[str, str]]:
    """(conda packages, pip packages) of environment.yml as name -> bound; a small reader for this one file's layout."""
    conda, pip, in_pip, section = {}, {}, False, None
    for line in (ROOT / "environment.yml").read_text(encoding="utf-8").splitlines():
        key = re.match(r"^(\w+):", line)
        section = key.group(1) if key else section
        item = re.match(r"^(\s*)- (.+)$", line)
        if not item or section != "dependencies":
            continue
        nested, value = len(item.group(1)) > 2, item.group(2).split("#")[0].strip()
        in_pip = (in_pip and nested) or value == "pip:"
        if value in ("pip", "pip:") or value.startswith("-"):  # pip itself, the pip: key, "--editable ."
            continue
        name, bound = requirement(value)
        (pip if in_pip else conda)[name] = bound
    return conda, pip


def test_environment_yml_lists_the_packages_of_pyproject():
    conda, pip = conda_environment()
    assert conda.pop("python") == pyproject()["project"]["requires-python"]
    conda["torch"] = conda.pop("pytorch")  # conda-forge's name for torch
    assert {**conda, **pip} == project_requirements("notebooks", "test", "browser")
    dev = pyproject()["project"]["optional-dependencies"]["dev"]
    assert dev == ["alexnet-cifar10[notebooks,test,browser]"], "environment.yml mirrors the dev extra: update both"


def binder_lines() -> list[str]:
    """binder/requirements.txt's lines that are not comments or blank."""
    lines = [line.strip() for line in (ROOT / "binder" / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def pins_outside_ranges(text: str, ranges: dict[str, str]) -> list[str]:
    """One line for each package of `ranges` (name -> specifier) that `text` does not pin exactly inside its range."""
    from packaging.specifiers import SpecifierSet

    pinned = pin_binder.read_pins(text)[0]
    problems = []
    for name, spec in sorted(ranges.items()):
        if name not in pinned:
            problems.append(f"{name}: in pyproject.toml ({spec}), not pinned in binder/requirements.txt")
        elif not SpecifierSet(spec).contains(pinned[name], prereleases=True):
            problems.append(f"{name}: pinned {pinned[name]}, outside pyproject.toml's {spec}")
    return problems


def test_binder_pins_every_pyproject_package_inside_its_range():
    text = (ROOT / "binder" / "requirements.txt").read_text(encoding="utf-8")
    problems = pins_outside_ranges(text, project_requirements("notebooks"))
    assert problems == [], "pin again (tools/pin_binder.py, see its docstring):\n" + "\n".join(problems)


def test_a_package_missing_from_the_pins_or_pinned_outside_its_range_is_named():
    text = "--extra-index-url https://download.pytorch.org/whl/cpu\ntorch==2.8.0\nNumPy==2.4.6\n"
    problems = pins_outside_ranges(text, {"torch": ">=2.9", "numpy": ">=1.26", "seaborn": ">=0.13"})
    assert problems == ["seaborn: in pyproject.toml (>=0.13), not pinned in binder/requirements.txt",
                        "torch: pinned 2.8.0, outside pyproject.toml's >=2.9"]


def test_binder_requirements_are_exact_pins_for_the_python_of_runtime_txt():
    lines = binder_lines()
    options = [line for line in lines if line.startswith("-")]
    assert options == [pin_binder.CPU_INDEX], options
    # No local path: a "-e .." line would disable repo2docker's pre-assembly of the environment.
    loose = [line for line in lines if not line.startswith("-") and not pin_binder.PIN_LINE.fullmatch(line)]
    assert loose == [], f"not name==version (no local labels such as +cpu, no paths): {loose}"
    pinned, mark, _ = pin_binder.read_pins((ROOT / "binder" / "requirements.txt").read_text(encoding="utf-8"))
    course = pyproject()["project"]["name"]
    assert course not in pinned and "pip" not in pinned, "postBuild installs the course; CI and repo2docker upgrade pip"
    assert not [name for name in pinned if pin_binder.CUDA_ONLY.match(name)], "Binder's CPU-only torch needs no CUDA"
    # The pins hold for the Python they were made with: Binder must run that one.
    made_with = pin_binder.MARK_LINE.match(mark or "")
    assert made_with, f"no line {pin_binder.MARK!r}: write the file with tools/pin_binder.py"
    runtime = (ROOT / "binder" / "runtime.txt").read_text(encoding="utf-8").strip()
    python = made_with["python"]
    assert runtime == f"python-{python}", f"runtime.txt says {runtime}, the pins were made on Python {python}: pin again"
    minimum = pyproject()["project"]["requires-python"].removeprefix(">=")
    assert tuple(int(v) for v in python.split(".")) >= tuple(int(v) for v in minimum.split("."))


def test_binder_postbuild_installs_the_package_and_loads_cifar10():
    post = (ROOT / "binder" / "postBuild").read_text(encoding="utf-8").splitlines()
    commands = [line for line in post if line.strip() and not line.startswith("#")]
    assert post[0].startswith("#!") and commands[0].startswith("set -e"), "postBuild fails the build only with set -e"
    assert any(re.search(r"pip install .*--no-deps -e \.$", c) for c in commands), "requirements.txt installed everything"
    assert any("load_cifar10()" in c for c in commands), "CIFAR-10 is fetched at build time"
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111, "repo2docker runs postBuild as an executable"


CUDA_VENV = {"anyio": "4.16.0", "Jinja2": "3.1.6", "torch": "2.14.1+cu130", "torchvision": "0.29.1+cu130",
             "nvidia-cublas": "13.1.1.3", "cuda-toolkit": "13.0.3.0", "triton": "3.8.0", "pip": "26.3",
             "setuptools": "84.2.1", "wheel": "0.45.1", "alexnet-cifar10": "0.1.0"}
OLD_FILE = "# why this file\n\n--extra-index-url https://download.pytorch.org/whl/cpu\ntorch>=2.9\n# a comment kept\nanyio>=4\n"


def test_pin_binder_pins_everything_but_pip_the_course_and_torchs_cuda_libraries():
    env = pin_binder.Environment("3.11", "Linux x86_64", {pin_binder.canonical(k): v for k, v in CUDA_VENV.items()},
                                 {"setuptools": frozenset({"torch"}), "wheel": frozenset()})
    text = pin_binder.render(OLD_FILE, env, "alexnet-cifar10")
    assert text.splitlines() == [
        "# why this file", "", "--extra-index-url https://download.pytorch.org/whl/cpu", "# a comment kept",
        "# Pinned by tools/pin_binder.py from Python 3.11 on Linux x86_64. Regenerate them, do not edit them (see above).",
        "anyio==4.16.0", "jinja2==3.1.6", "setuptools==84.2.1", "torch==2.14.1", "torchvision==0.29.1"]
    assert pin_binder.differences(text, text) == []
    assert pin_binder.render(text, env, "alexnet-cifar10") == text, "pinning again changes nothing"
    # The CPU index line is put back if it went missing; a local label on a PyPI package cannot be pinned.
    assert pin_binder.CPU_INDEX in pin_binder.render("# header\n", env, "alexnet-cifar10")
    bad = pin_binder.Environment("3.11", "Linux x86_64", {"numpy": "2.4.6+local"})
    with pytest.raises(SystemExit, match="numpy==2.4.6\\+local has a local version label"):
        pin_binder.render(OLD_FILE, bad, "alexnet-cifar10")
    show = "Name: setuptools\nVersion: 84.2.1\nRequires: \nRequired-by: torch, Jinja2\n---\nName: wheel\nRequired-by: \n"
    assert pin_binder.parse_required_by(show) == {"setuptools": frozenset({"torch", "jinja2"}), "wheel": frozenset()}


def fake_venv(folder: Path, packages: dict[str, str]) -> Path:
    """A folder whose bin/python answers the three questions pin_binder asks, as a real venv's would."""
    (folder / "bin").mkdir(parents=True)
    listed = json.dumps([{"name": n, "version": v} for n, v in packages.items()])
    script = folder / "bin" / "python"
    script.write_text("#!/bin/sh\n"
                      'case "$*" in\n'
                      '  "-c "*) echo "3.11 Linux x86_64" ;;\n'
                      f"  *\" list \"*) echo '{listed}' ;;\n"
                      '  *" show "*) printf "Name: setuptools\\nRequired-by: torch\\n" ;;\n'
                      "esac\n", encoding="utf-8")
    script.chmod(0o755)
    return folder


def test_pin_binder_check_fails_when_the_environment_and_the_file_differ(tmp_path: Path, capsys: pytest.CaptureFixture):
    venv = fake_venv(tmp_path / "venv", {"torch": "2.14.1+cu130", "setuptools": "84.2.1", "anyio": "4.16.0"})
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(OLD_FILE, encoding="utf-8")
    args = ["--from-venv", str(venv), "--requirements", str(requirements)]
    assert pin_binder.main(["--check", *args]) == 1  # lower bounds are not pins
    assert "'torch>=2.9': not an exact pin" in capsys.readouterr().err
    assert pin_binder.main(args) == 0 and pin_binder.main(["--check", *args]) == 0
    assert "anyio==4.16.0\nsetuptools==84.2.1\ntorch==2.14.1\n" in requirements.read_text(encoding="utf-8")
    capsys.readouterr()

    requirements.write_text(requirements.read_text(encoding="utf-8").replace("anyio==4.16.0", "anyio==4.15.0")
                            .replace("torch==", "idna==3.20\ntorch=="), encoding="utf-8")
    assert pin_binder.main(["--check", *args]) == 1
    err = capsys.readouterr().err
    assert "anyio: pinned 4.15.0, the environment has 4.16.0" in err and "idna: pinned 3.20, not in the environment" in err
    assert "python tools/pin_binder.py --from-venv" in err, "the error says how to fix it"


def test_pin_binder_ranges_are_pyproject_dependencies_and_the_notebooks_extra():
    lines = pin_binder.ranges(OLD_FILE, pyproject()).splitlines()
    assert lines[:3] == ["# why this file", "", pin_binder.CPU_INDEX]
    assert dict(requirement(line) for line in lines if line and not line.startswith(("#", "-"))) == project_requirements(
        "notebooks")


def test_outside_a_checkout_files_go_where_the_platform_keeps_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from helpers import course as paths

    assert paths.project_folder("data") == paths.CHECKOUT / "data"  # a checkout keeps its own data/, runs/, results/
    monkeypatch.setattr(paths, "CHECKOUT", tmp_path)  # no pyproject.toml: a pip-installed package
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert paths.runs_dir() == paths.CACHE / "runs"
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert paths.runs_dir() == Path("/content/alexnet-cifar10/runs") and paths.results_dir().parent == paths.COLAB


def test_every_notebook_says_what_run_all_costs_above_its_setup_cell():
    assert before_you_run.sync(write=False) == [], "run python tools/before_you_run.py"
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        texts = ["".join(c["source"]) for c in nb["cells"]]
        at = next(i for i, t in enumerate(texts) if t.startswith(before_you_run.MARK))
        assert at < nb["cells"].index(sync_links.setup_cell(nb)), path.name
        assert "%env ALEXNET_REDUCED=1" in texts[at] and "GPU is optional" in texts[at], path.name
        assert len(texts[at].splitlines()) == 1 and "|" not in texts[at], "one paragraph for the learner, no table"


def test_the_before_you_run_line_and_the_docs_table_are_written_from_the_record(tmp_path: Path):
    from notebook_memory import notebook_costs, record_notebook_cost

    entry = {"seconds": 800, "peak_mb": 2300, "peak_anon_mb": 1900, "device": "device=cpu | a CPU", "torch": "2.x",
             "data": "CIFAR-10 (JPEG mirror)", "date": "2026-11-30"}
    text = before_you_run.cell_text({"full": entry})
    assert text.startswith("**Before you run.** *Run all* took 13 min on a 2-core CPU (`results/notebook_costs_cpu.json`, "
                           "2026-11-30)") and "On Binder" in text
    assert "On Binder" not in before_you_run.cell_text({"full": {**entry, "torch": "2.14.1+cu130"}})  # 1,753 MB there
    assert "has not been timed yet" in before_you_run.cell_text({})
    out = tmp_path / "costs.json"
    record_notebook_cost(out, "03_training.ipynb", "full", entry)
    record_notebook_cost(out, "03_training.ipynb", "reduced", {**entry, "seconds": 60, "peak_anon_mb": 900})
    costs = notebook_costs(out)
    assert costs["03"]["full"]["seconds"] == 800 and costs["03"]["reduced"]["seconds"] == 60
    table = before_you_run.memory_table(costs)
    assert "| 03 | full | 13 min | 2,300 MB | 1,900 MB | 1,900 MB | device=cpu, a CPU; 2026-11-30 |" in table
    assert "| 03 | reduced | 60 s |" in table
    with pytest.raises(ValueError, match="mode"):
        record_notebook_cost(out, "03_training.ipynb", "fast", entry)


def test_on_colab_a_failed_install_ends_the_setup_cell_with_what_to_do(tmp_path: Path):
    """The first cell in a real kernel, as Colab runs it: google.colab present, the %pip install failing, no course."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    setup = "".join(sync_links.setup_cell(nb)["source"])
    fake_colab = ("import sys, types\n"
                  "sys.modules['google.colab'] = types.ModuleType('google.colab')  # as on Colab\n"
                  "sys.modules['helpers.course'] = None  # the course is not installed: the import fails")
    # An unreachable package index and git host: the %pip line fails quickly, as on a machine without the course's URL.
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
           "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "url.http://127.0.0.1:9/.insteadOf",
           "GIT_CONFIG_VALUE_0": "https://github.com/"}
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(fake_colab), nbformat.v4.new_code_cell(setup)])
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel(env=env):
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
    outputs = notebook.cells[1].outputs
    text = "\n".join(o.get("text", "") + o.get("evalue", "") for o in outputs)
    errors = [o for o in outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "SystemExit", text  # one short error, not a traceback from inside helpers
    for words in ("not installed", "README.md#if-the-setup-cell-fails"):
        assert words in text, (words, text)
