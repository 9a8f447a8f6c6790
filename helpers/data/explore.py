"""Looking at the data: image grids, image statistics, an md5 check of the download, loader timings, memory per image."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..plumbing.download import file_md5


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        dtype = images.dtype if isinstance(images, torch.Tensor) else ""
        raise ValueError(f"images must be a uint8 tensor of shape (N, C, H, W), got {shape} {dtype}")
    if len(images) == 0:
        raise ValueError("images is empty: need at least one image")


def channel_stats(images: torch.Tensor, chunk: int = 5000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over all pixels of uint8 (N, C, H, W) images, on the [0, 1] scale (notebook 01)."""
    _check_images(images)
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of images, got {chunk}")
    channels = images.shape[1]
    total, total_sq = torch.zeros(channels, dtype=torch.int64), torch.zeros(channels, dtype=torch.int64)
    # exact integer sums of bytes and squared bytes, chunk by chunk: no float copy of the whole split
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk]
        total += x.sum(dim=(0, 2, 3), dtype=torch.int64)
        total_sq += x.int().square().sum(dim=(0, 2, 3), dtype=torch.int64)
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total.double() / count
    variance = total_sq.double() / count - mean * mean
    return tuple((mean / 255).tolist()), tuple((variance.clamp_min(0).sqrt() / 255).tolist())


def pixel_histogram(images: torch.Tensor) -> np.ndarray:
    """How often each value 0..255 occurs in each channel of uint8 (N, C, H, W) images: shape (C, 256) (notebook 01)."""
    _check_images(images)
    channels = images.transpose(0, 1).reshape(images.shape[1], -1)
    return np.stack([torch.bincount(c.long(), minlength=256).numpy() for c in channels])


def official_md5_matches(root: str | os.PathLike) -> dict[str, bool]:
    """For each file of root/cifar-10-batches-py, whether its md5 is the one torchvision expects (notebook 01)."""
    from torchvision.datasets import CIFAR10

    folder = Path(root) / CIFAR10.base_folder
    if not folder.is_dir():
        raise ValueError(f"no {CIFAR10.base_folder}/ folder under the given root; load CIFAR-10 first (notebook 01)")
    expected = dict(CIFAR10.train_list + CIFAR10.test_list)
    expected[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    return {name: (folder / name).is_file() and file_md5(folder / name) == md5 for name, md5 in expected.items()}


def measure_throughput(loader: Iterable, max_images: int | None = None) -> dict:
    """Iterate a loader of (images, labels) batches and time it: images, seconds, images_per_s (notebook 01)."""
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be a positive number of images or None, got {max_images}")
    images, last = 0, None
    start = time.perf_counter()
    for batch, _ in loader:
        images += len(batch)
        last = batch
        if max_images is not None and images >= max_images:
            break
    if last is not None and last.device.type == "cuda":
        torch.cuda.synchronize(last.device)  # GPU work is asynchronous: wait before stopping the clock
    seconds = time.perf_counter() - start
    if images == 0:
        raise ValueError("the loader yielded no images: is the batch size larger than the data (drop_last)?")
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds}


def bytes_per_image(size: int, dtype: torch.dtype = torch.float32) -> int:
    """Memory of one size x size RGB image stored as `dtype` (notebook 01)."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got size={size}")
    return 3 * size * size * torch.empty((), dtype=dtype).element_size()


def show_images(images: torch.Tensor, labels: Sequence[int] | None = None, classes: Sequence[str] | None = None,
                ncols: int = 8, title: str | None = None, size: float = 1.3):
    """Show uint8 (N, 3, H, W) images in a grid with optional class names (notebook 01)."""
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].permute(1, 2, 0).cpu().numpy())
            if labels is not None:
                name = classes[int(labels[i])] if classes is not None else str(int(labels[i]))
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
