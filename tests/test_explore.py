"""helpers/data/explore.py: image statistics, the md5 check, loader timings and memory per image (notebook 01)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_cifar_folder
from helpers.data import bytes_per_image, channel_stats, measure_throughput, official_md5_matches, pixel_histogram


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
