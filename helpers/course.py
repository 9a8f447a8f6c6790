"""What every notebook sets up first: the device and seed, reduced mode, and the folders the course writes to.

Reduced mode shrinks epochs and data so the whole course fits CI: on when `ALEXNET_REDUCED` is 1/true/yes, off when it
is 0/false/no, else it follows `CI` (set by GitHub Actions, Jenkins, `.ci/run` and most CI systems, to many values).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from .device import describe_device, pick_device

T = TypeVar("T")

# What reduced mode keeps of any training run (a recipe, an ablation variant): every code path, little data.
# 1024 images in batches of 64 is 16 steps an epoch, 32 in all: enough to leave chance behind.
REDUCED = {"epochs": 2, "train_limit": 1024, "eval_limit": 500, "batch_size": 64}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_flag(name: str) -> bool | None:
    """The truth value of environment variable `name` (1/true/yes/on or 0/false/no/off), None if unset (conftest.py)."""
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {name}={value!r} is not a truth value; use 1/true/yes or 0/false/no")


def reduced_mode() -> bool:
    """True when work should shrink for CI: ALEXNET_REDUCED wins, else whether CI is set (notebooks 05, 06)."""
    forced = env_flag("ALEXNET_REDUCED")
    if forced is not None:
        return forced
    # CI systems set CI to "true", "1", "jenkins", "woodpecker", ...: anything but an explicit no means "in CI".
    return os.environ.get("CI", "").strip().lower() not in _FALSE


def is_reduced(reduced: bool | None = None) -> bool:
    """`reduced` itself when given, else whether reduced mode is on: the rule for a `reduced=None` argument (get_recipe)."""
    return reduced_mode() if reduced is None else bool(reduced)


def is_full(full: bool | None = None) -> bool:
    """`full` itself when given, else the opposite of reduced mode: the rule for a `full=None` argument (the sweep)."""
    return not reduced_mode() if full is None else bool(full)


def pick(full: T, reduced: T) -> T:
    """Return `reduced` in reduced mode, else `full` (every notebook)."""
    return reduced if reduced_mode() else full


def mode_banner() -> str:
    """A line to print at the top of every notebook and command-line run saying which mode is on."""
    if reduced_mode():
        return ("REDUCED MODE: few epochs on a data subset; the numbers below are smoke-test values, not results "
                "(ALEXNET_REDUCED=0 switches to full mode)")
    return "full mode: full data and epochs"


CHECKOUT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "alexnet-cifar10"
# Colab keeps /content for the whole session and shows it in its file browser; ~/.cache is hidden there.
COLAB = Path("/content/alexnet-cifar10")


def project_folder(name: str) -> Path:
    """`name/` of a checkout, else of /content/alexnet-cifar10 on Colab or ~/.cache/alexnet-cifar10 (data, runs)."""
    if (CHECKOUT / "pyproject.toml").is_file():
        return CHECKOUT / name
    return (COLAB if "google.colab" in sys.modules else CACHE) / name


def shown_path(path: Path) -> str:
    """A path as a reader should see it: relative to the checkout when inside it (notebook 04's course_model)."""
    return path.relative_to(CHECKOUT).as_posix() if path.is_relative_to(CHECKOUT) else str(path)


def runs_dir() -> Path:
    """Folder for checkpoints and run records: `runs/` of a checkout, else ~/.cache/alexnet-cifar10/runs (notebook 03)."""
    return project_folder("runs")


def results_dir() -> Path:
    """Folder of recorded results (JSON): `results/` of a checkout, else ~/.cache/alexnet-cifar10/results (notebook 06)."""
    return project_folder("results")


def course_checkpoint() -> Path:
    """Where notebook 03 saves the course model and notebook 04 looks for it, one file per mode (notebooks 03, 04)."""
    # A reduced run (pytest, a smoke test) has a file of its own: it must never replace a reader's full-mode model.
    return runs_dir() / "course" / ("checkpoint-reduced.pt" if reduced_mode() else "checkpoint.pt")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and GPU) so runs repeat (notebook 03)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def start(seed: int = 0) -> torch.device:
    """Pick the device, seed everything, set plot defaults and print what this run is (every notebook)."""
    import matplotlib.pyplot as plt

    device = pick_device()
    seed_everything(seed)
    enable_colab_widgets()
    plt.rcParams.update({"figure.dpi": 90, "axes.spines.top": False, "axes.spines.right": False})
    print(describe_device(device))
    print(mode_banner())
    if device.type == "cpu":
        print("No GPU found: the course picks its CPU recipe. On Colab: Runtime > Change runtime type > GPU.")
    return device


def enable_colab_widgets() -> bool:
    """On Colab, switch on its custom widget manager so ipywidgets 8 controls render; elsewhere do nothing (start)."""
    if "google.colab" not in sys.modules:
        return False
    # Colab's default manager knows only the ipywidgets release Colab ships; the custom one loads the
    # JavaScript of the installed ipywidgets (8 here), without which the controls do not render.
    from google.colab import output

    output.enable_custom_widget_manager()
    return True
