"""Committed outputs read right without a kernel: progress bars finished, every interactive explorer with a static view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from static_outputs import WIDGET, finish_progress_bars, finished_bar, unfinished_bars

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def widget_output(text: str, model: str = "abc") -> dict:
    return {"output_type": "display_data", "metadata": {},
            "data": {WIDGET: {"model_id": model, "version_major": 2, "version_minor": 0}, "text/plain": [text]}}


def test_a_bar_is_read_and_written_finished():
    assert finished_bar("epoch 1/10:   0%|          | 0/175 [00:00<?, ?batch/s]") == "epoch 1/10: 100%|██████████| 175/175"
    assert finished_bar("  3%|▎         | 2/64 [00:01<00:30, 2.01it/s, loss=2.3]") == "100%|██████████| 64/64"
    assert finished_bar("timing: 100%|██████████| 12/12 [00:09<00:00]") == "timing: 100%|██████████| 12/12"
    assert finished_bar("HBox(children=(Label(value='index'), IntSlider(value=0)))") is None  # an explorer, not a bar


def test_finishing_replaces_bars_and_leaves_other_widgets_alone():
    explorer = widget_output("interactive(children=(IntSlider(value=0, description='index'),))", "e")
    nb = {"cells": [{"cell_type": "code", "outputs": [widget_output("epoch 1/2:   0%|          | 0/32 [00:00<?, ?batch/s]"),
                                                       explorer, {"output_type": "stream", "text": "done\n"}]}]}
    assert unfinished_bars(nb) == ["cell 0: epoch 1/2:   0%|          | 0/32 [00:00<?, ?batch/s]"]
    assert finish_progress_bars(nb) == 1 and unfinished_bars(nb) == []
    outputs = nb["cells"][0]["outputs"]
    assert outputs[0]["data"] == {"text/plain": "epoch 1/2: 100%|██████████| 32/32"}
    assert outputs[1] == explorer and outputs[2]["text"] == "done\n"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_progress_bars_read_as_finished(path):
    assert unfinished_bars(json.loads(path.read_text(encoding="utf-8"))) == [], "run python tools/static_outputs.py"
