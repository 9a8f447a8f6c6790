"""CIFAR-10: loading (official download or an existing copy), checks, caching, and fast batches.

Images are kept as uint8 tensors of shape (N, 3, 32, 32), PyTorch's channel-first
layout, with int64 labels in 0..9. Everything heavier than that (float conversion,
augmentation, normalisation, resizing) happens per batch on the training device.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .paths import project_folder

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Channel statistics of the 50,000 training images (notebook 01 recomputes them).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
CACHE_FILE = "cifar10-uint8.pt"
# The official archive (the one torchvision uses). helpers.download fetches it, or a copy named in
# $CIFAR10_MIRRORS, and accepts only a file with this md5.
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"


class CIFAR10Error(RuntimeError):
    """CIFAR-10 data is missing, unreadable or malformed; the message says how to fix it."""


@dataclass
class Cifar10:
    """Both splits of CIFAR-10 as uint8 (N, 3, 32, 32) images and int64 labels (notebook 01)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    root: Path


def default_root() -> Path:
    """Where CIFAR-10 lives when no folder is given: $CIFAR10_ROOT, else `data/` of a checkout or ~/.cache (notebook 01)."""
    env = os.environ.get("CIFAR10_ROOT")
    return Path(env).expanduser() if env else project_folder("data")


def load_cifar10(root: str | os.PathLike | None = None, download: bool = True, cache: bool = True) -> Cifar10:
    """Load both CIFAR-10 splits from `root/cifar-10-batches-py`, downloading it if allowed (notebook 01).

    `root` defaults to `default_root()`. An existing folder is read as it is, whether it
    holds the official batches or the JPEG mirror made by prepare_cifar10.py. A
    cached tensor file beside it makes the second load fast.
    """
    root = Path(root).expanduser() if root is not None else default_root()
    folder = root / FOLDER
    files = [folder / name for name in (*TRAIN_FILES, *TEST_FILES, META_FILE)]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        if folder.is_dir() and len(missing) < len(files):
            raise CIFAR10Error(
                f"{folder} is incomplete: missing {', '.join(missing)}. "
                f"Delete the folder and load again to download a fresh copy, or point CIFAR10_ROOT at a complete one."
            )
        if not download:
            raise CIFAR10Error(_missing_message(folder, "download=False was given"))
        download_cifar10(root)

    cache_path = root / CACHE_FILE
    stamp = _stamp(files)
    if cache:
        cached = _read_cache(cache_path, stamp)
        if cached is not None:
            return Cifar10(**cached, classes=CLASSES, root=root)

    classes = read_meta(folder / META_FILE)
    train_images, train_labels = _read_split([folder / n for n in TRAIN_FILES])
    test_images, test_labels = _read_split([folder / n for n in TEST_FILES])
    tensors = {
        "train_images": train_images, "train_labels": train_labels,
        "test_images": test_images, "test_labels": test_labels,
    }
    if cache:
        _write_cache(cache_path, stamp, tensors)
    return Cifar10(**tensors, classes=classes, root=root)


def dataset_label(root: str | os.PathLike | None = None) -> str:
    """'CIFAR-10 (JPEG mirror)' for the offline copy, else 'CIFAR-10': the name to print beside every figure (notebook 01)."""
    root = Path(root).expanduser() if root is not None else default_root()
    try:
        with open(root / FOLDER / TEST_FILES[0], "rb") as f:
            names = pickle.load(f, encoding="latin1").get("filenames", [])
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError):
        return "CIFAR-10"
    # prepare_cifar10.py names images <class>_<NNNN>.png; the official files use WordNet-style names.
    mirror = bool(names) and re.fullmatch("(" + "|".join(CLASSES) + r")_\d{4}\.png", str(names[0])) is not None
    return "CIFAR-10 (JPEG mirror)" if mirror else "CIFAR-10"


def download_cifar10(root: str | os.PathLike, urls: list[str] | None = None, md5: str | None = None) -> None:
    """Download the archive (mirrors, retries, resume, md5 check, progress bar) and unpack it safely into `root` (notebook 01).

    URLs are tried in order: those in $CIFAR10_MIRRORS, then `urls` (default: the official URL).
    `md5` defaults to ARCHIVE_MD5. The verified archive stays in `root`, so a second call only unpacks.
    """
    import tarfile

    from .download import DownloadError, download_file, extract_tar, mirror_urls

    root = Path(root)
    try:
        archive = download_file(mirror_urls([URL] if urls is None else urls), root / ARCHIVE, md5 or ARCHIVE_MD5)
    except DownloadError as err:
        raise CIFAR10Error(_missing_message(root / FOLDER, f"the download failed.\n{str(err).rstrip('.')}")) from err
    try:
        extract_tar(archive, root)
    except (OSError, EOFError, ValueError, tarfile.TarError) as err:
        raise CIFAR10Error(f"{archive}: cannot unpack ({type(err).__name__}: {err}). Delete it and load again.") from err
    if not (root / FOLDER).is_dir():
        raise CIFAR10Error(f"{archive} holds no {FOLDER}/ folder; it is not the CIFAR-10 python archive.")


def _missing_message(folder: Path, why: str) -> str:
    return (
        f"CIFAR-10 was not found in {folder} and {why}.\n"
        f"Fix it in one of two ways:\n"
        f"  1. with internet access: call load_cifar10(download=True) (the default) to fetch the official archive "
        f"(163 MB) into {folder.parent};\n"
        f"  2. without it: set CIFAR10_ROOT (or pass root=) to a folder that already holds "
        f"cifar-10-batches-py/ (the official batches, or a copy made by prepare_cifar10.py)."
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one python-pickled CIFAR-10 batch file and check it; returns (N,3,32,32) uint8 and labels (notebook 01)."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError, IndexError) as err:
        raise CIFAR10Error(
            f"{path}: cannot be read as a CIFAR-10 batch ({type(err).__name__}: {err}); the file is truncated or "
            f"corrupt. Delete {path.parent} and load again (or rerun prepare_cifar10.py)."
        ) from err
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise CIFAR10Error(f"{path}: not a CIFAR-10 batch: expected a dict with 'data' and 'labels', found {keys}.")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CIFAR10Error(
            f"{path}: 'data' has shape {data.shape} and dtype {data.dtype}; expected (N, 3072) uint8 "
            f"(one 32x32 RGB image per row)."
        )
    if labels.shape != (data.shape[0],):
        raise CIFAR10Error(f"{path}: {data.shape[0]} images but {labels.size} labels; the file is inconsistent.")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = sorted({int(v) for v in labels if not 0 <= v <= 9})[:5]
        raise CIFAR10Error(f"{path}: labels must lie in 0..9, found {bad}.")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_meta(path: Path) -> tuple[str, ...]:
    """Read the class names from batches.meta and check they are CIFAR-10's ten (notebook 01)."""
    try:
        with open(path, "rb") as f:
            meta = pickle.load(f, encoding="latin1")
        names = tuple(meta["label_names"])
    except (EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as err:
        raise CIFAR10Error(f"{path}: cannot read the class names ({type(err).__name__}: {err}); the file is corrupt.") from err
    if names != CLASSES:
        raise CIFAR10Error(f"{path}: expected the 10 CIFAR-10 classes {CLASSES}, found {names}.")
    return names


def _read_split(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [read_batch(p) for p in paths]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


def _stamp(files: list[Path]) -> list[tuple[str, int, int]]:
    # Size and modification time identify the batch files the cache was made from.
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def _read_cache(path: Path, stamp: list) -> dict | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
    except Exception:  # a broken cache is rebuilt from the batches, never fatal
        return None
    if saved.get("stamp") != [list(s) for s in stamp]:
        return None
    return {k: saved[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}


def _write_cache(path: Path, stamp: list, tensors: dict) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        torch.save({"stamp": [list(s) for s in stamp], **tensors}, tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only data folder just means no cache


# ---------------------------------------------------------------- augmentation as tensor ops


def crop_at(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Crop each image at its own offset (dx, dy) of its reflect-padded copy; output keeps the size (notebook 01)."""
    _, _, h, w = images.shape
    rows, cols = _reflect_index(h, padding, images.device), _reflect_index(w, padding, images.device)
    padded = images[:, :, rows][:, :, :, cols]  # reflect padding by indexing keeps uint8 as uint8
    out = torch.empty_like(images)
    # One slice per distinct offset: at most (2p+1)^2 batched copies instead of N small ones.
    key = dy * (2 * padding + 1) + dx
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
    """uint8 images to float, standardised with the CIFAR-10 channel statistics, optionally resized (notebook 01)."""
    scale, shift = _affine(images.device)
    # (x/255 - mean)/std as one multiply-add on the float copy.
    x = torch.addcmul(shift, images.float(), scale)
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


class GpuLoader:
    """Batches from a split held whole on the device, shuffled and augmented per epoch with tensor ops (notebook 01).

    Iterating yields (images, labels): float32 images normalised with the CIFAR-10
    statistics (resized to `size` if given) and int64 labels, both on `device`.
    Epoch k's order and augmentation depend only on (seed, k), so a run resumed at
    epoch k sees the same batches as an uninterrupted one; set `epoch` to resume.

    With `world_size` > 1 (several processes, see helpers.distributed) every process
    holds the whole split, and `batch_size` is its share of a global batch of
    batch_size * world_size: process `rank` takes its slice of each global batch of
    the same shuffled, augmented epoch, and of the test set one image in world_size.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 256,
        *,
        train: bool = True,
        augment: bool | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        limit: int | None = None,
        size: int | None = None,
        channels_last: bool = False,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..world_size-1, got rank {rank} of world_size {world_size}")
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 of shape (N, 3, H, W), got {tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be a positive number of images, got {limit}")
            images, labels = images[:limit], labels[:limit]
        self.device = torch.device(device)
        self.images = images.to(self.device)  # uint8: a quarter of float32's memory
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.augment = train if augment is None else augment
        self.drop_last = train if drop_last is None else drop_last
        self.seed = seed
        self.size = size
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        if self.train and world_size > 1 and len(self.images) < batch_size * world_size:
            raise ValueError(f"{len(self.images)} training images are fewer than one global batch "
                             f"({world_size} processes x {batch_size})")

    def __len__(self) -> int:
        n = self._rank_count()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _rank_count(self) -> int:
        n = len(self.images)
        if self.world_size == 1:
            return n
        if self.train:  # whole global batches only, split evenly
            return n // (self.batch_size * self.world_size) * self.batch_size
        return len(range(self.rank, n, self.world_size))

    @property
    def num_samples(self) -> int:
        """Images per epoch for this process (after drop_last)."""
        return len(self) * self.batch_size if self.drop_last else self._rank_count()

    def epoch_data(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's images and labels of an epoch in order, as uint8, augmented if training (notebook 01)."""
        images, labels = self.images, self.labels
        if not self.train:
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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        images, labels = self.epoch_data(epoch)
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            yield normalize(images[sl], self.size, self.channels_last), labels[sl]


# ---------------------------------------------------------------- the classic torchvision path


class CifarDataset(torch.utils.data.Dataset):
    """A torchvision-style Dataset over uint8 arrays: PIL image -> transform, as in the seed repository (notebook 01)."""

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


def classic_transform(size: int | None = None, augment: bool = False):
    """The usual torchvision pipeline: [Resize(size)], [RandomCrop+Flip], ToTensor, Normalize (notebook 01)."""
    from torchvision import transforms as T

    steps = []
    if augment:
        steps += [T.RandomCrop(32, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip()]
    if size is not None:
        steps.append(T.Resize(size))
    steps += [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    return T.Compose(steps)


def classic_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 128,
    *,
    size: int | None = None,
    augment: bool = False,
    shuffle: bool = True,
    num_workers: int = 0,
    limit: int | None = None,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    """A Dataset + DataLoader over PIL images, e.g. the seed's Resize(227) pipeline, for comparison (notebook 01)."""
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    dataset = CifarDataset(images, labels, classic_transform(size, augment))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0,
    )


def loaders(
    data: Cifar10,
    batch_size: int = 256,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    augment: bool = True,
    train_limit: int | None = None,
    test_limit: int | None = None,
    size: int | None = None,
    channels_last: bool = False,
    test_batch_size: int = 1000,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[GpuLoader, GpuLoader]:
    """Train and test GpuLoaders for a recipe in one call; `batch_size` is per process (notebook 03)."""
    shard = {"rank": rank, "world_size": world_size}
    train = GpuLoader(data.train_images, data.train_labels, batch_size, train=True, augment=augment,
                      device=device, seed=seed, limit=train_limit, size=size, channels_last=channels_last, **shard)
    test = GpuLoader(data.test_images, data.test_labels, test_batch_size, train=False,
                     device=device, limit=test_limit, size=size, channels_last=channels_last, **shard)
    return train, test
