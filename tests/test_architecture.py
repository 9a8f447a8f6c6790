"""helpers/models/summary.py: the layer table and the preset table (notebook 02)."""

from __future__ import annotations

import pytest

from helpers.models import build_model, count_parameters, preset_table, summary_frame


def test_summary_frame_matches_model():
    model = build_model("cifar_alexnet_small")
    frame = summary_frame(model)
    assert list(frame.columns) == ["layer", "type", "output_shape", "params", "flops"]
    assert frame["params"].sum() == count_parameters(model)
    assert frame["output_shape"].iloc[-1] == "10"
    assert frame["output_shape"].iloc[0] == "32x32x32"  # first conv keeps 32x32 with 32 channels


def test_preset_table_counts():
    table = preset_table(["cifar_alexnet_small", "cifar_alexnet"])
    assert list(table.index) == ["cifar_alexnet_small", "cifar_alexnet"]
    assert table.loc["cifar_alexnet", "params"] == count_parameters(build_model("cifar_alexnet"))
    assert table.loc["cifar_alexnet", "input"] == "32x32"
    assert 0 < table.loc["cifar_alexnet", "fc_share_of_params"] < 1
    assert table.loc["cifar_alexnet", "flops"] > table.loc["cifar_alexnet_small", "flops"] > 0
    with pytest.raises(ValueError, match="unknown preset"):
        preset_table(["alexnet_huge"])


def test_preset_table_lists_every_preset_and_every_unknown_name():
    table = preset_table()
    assert table.loc["upstream_3conv", "input"] == "227x227"
    assert table.loc["upstream_3conv", "conv_layers"] == 3
    assert table.loc["upstream_3conv", "params"] > table.loc["cifar_alexnet", "params"]
    with pytest.raises(ValueError, match="'alexnet_huge', 'tiny'"):
        preset_table(["cifar_alexnet", "alexnet_huge", "tiny"])
