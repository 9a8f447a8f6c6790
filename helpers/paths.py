"""Where the course keeps data, runs and recorded results."""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "alexnet-cifar10"
# Colab keeps /content for the whole session and shows it in its file browser; ~/.cache is hidden there.
COLAB = Path("/content/alexnet-cifar10")


def project_folder(name: str) -> Path:
    """`name/` of a checkout, else of /content/alexnet-cifar10 on Colab or ~/.cache/alexnet-cifar10 (default_root, runs_dir)."""
    if (CHECKOUT / "pyproject.toml").is_file():
        return CHECKOUT / name
    return (COLAB if "google.colab" in sys.modules else CACHE) / name


def runs_dir() -> Path:
    """Folder for checkpoints and run records: `runs/` of a checkout, else ~/.cache/alexnet-cifar10/runs (notebook 03)."""
    return project_folder("runs")


def results_dir() -> Path:
    """Folder of recorded results (JSON): `results/` of a checkout, else ~/.cache/alexnet-cifar10/results (notebook 03)."""
    return project_folder("results")


def course_checkpoint() -> Path:
    """Where notebook 03 saves the course model and notebook 04 loads it (notebooks 03, 04)."""
    return runs_dir() / "course" / "checkpoint.pt"
