"""Reduced-mode switch (helpers/course.py) and device helper (helpers/device.py)."""

from __future__ import annotations

import pytest
import torch

from helpers.course import mode_banner, pick, reduced_mode
from helpers.device import available_devices, describe_device, pick_device


@pytest.mark.parametrize("ci, ours, expected", [
    (None, None, False), ("true", None, True), ("1", None, True), ("false", None, False),
    ("true", "0", False), (None, "1", True), ("", "yes", True), ("true", "no", False),
])
def test_reduced_mode_switch(monkeypatch, ci, ours, expected):
    for name, value in (("CI", ci), ("ALEXNET_REDUCED", ours)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert reduced_mode() is expected
    assert pick("full", "small") == ("small" if expected else "full")
    assert ("REDUCED MODE" in mode_banner()) is expected


def test_bad_switch_value_is_explained(monkeypatch):
    monkeypatch.setenv("ALEXNET_REDUCED", "maybe")
    with pytest.raises(ValueError, match="ALEXNET_REDUCED='maybe' is not a truth value"):
        reduced_mode()


def test_device_choice_and_description():
    kinds = available_devices()
    assert kinds[-1] == "cpu"
    assert pick_device().type == kinds[0]
    assert pick_device("cpu") == torch.device("cpu")
    line = describe_device("cpu")
    assert line.startswith("device=cpu | ") and f"torch {torch.__version__}" in line and "CPU threads" in line
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is not available.*cpu"):
            pick_device("cuda")
