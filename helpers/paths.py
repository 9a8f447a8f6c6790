"""Where the course keeps data, runs and recorded results."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "alexnet-cifar10"


def project_folder(name: str) -> Path:
    """`name/` at the top of a checkout (editable install), else ~/.cache/alexnet-cifar10/name (notebook 01)."""
    base = CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else CACHE
    return base / name
