"""Augmentation, the device-resident loader and the classic DataLoader path (helpers/data/batches.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import real_cifar_root
from helpers.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DeviceLoader,
    classic_loader,
    load_cifar10,
    normalize,
    random_crop,
    random_flip,
)
from helpers.data.batches import crop_at
from helpers.training import get_recipe, recipe_loaders


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
    loader = DeviceLoader(images, labels, 16, shuffle=True, seed=3, drop_last=False)
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
    a = DeviceLoader(images, labels, 25, seed=7)
    b = DeviceLoader(images, labels, 25, seed=7)
    first_a, first_b = _epoch(a), _epoch(b)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(first_a, first_b))
    second_a = _epoch(a)
    assert not torch.equal(first_a[0][0], second_a[0][0])
    # Resuming at epoch 1 gives epoch 1's batches.
    c = DeviceLoader(images, labels, 25, seed=7)
    c.set_epoch(1)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(second_a, _epoch(c)))
    other = _epoch(DeviceLoader(images, labels, 25, seed=8))
    assert not torch.equal(first_a[0][0], other[0][0])


def test_loader_limit_batches_and_test_mode():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (100,))
    train = DeviceLoader(images, labels, 32, limit=70)
    assert len(train) == 2 and train.num_samples == 64  # drop_last while training
    test = DeviceLoader(images, labels, 32, shuffle=False, limit=70)
    batches = _epoch(test)
    assert len(test) == 3 and sum(len(y) for _, y in batches) == 70
    assert torch.equal(torch.cat([y for _, y in batches]), labels[:70])  # no shuffle at test time
    torch.testing.assert_close(batches[0][0], normalize(images[:32]))  # no augmentation at test time
    x, _ = next(iter(DeviceLoader(images, labels, 8, size=64, channels_last=True)))
    assert x.shape == (8, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"), ({"limit": 0}, "limit"),
])
def test_loader_rejects_bad_arguments(kwargs, match):
    images = torch.zeros((10, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(ValueError, match=match):
        DeviceLoader(images, torch.zeros(10, dtype=torch.long), **{"batch_size": 4, **kwargs})
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), torch.zeros(10, dtype=torch.long))


def test_classic_loader_resize_227(cifar_root):
    data = load_cifar10(cifar_root, download=False)
    x, y = next(iter(classic_loader(data.train_images, data.train_labels, 4, size=227, shuffle=False)))
    assert x.shape == (4, 3, 227, 227) and y.tolist() == data.train_labels[:4].tolist()
    x32, _ = next(iter(classic_loader(data.train_images, data.train_labels, 4, shuffle=False)))
    torch.testing.assert_close(x32, normalize(data.train_images[:4]), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(real_cifar_root() is None, reason="needs the prepared CIFAR-10 copy in $CIFAR10_ROOT")


def test_set_epoch_positions_the_next_pass_and_rejects_nonsense():
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(50) % 10
    loader = DeviceLoader(images, labels, 10, seed=1)
    first, second = _epoch(loader), _epoch(loader)  # each pass is the next epoch
    loader.set_epoch(0)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, _epoch(loader)))
    assert not torch.equal(first[0][0], second[0][0])
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ValueError, match="epoch must be a whole number"):
            loader.set_epoch(bad)


def test_recipe_loaders_follow_the_recipe(cifar_root):
    data = load_cifar10(cifar_root, download=False)
    recipe = get_recipe("cpu", reduced=False, batch_size=32, train_limit=70, eval_limit=15, augment=False)
    loaders = recipe_loaders(recipe, data, seed=3)
    train, val, test = loaders
    assert (train.batch_size, train.augment, len(train.images), train.seed) == (32, False, 70, 3)
    assert not val.shuffle and not test.shuffle and len(test.images) == 15
    x, _ = next(iter(train))
    assert x.shape == (32, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    upstream = get_recipe("upstream", reduced=False, train_limit=8, eval_limit=8, batch_size=4)
    x, _ = next(iter(recipe_loaders(upstream, data).train))
    assert x.shape == (4, 3, 227, 227)  # the model's input size decides the resize
    assert recipe_loaders(upstream, data).test.batch_size == 1000 * 32 * 32 // 227**2  # one batch ~ 1000 small images


def test_recipe_loaders_hold_out_the_validation_share_and_none_without_it(cifar_root):
    data = load_cifar10(cifar_root, download=False)
    loaders = recipe_loaders(get_recipe("cpu", reduced=False, validation=0.2), data)
    assert len(loaders.train.images) + len(loaders.val.images) == len(data.train_images)
    seen = {tuple(img.flatten()[:64].tolist()) for img in loaders.train.images}
    assert not any(tuple(img.flatten()[:64].tolist()) in seen for img in loaders.val.images)  # disjoint
    whole = recipe_loaders(get_recipe("cpu", reduced=False, validation=0.0), data)
    assert whole.val is None and len(whole.train.images) == len(data.train_images)


def test_alternating_flips_mirror_each_image_every_other_epoch():
    n = 64
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    images[:, :, :, :16] = 255  # bright left half: after any crop shift of at most 4, its side tells whether it flipped
    labels = torch.arange(n)
    loader = DeviceLoader(images, labels, 16, flip="alternate", seed=3)

    def flipped(epoch: int) -> dict[int, bool]:
        x, y = loader.epoch_data(epoch)
        return {int(label): bool(img[0, :, 24:].float().mean() > img[0, :, :8].float().mean()) for img, label in zip(x, y)}

    first, second, third = flipped(0), flipped(1), flipped(2)
    assert all(second[i] != first[i] and third[i] == first[i] for i in range(n))  # every image, every epoch
    assert 10 < sum(first.values()) < 54  # the first epoch's flips are random
    loader = DeviceLoader(images, labels, 16, seed=3)  # random flips: some images keep their side from one epoch to the next
    first, second = flipped(0), flipped(1)
    assert any(second[i] == first[i] for i in range(n))
    with pytest.raises(ValueError, match="flip='sideways'"):
        DeviceLoader(images, labels, 16, flip="sideways")
