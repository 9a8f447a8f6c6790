"""Statistics, timings, tables and the double-softmax demo of helpers/explore.py (notebooks 01, 02)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_cifar_folder

from helpers.explore import (
    bytes_per_image,
    channel_stats,
    double_softmax_sweep,
    loss_and_gradient,
    measure_throughput,
    official_md5_matches,
    pixel_histogram,
    preset_table,
    softmax_ce_floor,
    summary_frame,
)
from helpers.models import build_model, count_parameters


def random_images(n: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_channel_stats_match_direct_computation_across_chunks():
    images = random_images()
    x = images.double() / 255
    mean, std = channel_stats(images, chunk=3)  # 3 chunks, the last one short
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(x.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-12)


def test_channel_stats_constant_channels():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[:, 1] = 255
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.0, 1.0, 0.0)) and std == pytest.approx((0.0, 0.0, 0.0))


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.uint8),
                                 torch.zeros(0, 3, 4, 4, dtype=torch.uint8)])
def test_image_functions_reject_bad_input(bad):
    with pytest.raises(ValueError, match="images"):
        channel_stats(bad)
    with pytest.raises(ValueError, match="images"):
        pixel_histogram(bad)


def test_pixel_histogram_counts_every_value_per_channel():
    images = random_images()
    hist = pixel_histogram(images)
    assert hist.shape == (3, 256)
    assert (hist.sum(1) == 7 * 5 * 4).all()
    for c in range(3):
        assert hist[c, 17] == int((images[:, c] == 17).sum())


def test_md5_check_on_a_non_official_copy(tmp_path):
    root = make_cifar_folder(tmp_path)
    matches = official_md5_matches(root)
    assert set(matches) == {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                            "test_batch", "batches.meta"}
    assert not any(matches.values())
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        official_md5_matches(tmp_path / "nowhere")


def test_measure_throughput_counts_images_and_stops_at_max():
    batches = [(torch.zeros(4, 3, 2, 2), torch.zeros(4)) for _ in range(5)]
    result = measure_throughput(batches)
    assert result["images"] == 20 and result["seconds"] > 0
    assert result["images_per_s"] == pytest.approx(20 / result["seconds"])
    assert measure_throughput(batches, max_images=6)["images"] == 8  # whole batches
    with pytest.raises(ValueError, match="no images"):
        measure_throughput([])
    with pytest.raises(ValueError, match="max_images"):
        measure_throughput(batches, max_images=0)


def test_bytes_per_image():
    assert bytes_per_image(32, dtype=torch.uint8) == 3072
    assert bytes_per_image(227) == 3 * 227 * 227 * 4
    with pytest.raises(ValueError):
        bytes_per_image(0)


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


def test_softmax_ce_floor_is_reached_by_confident_correct_logits():
    assert softmax_ce_floor(10) == pytest.approx(-math.log(math.e / (math.e + 9)))
    assert softmax_ce_floor(10) == pytest.approx(1.4612, abs=1e-4)
    logits = torch.tensor([[100.0] + [0.0] * 9])
    loss, _ = loss_and_gradient("softmax_ce", logits, torch.tensor([0]))
    assert loss == pytest.approx(softmax_ce_floor(10), abs=1e-5)
    with pytest.raises(ValueError):
        softmax_ce_floor(1)


def test_loss_and_gradient_matches_closed_form():
    # CE gradient w.r.t. logits is softmax - onehot; uniform logits: each row has norm sqrt((C-1)/C)
    logits = torch.zeros(3, 10)
    loss, grad = loss_and_gradient("ce", logits, torch.tensor([0, 1, 2]))
    assert loss == pytest.approx(math.log(10))
    assert grad == pytest.approx(math.sqrt(0.9), rel=1e-5)
    with pytest.raises(ValueError, match="logits"):
        loss_and_gradient("ce", torch.zeros(10), torch.tensor([0]))


def test_double_softmax_sweep_squashes_loss_and_gradient():
    frame = double_softmax_sweep([0.0, 10.0], batch=64)
    assert len(frame) == 2 * 2 * 3
    assert frame.loc[frame["scale"] == 0, "mean_top_prob"].iloc[0] == pytest.approx(0.1)  # uniform over 10 classes
    assert frame.loc[frame["scale"] == 10, "mean_top_prob"].iloc[0] > 0.8
    pick = frame.set_index(["scale", "labels", "loss_kind"])
    # confidently wrong: CE keeps a large gradient, CE on softmax outputs almost none and a bounded loss
    assert pick.loc[(10.0, "random", "ce"), "grad_norm"] > 10 * pick.loc[(10.0, "random", "softmax_ce"), "grad_norm"]
    assert pick.loc[(10.0, "random", "softmax_ce"), "loss"] <= math.log(math.e + 9) + 1e-5
    assert np.all(frame.loc[frame["loss_kind"] == "softmax_ce", "loss"] >= softmax_ce_floor(10) - 1e-6)
    with pytest.raises(ValueError, match="scales"):
        double_softmax_sweep([-1.0])
