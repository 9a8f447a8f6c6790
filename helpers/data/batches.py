"""Batches: augmentation as tensor ops, a loader that keeps a whole split on the device (GPU or CPU), and the classic
torchvision Dataset/DataLoader path for comparison."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..plumbing.checks import at_least
from .cifar10 import CIFAR10_MEAN, CIFAR10_STD


def crop_at(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Crop each image at its own offset (dx, dy) of its reflect-padded copy, keeping the size (notebook 01's random_crop)."""
    _, _, h, w = images.shape
    rows, cols = _reflect_index(h, padding, images.device), _reflect_index(w, padding, images.device)
    padded = images[:, :, rows][:, :, :, cols]  # reflect padding by indexing keeps uint8 as uint8
    out = torch.empty_like(images)
    key = dy * (2 * padding + 1) + dx  # one slice per distinct offset: at most (2p+1)^2 batched copies, not N
    for k in torch.unique(key).tolist():
        oy, ox = divmod(k, 2 * padding + 1)
        sel = (key == k).nonzero().squeeze(1)
        out[sel] = padded[sel, :, oy:oy + h, ox:ox + w]
    return out


def _reflect_index(n: int, padding: int, device: torch.device) -> torch.Tensor:
    # Index of each padded position in the original axis, mirroring without repeating the edge.
    i = torch.arange(-padding, n + padding, device=device).abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def random_crop(images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with reflect padding, one offset per image, as batched tensor ops (notebook 01)."""
    dx, dy = _crop_offsets(images.shape[0], padding, generator)
    return crop_at(images, dx.to(images.device), dy.to(images.device), padding)


def _crop_offsets(n: int, padding: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    return dx, torch.randint(0, 2 * padding + 1, (n,), generator=generator)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the images left-right (notebook 01)."""
    return _flip_where(images, _flip_mask(images.shape[0], generator))


def _flip_mask(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) < 0.5


def _flip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.to(images.device)[:, None, None, None], images.flip(3), images)


def normalize(images: torch.Tensor, size: int | None = None, channels_last: bool = False) -> torch.Tensor:
    """uint8 images to float, standardised with the CIFAR-10 channel statistics, optionally resized (notebook 04)."""
    scale, shift = _affine(images.device)
    x = torch.addcmul(shift, images.float(), scale)  # (x/255 - mean)/std as one multiply-add
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


_AFFINE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _affine(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if device not in _AFFINE:
        mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1)
        _AFFINE[device] = (1 / (255 * std), -mean / std)
    return _AFFINE[device]


class DeviceLoader:
    """Batches from a split held whole on the device, shuffled and augmented per epoch with tensor ops (notebook 01).

    `shuffle` makes it a training loader: a new order (and by default augmentation and whole batches only) each epoch.
    Epoch k depends only on (seed, k), so a resumed run sees the same batches; with world_size > 1 batch_size is per process.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256, *, shuffle: bool = True,
                 augment: bool | None = None, device: torch.device | str = "cpu", seed: int = 0, limit: int | None = None,
                 size: int | None = None, channels_last: bool = False, drop_last: bool | None = None, rank: int = 0,
                 world_size: int = 1, flip: str = "random") -> None:
        if flip not in ("random", "alternate"):
            raise ValueError(f"flip={flip!r} is not known; choose random or alternate")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..world_size-1, got rank {rank} of world_size {world_size}")
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 of shape (N, 3, H, W), got {tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        at_least("batch_size", batch_size, 1)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be a positive number of images, got {limit}")
            images, labels = images[:limit], labels[:limit]
        self.device = torch.device(device)
        self.images = images.to(self.device)  # uint8: a quarter of float32's memory
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.seed, self.size, self.channels_last = batch_size, shuffle, seed, size, channels_last
        self.augment = shuffle if augment is None else augment
        self.drop_last = shuffle if drop_last is None else drop_last
        self.rank, self.world_size, self.epoch, self.flip = rank, world_size, 0, flip
        if self.shuffle and world_size > 1 and len(self.images) < batch_size * world_size:
            raise ValueError(f"{len(self.images)} training images are fewer than one global batch "
                             f"({world_size} processes x {batch_size})")

    def __len__(self) -> int:
        n = self._rank_count()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _rank_count(self) -> int:
        n = len(self.images)
        if self.world_size == 1:
            return n
        if self.shuffle:  # whole global batches only, split evenly
            return n // (self.batch_size * self.world_size) * self.batch_size
        return len(range(self.rank, n, self.world_size))

    @property
    def num_samples(self) -> int:
        """Images per epoch for this process (after drop_last)."""
        return len(self) * self.batch_size if self.drop_last else self._rank_count()

    def epoch_data(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's images and labels of an epoch in order, as uint8, shuffled and augmented if asked (notebook 01)."""
        images, labels = self.images, self.labels
        if not self.shuffle:
            if self.world_size > 1:
                images, labels = images[self.rank::self.world_size], labels[self.rank::self.world_size]
            return images, labels
        # A CPU generator keeps the stream identical on every device type and in every process;
        # the draws are made for the whole split, then each process keeps its positions.
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = len(images)
        order = torch.randperm(n, generator=gen)
        if self.augment:
            dx, dy = _crop_offsets(n, 4, gen)
            flip = _flip_mask(n, gen)
            if self.flip == "alternate":  # airbench: each image's first flip at random, then flipped every other epoch
                flip = (_flip_mask(n, torch.Generator().manual_seed(self.seed * 1_000_003 - 1)) ^ bool(epoch % 2))[order]
        if self.world_size > 1:
            steps, b = n // (self.batch_size * self.world_size), self.batch_size
            keep = torch.arange(steps * self.world_size * b).view(steps, self.world_size, b)[:, self.rank].flatten()
            order = order[keep]
            if self.augment:
                dx, dy, flip = dx[keep], dy[keep], flip[keep]
        order = order.to(self.device)
        images, labels = images[order], labels[order]
        if self.augment:
            images = _flip_where(crop_at(images, dx.to(self.device), dy.to(self.device), 4), flip)
        return images, labels

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass over the loader epoch `epoch` (counted from 0) (notebook 03's engine)."""
        if not (isinstance(epoch, int) and epoch >= 0):
            raise ValueError(f"epoch must be a whole number >= 0, got {epoch!r}")
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        images, labels = self.epoch_data(epoch)
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            yield normalize(images[sl], self.size, self.channels_last), labels[sl]


class _CifarDataset(torch.utils.data.Dataset):
    """A torchvision-style Dataset over uint8 arrays: PIL image -> transform, as in the seed repository (classic_loader)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()  # HWC for PIL
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        image = Image.fromarray(self.images[i])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[i]


def _classic_transform(size: int | None = None, augment: bool = False):
    """The usual torchvision pipeline: [Resize(size)], [RandomCrop+Flip], ToTensor, Normalize (notebook 01's classic_loader)."""
    from torchvision import transforms as T

    steps = []
    if augment:
        steps += [T.RandomCrop(32, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip()]
    if size is not None:
        steps.append(T.Resize(size))
    steps += [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    return T.Compose(steps)


def classic_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128, *, size: int | None = None,
                   augment: bool = False, shuffle: bool = True, num_workers: int = 0,
                   limit: int | None = None) -> torch.utils.data.DataLoader:
    """A Dataset + DataLoader over PIL images, e.g. the upstream repository's Resize(227) pipeline (notebook 01)."""
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    dataset = _CifarDataset(images, labels, _classic_transform(size, augment))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                                       generator=torch.Generator().manual_seed(0), persistent_workers=num_workers > 0)


