"""Looking at the data and the models: image statistics, loader timings, layer tables, the double-softmax demo.

Notebook 01 measures CIFAR-10 itself and the input pipelines; notebook 02 traces the
architectures and shows numerically why the model returns logits.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .download import file_md5
from .models import PRESETS, build_model, count_parameters, summarize
from .train import compute_loss

# ---------------------------------------------------------------- notebook 01: the data


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
    total = torch.zeros(channels, dtype=torch.int64)
    total_sq = torch.zeros(channels, dtype=torch.int64)
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
    result = {}
    for name, md5 in expected.items():
        path = folder / name
        result[name] = path.is_file() and file_md5(path) == md5
    return result


def measure_throughput(loader: Iterable, max_images: int | None = None) -> dict:
    """Iterate a loader of (images, labels) batches and time it: images, seconds, images_per_s (notebook 01)."""
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be a positive number of images or None, got {max_images}")
    images = 0
    last = None
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


def bytes_per_image(size: int, channels: int = 3, dtype: torch.dtype = torch.float32) -> int:
    """Memory of one size x size image with `channels` channels stored as `dtype` (notebook 01)."""
    if size < 1 or channels < 1:
        raise ValueError(f"size and channels must be >= 1, got size={size}, channels={channels}")
    return channels * size * size * torch.empty((), dtype=dtype).element_size()


# ---------------------------------------------------------------- notebook 02: the models


def summary_frame(model: nn.Module, input_size: int | None = None) -> pd.DataFrame:
    """helpers.models.summarize as a DataFrame, output shapes written CxHxW (notebook 02)."""
    rows = summarize(model, input_size)
    frame = pd.DataFrame(rows, columns=["layer", "type", "output_shape", "params", "flops"])
    frame["output_shape"] = ["x".join(map(str, shape)) for shape in frame["output_shape"]]
    return frame


def preset_table(names: Sequence[str] | None = None) -> pd.DataFrame:
    """Input size, layer counts, parameters, FC share and FLOPs per image of model presets (notebook 02)."""
    names = list(PRESETS) if names is None else list(names)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset(s) {', '.join(unknown)}; known presets: {', '.join(PRESETS)}")
    rows = []
    for name in names:
        with torch.device("meta"):  # shapes only: no memory, no random init, same counts
            model = build_model(name)
        frame = summary_frame(model)
        params = count_parameters(model)
        fc_params = int(frame.loc[frame["type"] == "Linear", "params"].sum())
        rows.append({
            "preset": name,
            "input": f"{model.config.input_size}x{model.config.input_size}",
            "conv_layers": len(model.config.conv_channels),
            "fc_layers": model.config.fc_layers,
            "params": params,
            "fc_share_of_params": fc_params / params,
            "flops": int(frame["flops"].sum()),
        })
    return pd.DataFrame(rows).set_index("preset")


def softmax_ce_floor(num_classes: int = 10) -> float:
    """Smallest value cross-entropy can take on softmax outputs: -log(e / (e + C - 1)) (notebook 02)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return -math.log(math.e / (math.e + num_classes - 1))


def loss_and_gradient(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """A loss kind of helpers.train.compute_loss and the mean per-example norm of its gradient w.r.t. the logits (notebook 02)."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"need logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    leaf = logits.detach().float().requires_grad_(True)
    loss = compute_loss(kind, leaf, labels)
    (grad,) = torch.autograd.grad(loss, leaf)
    # the batch loss is a mean: times N gives each example's own gradient
    per_example = (grad * len(leaf)).norm(dim=1)
    return loss.item(), per_example.mean().item()


def double_softmax_sweep(
    scales: Sequence[float],
    kinds: Sequence[str] = ("ce", "softmax_ce", "bce_softmax"),
    batch: int = 512,
    num_classes: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """Loss and gradient norm of each loss kind on random logits times each scale, labels right or random (notebook 02).

    Logits are standard normal times `scale`; `mean_top_prob` is the mean largest
    softmax probability, i.e. how confident such a network is. `labels="argmax"`
    rows: the label is the largest logit (a confident, correct network);
    `labels="random"` rows: a random class (mostly wrong, as at the start).
    """
    if batch < 1 or num_classes < 2:
        raise ValueError(f"need batch >= 1 and num_classes >= 2, got batch={batch}, num_classes={num_classes}")
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, num_classes, generator=gen)
    random_labels = torch.randint(0, num_classes, (batch,), generator=gen)
    rows = []
    for scale in scales:
        if not scale >= 0:
            raise ValueError(f"scales must be >= 0, got {scale}")
        logits = base * scale
        top_prob = logits.softmax(1).max(1).values.mean().item()  # how confident the "network" is at this scale
        for label_kind, labels in (("argmax", base.argmax(1)), ("random", random_labels)):
            for kind in kinds:
                loss, grad = loss_and_gradient(kind, logits, labels)
                rows.append({"scale": scale, "mean_top_prob": top_prob, "labels": label_kind, "loss_kind": kind,
                             "loss": loss, "grad_norm": grad})
    return pd.DataFrame(rows)
