"""Reduced mode: one switch that shrinks epochs and data so the whole course fits CI.

On when `ALEXNET_REDUCED` is 1/true/yes, off when it is 0/false/no, else it follows `CI` (GitHub Actions, `.ci/run`).
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

# What reduced mode keeps of any training run (a recipe, an ablation variant): every code path, little data.
# 1024 images in batches of 64 is 16 steps an epoch, 32 in all: enough to leave chance behind.
REDUCED = {"epochs": 2, "train_limit": 1024, "test_limit": 500, "batch_size": 64}

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
    """True when work should shrink for CI: ALEXNET_REDUCED wins, else CI (notebooks 05, 06)."""
    forced = env_flag("ALEXNET_REDUCED")
    return forced if forced is not None else bool(env_flag("CI"))


def is_reduced(reduced: bool | None = None) -> bool:
    """`reduced` itself when given, else whether reduced mode is on: the rule for a `reduced=None` argument (get_recipe)."""
    return reduced_mode() if reduced is None else bool(reduced)


def is_full(full: bool | None = None) -> bool:
    """`full` itself when given, else the opposite of reduced mode: the rule for a `full=None` argument (notebook 05's sweeps)."""
    return not is_reduced(None if full is None else not full)


def pick(full: T, reduced: T) -> T:
    """Return `reduced` in reduced mode, else `full` (notebook 01)."""
    return reduced if reduced_mode() else full


def mode_banner() -> str:
    """A line to print at the top of every notebook and CLI run saying which mode is on (every notebook's start(), the CLI)."""
    if reduced_mode():
        return ("REDUCED MODE: few epochs on a data subset; the numbers below are smoke-test values, not results "
                "(ALEXNET_REDUCED=0 switches to full mode)")
    return "full mode: full data and epochs"
