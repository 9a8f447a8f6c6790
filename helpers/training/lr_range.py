"""A learning-rate range test in fastai's form (`lr_find`): train briefly while the rate grows exponentially, and
read the smoothed training loss against the rate to see where it turns.

The test comes from L. N. Smith, "Cyclical Learning Rates for Training Neural Networks" (WACV 2017; arXiv 2015),
section 3.3, who raises the rate linearly over a few epochs and reads accuracy against it; the short exponential sweep
read off a loss plot, with its smoothing and 4x stopping rule, is the variant fastai popularised, which this follows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..device import amp_dtype, autocast
from ..plumbing.checks import is_int, is_real
from .engine import make_optimizer
from .losses import compute_loss
from .recipes import Recipe

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("lr", "loss", "smoothed_loss")
# Weight of the past in the loss's moving average. fastai's 0.98 suits long sweeps; over ~100 steps it would lag the
# rate by about 50 steps, half the sweep, so the curve would turn late.
_SMOOTHING = 0.9
_STOP_FACTOR = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum: it has diverged


def lr_range_test(model: nn.Module, loader: Iterable, recipe: Recipe, *, start: float = 1e-4, end: float = 10.0,
                  steps: int = 100, device: torch.device | str | None = None) -> pd.DataFrame:
    """Training loss per step while the learning rate grows exponentially from `start` to `end` (notebook 03).

    Trains a deep copy of `model`: the caller's model, and torch's CPU and CUDA random state, are left as they were
    (the loader is iterated, so a DeviceLoader's epoch counter moves on). The copy is trained with the recipe's optimiser
    (momentum, Nesterov, weight decay), loss, label smoothing, precision and memory format, one batch per step,
    cycling `loader` if it runs out; the recipe's lr and schedule are replaced by the sweep. Stops after the first step
    whose smoothed loss exceeds 4x its minimum, or whose loss is not finite. Columns: lr, loss, smoothed_loss (a
    bias-corrected moving average); `frame.attrs["recipe_lr"]` holds the recipe's peak lr for plot_lr_range.
    """
    _check_sweep(start, end, steps)
    import pandas as pd

    device = torch.device(device) if device is not None else next(model.parameters()).device
    work = copy.deepcopy(model).to(device)  # a throwaway copy: the sweep's last steps wreck the weights
    if recipe.channels_last:
        work.to(memory_format=torch.channels_last)
    work.train()
    optimizer = make_optimizer(work, recipe)
    dtype = amp_dtype(recipe.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    rates = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
    rows: list[tuple[float, float, float]] = []
    average, lowest = 0.0, math.inf
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # dropout draws from torch's generator: the caller's stream stays put
        for i, (lr, (x, y)) in enumerate(zip(rates, _cycle(loader))):
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = work(x)
            if not torch.isfinite(logits).all():  # bce_softmax would raise on NaN probabilities: record and stop
                rows.append((lr, math.nan, math.nan))
                break
            loss = compute_loss(recipe.loss, logits, y, recipe.label_smoothing)
            value = loss.item()
            if not math.isfinite(value):
                rows.append((lr, value, math.nan))
                break
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            average = _SMOOTHING * average + (1 - _SMOOTHING) * value
            smoothed = average / (1 - _SMOOTHING ** (i + 1))  # early averages are biased towards the 0 they start from
            rows.append((lr, value, smoothed))
            lowest = min(lowest, smoothed)
            if smoothed > _STOP_FACTOR * lowest:
                break
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs["recipe_lr"] = recipe.lr
    return frame


def _check_sweep(start: float, end: float, steps: int) -> None:
    if not (is_real(start) and math.isfinite(start) and start > 0):
        raise ValueError(f"start must be a finite learning rate > 0 (the sweep is geometric), got {start!r}; e.g. start=1e-4")
    if not (is_real(end) and math.isfinite(end) and end > start):
        raise ValueError(f"end must be a finite learning rate larger than start={start!r}, got {end!r}; e.g. end=10.0")
    if not (is_int(steps) and steps >= 2):
        raise ValueError(f"steps must be a whole number >= 2 (a first and a last rate), got {steps!r}; e.g. steps=100")


def _cycle(loader: Iterable) -> Iterator:
    """The loader's batches, over and over; a ValueError if it has none."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batches: is the batch size larger than the data?")


def plot_lr_range(frame: pd.DataFrame, *, peak_lr: float | None = None):
    """Loss against learning rate on a log axis, the lowest smoothed loss and the recipe's peak lr marked (notebook 03).

    `peak_lr` defaults to the recipe's lr that lr_range_test stored in `frame.attrs["recipe_lr"]`.
    """
    import matplotlib.pyplot as plt

    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing or frame["smoothed_loss"].notna().sum() == 0:
        raise ValueError(f"expected lr_range_test's frame with at least one finite smoothed loss and columns "
                         f"{', '.join(COLUMNS)}; got columns {list(frame.columns)} and {len(frame)} rows")
    _, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(frame["lr"], frame["loss"], color="tab:blue", alpha=0.3, label="loss of each step")
    ax.plot(frame["lr"], frame["smoothed_loss"], color="tab:blue", label="smoothed loss")
    best = frame.loc[frame["smoothed_loss"].idxmin()]
    ax.plot(best["lr"], best["smoothed_loss"], "o", color="tab:green", label=f"lowest smoothed loss, lr {best['lr']:.3g}")
    peak = frame.attrs.get("recipe_lr") if peak_lr is None else peak_lr
    if peak is not None:
        ax.axvline(peak, color="tab:red", linestyle="--", label=f"recipe's peak lr {peak:g}")
    # A diverging step's raw loss can be 100x the rest: keep the axis on the smoothed curve
    ax.set_ylim(0, 1.1 * frame["smoothed_loss"].max())
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss", title="learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return ax.figure
