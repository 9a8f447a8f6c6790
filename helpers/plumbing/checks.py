"""Input checks shared by every module: one wording for "unknown name" and "wrong type", and the errors raised."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, out of memory, a mismatched checkpoint); the message says why."""


def is_int(value) -> bool:
    """True for a whole number that is not a bool (README, "Recipes")."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """True for a real number that is not a bool (README, "Recipes")."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def at_least(knob: str, value, low: int) -> None:
    """Raise a ValueError "knob must be at least low, got value" unless value >= low (evaluation and loader checks)."""
    if value < low:
        raise ValueError(f"{knob} must be at least {low}, got {value}")


def one_of(knob: str, value, allowed: Iterable) -> None:
    """Raise a ValueError naming `knob` and the allowed values unless `value` is one of them (recipe, model and loss checks)."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{knob}={value!r} is not known; choose one of {', '.join(map(str, allowed))}")


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """`table[name]`, or a ValueError "unknown <kind> 'name'; choose one of ..." (build_model, get_recipe, variant_by_name)."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(table)}") from None


def unknown_names(kind: str, names: Iterable[str], known: Iterable[str]) -> None:
    """Raise one ValueError listing every name of `names` not in `known` (notebook 05's select_variants and variant_recipe)."""
    known = list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
