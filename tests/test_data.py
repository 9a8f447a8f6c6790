"""Loading, checking, caching and augmenting CIFAR-10 (helpers/data.py), on tiny synthetic fixtures."""

from __future__ import annotations

import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import PER_BATCH, make_cifar_folder, real_cifar_root, write_batch

from helpers import data as D
from helpers.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CLASSES,
    CIFAR10Error,
    GpuLoader,
    classic_loader,
    crop_at,
    load_cifar10,
    normalize,
    random_crop,
    random_flip,
)


def test_load_reads_both_splits(cifar_root):
    data = load_cifar10(cifar_root, download=False)
    assert data.train_images.shape == (5 * PER_BATCH, 3, 32, 32)
    assert data.test_images.shape == (PER_BATCH, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.classes == CLASSES and len(data.classes) == 10
    # Row layout: 1024 red, then green, then blue values, each row-major 32x32.
    with open(cifar_root / D.FOLDER / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert torch.equal(data.train_images[0, 1].flatten(), torch.from_numpy(raw["data"][0, 1024:2048]))
    assert data.train_labels[:PER_BATCH].tolist() == raw["labels"]


def test_root_from_environment(cifar_root, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(cifar_root))
    assert D.default_root() == cifar_root
    assert load_cifar10(download=False).root == cifar_root


def test_second_load_uses_cache_and_cache_follows_changes(cifar_root):
    first = load_cifar10(cifar_root, download=False)
    cache = cifar_root / D.CACHE_FILE
    assert cache.is_file()
    second = load_cifar10(cifar_root, download=False)
    assert torch.equal(first.train_images, second.train_images)
    # Rewriting a batch changes its stamp: the stale cache must not be used.
    new = np.full((PER_BATCH, 3072), 7, dtype=np.uint8)
    write_batch(cifar_root / D.FOLDER / "test_batch", new, [3] * PER_BATCH)
    third = load_cifar10(cifar_root, download=False)
    assert (third.test_images == 7).all() and (third.test_labels == 3).all()


def test_missing_data_offline_names_folder_and_fixes(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.delenv("CIFAR10_MIRRORS", raising=False)
    monkeypatch.setattr("helpers.download.urlopen", offline)
    monkeypatch.setattr("helpers.download._sleep", lambda seconds: None)
    with pytest.raises(CIFAR10Error) as err:
        load_cifar10(tmp_path / "empty")
    text = str(err.value)
    assert str(tmp_path / "empty" / D.FOLDER) in text
    assert "download failed" in text and "CIFAR10_ROOT" in text and "download=True" in text
    assert f"{D.URL}: connection failed: [Errno -2] Name or service not known [5 attempts]" in text
    assert "CIFAR10_MIRRORS" in text


def test_missing_data_without_download(tmp_path):
    with pytest.raises(CIFAR10Error, match="download=False"):
        load_cifar10(tmp_path, download=False)


def test_missing_split_is_named(cifar_root):
    (cifar_root / D.FOLDER / "test_batch").unlink()
    with pytest.raises(CIFAR10Error, match="incomplete: missing test_batch"):
        load_cifar10(cifar_root, download=False)


def test_truncated_batch(cifar_root):
    path = cifar_root / D.FOLDER / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CIFAR10Error, match="data_batch_3: cannot be read as a CIFAR-10 batch.*truncated or corrupt"):
        load_cifar10(cifar_root, download=False, cache=False)


def test_garbage_batch(cifar_root):
    (cifar_root / D.FOLDER / "data_batch_2").write_bytes(b"this is not a pickle at all" * 10)
    with pytest.raises(CIFAR10Error, match="data_batch_2: cannot be read"):
        load_cifar10(cifar_root, download=False, cache=False)


def test_wrong_shape(cifar_root):
    write_batch(cifar_root / D.FOLDER / "data_batch_1", np.zeros((PER_BATCH, 100), np.uint8), [0] * PER_BATCH)
    with pytest.raises(CIFAR10Error, match=r"data_batch_1: 'data' has shape \(20, 100\)"):
        load_cifar10(cifar_root, download=False, cache=False)


def test_labels_out_of_range(cifar_root):
    write_batch(cifar_root / D.FOLDER / "test_batch", np.zeros((PER_BATCH, 3072), np.uint8), [12] * PER_BATCH)
    with pytest.raises(CIFAR10Error, match=r"test_batch: labels must lie in 0..9, found \[12\]"):
        load_cifar10(cifar_root, download=False, cache=False)


def test_label_count_mismatch(cifar_root):
    write_batch(cifar_root / D.FOLDER / "data_batch_4", np.zeros((PER_BATCH, 3072), np.uint8), [1] * 5)
    with pytest.raises(CIFAR10Error, match="data_batch_4: 20 images but 5 labels"):
        load_cifar10(cifar_root, download=False, cache=False)


def test_wrong_class_names(cifar_root):
    with open(cifar_root / D.FOLDER / D.META_FILE, "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(1000)]}, f, protocol=2)
    with pytest.raises(CIFAR10Error, match="expected the 10 CIFAR-10 classes"):
        load_cifar10(cifar_root, download=False, cache=False)


# ---------------------------------------------------------------- augmentation


def test_crop_is_a_shifted_window_of_the_reflect_padded_image():
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen)
    dx, dy = torch.randint(0, 9, (64,), generator=gen), torch.randint(0, 9, (64,), generator=gen)
    out = crop_at(images, dx, dy, padding=4)
    padded = F.pad(images.float(), (4, 4, 4, 4), mode="reflect").to(torch.uint8)
    for i in range(64):
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32])
    # Offset (4, 4) is the identity.
    centre = torch.full((64,), 4)
    assert torch.equal(crop_at(images, centre, centre), images)


def test_random_crop_uses_several_offsets_and_keeps_dtype():
    images = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32).repeat(200, 3, 1, 1)
    out = random_crop(images, 4, torch.Generator().manual_seed(0))
    assert out.dtype == images.dtype and out.shape == images.shape
    assert len({tuple(o[0, 0, :2].tolist()) for o in out}) > 20


def test_flip_flips_exactly_the_chosen_images():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    out = random_flip(images, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, im.flip(2)) for o, im in zip(out, images)]
    same = [torch.equal(o, im) for o, im in zip(out, images)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 30 < sum(flipped) < 70


def test_normalize_matches_the_formula():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x), (x.float() / 255 - mean) / std)
    assert normalize(x, size=227).shape == (4, 3, 227, 227)
    assert normalize(x, channels_last=True).is_contiguous(memory_format=torch.channels_last)


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_labels_follow_their_images():
    # Each image is filled with its own index: after shuffle, crop and flip it must still
    # carry that index everywhere and its label must be the original one.
    n = 50
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).repeat(1, 3, 32, 32)
    labels = torch.arange(n) % 10
    loader = GpuLoader(images, labels, 16, train=True, seed=3, drop_last=False)
    loader.size = None
    seen = []
    for _x, y in loader:
        seen.extend(y.tolist())
    raw_images, raw_labels = loader.epoch_data(0)
    for img, lab in zip(raw_images, raw_labels):
        idx = int(img[0, 0, 0])
        assert (img == idx).all() and lab == labels[idx]
    assert sorted(seen) == sorted(labels.tolist())


def test_loader_is_reproducible_and_epochs_differ():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (100,))
    a = GpuLoader(images, labels, 25, seed=7)
    b = GpuLoader(images, labels, 25, seed=7)
    first_a, first_b = _epoch(a), _epoch(b)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(first_a, first_b))
    second_a = _epoch(a)
    assert not torch.equal(first_a[0][0], second_a[0][0])
    # Resuming at epoch 1 gives epoch 1's batches.
    c = GpuLoader(images, labels, 25, seed=7)
    c.epoch = 1
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(second_a, _epoch(c)))
    other = _epoch(GpuLoader(images, labels, 25, seed=8))
    assert not torch.equal(first_a[0][0], other[0][0])


def test_loader_limit_batches_and_test_mode():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (100,))
    train = GpuLoader(images, labels, 32, limit=70)
    assert len(train) == 2 and train.num_samples == 64  # drop_last while training
    test = GpuLoader(images, labels, 32, train=False, limit=70)
    batches = _epoch(test)
    assert len(test) == 3 and sum(len(y) for _, y in batches) == 70
    assert torch.equal(torch.cat([y for _, y in batches]), labels[:70])  # no shuffle at test time
    torch.testing.assert_close(batches[0][0], normalize(images[:32]))  # no augmentation at test time
    x, _ = next(iter(GpuLoader(images, labels, 8, size=64, channels_last=True)))
    assert x.shape == (8, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"), ({"limit": 0}, "limit"),
])
def test_loader_rejects_bad_arguments(kwargs, match):
    images = torch.zeros((10, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(ValueError, match=match):
        GpuLoader(images, torch.zeros(10, dtype=torch.long), **{"batch_size": 4, **kwargs})
    with pytest.raises(ValueError, match="uint8"):
        GpuLoader(images.float(), torch.zeros(10, dtype=torch.long))


def test_classic_loader_resize_227(cifar_root):
    data = load_cifar10(cifar_root, download=False)
    x, y = next(iter(classic_loader(data.train_images, data.train_labels, 4, size=227, shuffle=False)))
    assert x.shape == (4, 3, 227, 227) and y.tolist() == data.train_labels[:4].tolist()
    x32, _ = next(iter(classic_loader(data.train_images, data.train_labels, 4, shuffle=False)))
    torch.testing.assert_close(x32, normalize(data.train_images[:4]), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(real_cifar_root() is None, reason="needs the prepared CIFAR-10 copy in $CIFAR10_ROOT")
def test_real_cifar10_copy_loads():
    data = load_cifar10(real_cifar_root(), download=False)
    assert data.train_images.shape == (50000, 3, 32, 32) and data.test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(data.train_labels).tolist() == [5000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    mean = data.train_images.float().mean(dim=(0, 2, 3)) / 255
    torch.testing.assert_close(mean, torch.tensor(CIFAR10_MEAN), atol=0.01, rtol=0)


def test_fixture_helper_is_deterministic(tmp_path):
    a = load_cifar10(make_cifar_folder(tmp_path / "a"), download=False, cache=False)
    b = load_cifar10(make_cifar_folder(tmp_path / "b"), download=False, cache=False)
    assert torch.equal(a.train_images, b.train_images)
