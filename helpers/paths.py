"""Where the course keeps data, runs and recorded results."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "alexnet-cifar10"


def project_folder(name: str) -> Path:
    """`name/` of a checkout (editable install), else ~/.cache/alexnet-cifar10/name (default_root, runs_dir, results_dir)."""
    base = CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else CACHE
    return base / name


def runs_dir() -> Path:
    """Folder for checkpoints and run records: `runs/` of a checkout, else ~/.cache/alexnet-cifar10/runs (notebook 03)."""
    return project_folder("runs")


def results_dir() -> Path:
    """Folder of recorded results (JSON): `results/` of a checkout, else ~/.cache/alexnet-cifar10/results (notebook 03)."""
    return project_folder("results")


def course_checkpoint() -> Path:
    """Where notebook 03 saves the course model and notebook 04 loads it (notebooks 03, 04)."""
    return runs_dir() / "course" / "checkpoint.pt"
