#!/usr/bin/env python3
"""Pin binder/requirements.txt to an environment: every package it has, at exactly the version it has.

Binder builds its image from binder/requirements.txt whenever someone opens a link, perhaps years after the
last commit; with lower bounds, that image is not the one CI tested. So the file pins the environment CI's
browser test ran every notebook in, which CI builds from this same file (.ci/run, `.binder-venv`):

    python tools/pin_binder.py --from-venv .binder-venv           # rewrite the pins from that environment
    python tools/pin_binder.py --check --from-venv .binder-venv   # exit 1 if the file and the environment differ
    python tools/pin_binder.py --ranges > /tmp/binder-ranges.txt  # pyproject.toml's ranges, to build a newer one

To move the pins to newer releases, build a fresh environment from the ranges exactly as .ci/run builds
`.binder-venv` (a venv with the Python of binder/runtime.txt, pip upgraded, `PIP_RETRIES=1 pip install -r
/tmp/binder-ranges.txt`, `pip install --no-deps -e .`), pin from it, and let CI run the browser test on the result.

What is left out, and why: pip (CI and repo2docker upgrade it themselves); the course package (binder/postBuild
installs it); setuptools and wheel unless an installed package requires them (else their version is only the
one the venv was born with); and the CUDA libraries of torch's CUDA build (nvidia-*, cuda-*, triton), which
Binder's CPU-only torch does not use and which would add gigabytes to its image. torch pins its CUDA libraries
exactly itself, so where the CUDA build is installed they are fixed by the torch pin all the same. Local
version labels (2.14.1+cu130, 2.14.1+cpu) are cut from torch's family, so that "torch==2.14.1" takes the
"+cpu" build from PyTorch's CPU index on Binder and the plain one from PyPI elsewhere (PEP 440 matches both).
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "binder" / "requirements.txt"
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
MARK = "# Pinned by tools/pin_binder.py"
MARK_LINE = re.compile(r"^# Pinned by tools/pin_binder\.py from Python (?P<python>\d+\.\d+) on (?P<platform>.+?)\.")
PIN_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[0-9][A-Za-z0-9.!]*)$")
# Served with local labels (+cpu, +cu130) by PyTorch's own indexes; any other package with a label came from
# somewhere Binder cannot reach.
PYTORCH_INDEX_PACKAGES = frozenset({"torch", "torchvision", "torchaudio"})
CUDA_ONLY = re.compile(r"^(nvidia-.+|cuda-.+|triton)$")
TOOLING = frozenset({"setuptools", "wheel"})
ALWAYS_LEFT_OUT = frozenset({"pip"})


@dataclass(frozen=True)
class Environment:
    """What an environment has installed, as read from its Python and pip."""

    python: str  # "3.11": pins hold for one Python minor version (markers, wheels), so binder/runtime.txt must match
    platform: str  # "Linux x86_64"
    packages: dict[str, str]  # canonical name -> version, editable installs left out
    required_by: dict[str, frozenset[str]] = field(default_factory=dict)  # tooling package -> who requires it


def canonical(name: str) -> str:
    """The PEP 503 form of a package name ("Jinja2" -> "jinja2", "typing_extensions" -> "typing-extensions")."""
    return re.sub(r"[-_.]+", "-", name).lower()


def course_package() -> str:
    """The course's own distribution name, from pyproject.toml."""
    return canonical(pyproject()["project"]["name"])


def pyproject() -> dict:
    """pyproject.toml, parsed."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise SystemExit("tools/pin_binder.py reads pyproject.toml with tomllib: run it with Python 3.11 or newer") from None
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _run(python: Path, *args: str) -> str:
    """Stdout of `python args`, or an error that says which command failed and what it printed."""
    result = subprocess.run([str(python), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{python} {' '.join(args)} failed (exit {result.returncode}):\n{result.stderr.strip()}")
    return result.stdout


def read_environment(venv: Path) -> Environment:
    """Read the packages, Python version and platform of the virtual environment at `venv`."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"no Python at {python}: pass the folder of a virtual environment (python3 -m venv FOLDER)")
    version, system, machine = _python_and_platform(python)
    listed = json.loads(_run(python, "-m", "pip", "list", "--format=json", "--exclude-editable", "--disable-pip-version-check"))
    packages = {canonical(p["name"]): p["version"] for p in listed}
    tooling = sorted(TOOLING & packages.keys())
    required_by = parse_required_by(_run(python, "-m", "pip", "show", *tooling)) if tooling else {}
    return Environment(version, f"{system} {machine}", packages, required_by)


def _python_and_platform(python: Path) -> tuple[str, str, str]:
    """("3.11", "Linux", "x86_64") of the given interpreter."""
    out = _run(python, "-c", "import platform, sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}', "
                             "platform.system(), platform.machine())")
    version, system, machine = out.split()
    return version, system, machine


def parse_required_by(show: str) -> dict[str, frozenset[str]]:
    """Package -> the installed packages that require it, from `pip show` output (which evaluates markers)."""
    result, name = {}, None
    for line in show.splitlines():
        key, _, value = line.partition(":")
        if key == "Name":
            name = canonical(value.strip())
        elif key == "Required-by" and name:
            result[name] = frozenset(canonical(n.strip()) for n in value.split(",") if n.strip())
    return result


def pins(env: Environment, course: str) -> dict[str, str]:
    """Name -> version to pin: everything the environment has, less what Binder must not or need not install."""
    left_out = ALWAYS_LEFT_OUT | {course} | {n for n in env.packages if CUDA_ONLY.match(n)}
    result = {}
    for name, version in sorted(env.packages.items()):
        if name in left_out or name in TOOLING:
            continue
        if "+" in version:
            if name not in PYTORCH_INDEX_PACKAGES:
                raise SystemExit(f"{name}=={version} has a local version label, which no public index serves: install "
                                 f"{name} from PyPI in that environment, then pin again")
            version = version.split("+")[0]
        result[name] = version
    for name in sorted(TOOLING & env.packages.keys()):
        if env.required_by.get(name, frozenset()) & result.keys():  # a runtime dependency, not the venv's own tool
            result[name] = env.packages[name]
    return dict(sorted(result.items()))


def header(current: str) -> list[str]:
    """The file's own lines that are not pins (comments, blank lines, pip options), with the CPU index among them."""
    lines = [line.rstrip() for line in current.splitlines()]
    kept = [line for line in lines if not line.startswith(MARK) and (not line or line.startswith(("#", "-")))]
    while kept and not kept[-1]:
        kept.pop()
    if CPU_INDEX not in kept:  # Binder's torch comes from there, CPU-only
        kept.append(CPU_INDEX)
    return kept


def render(current: str, env: Environment, course: str) -> str:
    """binder/requirements.txt pinned to `env`, keeping the header of the `current` file."""
    mark = f"{MARK} from Python {env.python} on {env.platform}. Regenerate them, do not edit them (see above)."
    lines = [*header(current), mark, *(f"{name}=={version}" for name, version in pins(env, course).items())]
    return "\n".join(lines) + "\n"


def ranges(current: str, project: dict) -> str:
    """The header of `current`, then pyproject.toml's dependencies and "notebooks" extra as they are: input for new pins."""
    specs = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["notebooks"]]
    return "\n".join([*header(current), *specs]) + "\n"


def read_pins(text: str) -> tuple[dict[str, str], str | None, list[str]]:
    """(name -> version, the mark line, requirement lines that are not exact pins) of a requirements file."""
    found, mark, loose = {}, None, []
    for line in (line.strip() for line in text.splitlines()):
        match = PIN_LINE.match(line)
        if match:
            found[canonical(match["name"])] = match["version"]
        elif line.startswith(MARK):
            mark = line
        elif line and not line.startswith(("#", "-")):
            loose.append(line)
    return found, mark, loose


def differences(current: str, wanted: str) -> list[str]:
    """What differs between the file as it is and as the environment would write it, one line a difference."""
    have, have_mark, loose = read_pins(current)
    want, want_mark, _ = read_pins(wanted)
    out = [f"{line!r}: not an exact pin (name==version)" for line in loose]
    if have_mark != want_mark:
        out.append(f"the pins say {have_mark!r}, the environment would write {want_mark!r}")
    for name in sorted(have.keys() | want.keys()):
        if name not in want:
            out.append(f"{name}: pinned {have[name]}, not in the environment")
        elif name not in have:
            out.append(f"{name}: {want[name]} in the environment, not pinned exactly")
        elif have[name] != want[name]:
            out.append(f"{name}: pinned {have[name]}, the environment has {want[name]}")
    if not out and current != wanted:
        out.append("the pins agree but the file's layout does not (comments, order or options)")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: write, check or print the ranges of binder/requirements.txt."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from-venv", type=Path, metavar="PATH", help="the virtual environment to pin, e.g. .binder-venv")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if the file differs from the environment")
    p.add_argument("--ranges", action="store_true", help="print the file with pyproject.toml's ranges instead of pins")
    p.add_argument("--requirements", type=Path, default=REQUIREMENTS, help="the file to write or check")
    args = p.parse_args(argv)
    current = args.requirements.read_text(encoding="utf-8")
    if args.ranges:
        sys.stdout.write(ranges(current, pyproject()))
        return 0
    if args.from_venv is None:
        p.error("--from-venv PATH is required (or --ranges)")
    env = read_environment(args.from_venv)
    wanted = render(current, env, course_package())
    if args.check:
        diff = differences(current, wanted)
        if diff:
            print(f"{args.requirements} is not what {args.from_venv} has installed:", *diff, sep="\n  ", file=sys.stderr)
            print(f"If the environment is right, write its pins: python tools/pin_binder.py --from-venv {args.from_venv}",
                  file=sys.stderr)
            return 1
        print(f"{args.requirements}: {len(read_pins(current)[0])} pins, all as installed in {args.from_venv}")
        return 0
    args.requirements.write_text(wanted, encoding="utf-8")
    left_out = sorted(env.packages.keys() - read_pins(wanted)[0].keys())
    print(f"{args.requirements}: {len(read_pins(wanted)[0])} pins from {args.from_venv} (Python {env.python}, {env.platform}); "
          f"left out: {', '.join(left_out) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
