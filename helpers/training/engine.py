"""One training engine for every notebook, benchmark and the command line: a recipe's loaders, optimiser and schedule,
the training loop, evaluation, checkpoints after every epoch and an exact resume.

Under torchrun each process trains on its share of every batch (training.distributed); one process is a no-op there.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..course import seed_everything
from ..data import DeviceLoader, load_cifar10, normalize, split_validation
from ..data.cifar10 import Cifar10, split_sizes
from ..device import amp_dtype, autocast, pick_device, synchronize
from ..models import build_model
from ..models.alexnet import model_state, resolve_config, whitening_filters
from ..plumbing.checks import TrainingError, is_real, one_of
from . import distributed as dist
from .checkpoint import load_checkpoint, model_config, rng_state, save_checkpoint, set_rng_state
from .losses import LOSSES, compute_loss
from .recipes import SCHEDULES, Recipe, get_recipe

_Callback = Callable[["History", nn.Module], None]


class History(list):
    """Per-epoch records (dicts) of a run, with a few conveniences (notebook 03's fit and train)."""

    def column(self, key: str) -> list:
        """One metric across epochs, e.g. history.column('val_acc')."""
        return [row[key] for row in self]

    @property
    def last(self) -> dict:
        """The final epoch's record."""
        return self[-1] if self else {}

    def time_to(self, accuracy: float, key: str = "test_acc") -> float | None:
        """Training seconds until the first epoch whose `key` reaches `accuracy`, or None (benchmarks/time_to_accuracy.py)."""
        return next((row["train_seconds_total"] for row in self if row[key] >= accuracy), None)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """Split parameters so weight decay skips norms and biases unless asked (notebook 03's make_optimizer)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 or decay_norm_and_bias else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (Nesterov) momentum, Adam or AdamW as the recipe says (notebook 03)."""
    groups = param_groups(model, recipe.weight_decay, recipe.decay_norm_and_bias)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    # The fused kernel updates each tensor in one pass; the default (foreach) one makes whole-model
    # temporaries, which for the upstream 39M-parameter model decide whether notebook 03 fits Binder's 2 GB.
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return cls(groups, lr=recipe.lr, betas=tuple(recipe.betas), fused=fused)


def weight_decay_share(model: torch.nn.Module, kind: str, images: torch.Tensor, labels: torch.Tensor,
                       weight_decay: float = 5e-4, label_smoothing: float = 0.1) -> dict:
    """How much of the gradient an optimiser sees is coupled L2 (weight_decay * w) rather than the loss's (notebook 05).

    Over the parameters a recipe decays (weights, not norms or biases: `helpers.train.param_groups`), for one batch:
    the norms of the loss gradient and of the L2 term, L2's share of their sum, and the fraction of weights whose
    L2 term is larger than their loss gradient (Adam normalises each weight's sum, so there L2 sets the step).
    """
    one_of("loss", kind, LOSSES)
    if not is_real(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    weights = param_groups(model, weight_decay)[0]["params"]
    grads = torch.autograd.grad(compute_loss(kind, model(images), labels, label_smoothing), weights)
    data = torch.cat([g.flatten() for g in grads])
    l2 = weight_decay * torch.cat([w.detach().flatten() for w in weights])
    return {"loss": kind, "loss_grad_norm": data.norm().item(), "l2_norm": l2.norm().item(),
            "l2_share": (l2.norm() / (data.norm() + l2.norm())).item(),
            "weights_led_by_l2": (l2.abs() > data.abs()).double().mean().item()}


def lr_factor(schedule: str, step: int, total: int, warmup: float = 0.25) -> float:
    """Multiplier on the peak learning rate at `step` of `total` for a schedule (notebook 03's plot_lr_schedule and engine)."""
    one_of("schedule", schedule, SCHEDULES)
    frac = step / max(total, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.1 ** (int(frac >= 0.5) + int(frac >= 0.75))
    if schedule == "cosine":
        if frac < warmup:
            return (frac / warmup) if warmup else 1.0
        return 0.5 * (1 + math.cos(math.pi * (frac - warmup) / (1 - warmup)))
    # onecycle: linear warm-up from a tenth of the peak, then linear decay to zero (airbench-style)
    if frac < warmup:
        return 0.1 + 0.9 * frac / warmup
    return max(0.0, (1 - frac) / (1 - warmup))


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int):
    """A per-step LambdaLR following `lr_factor` (notebook 03's engine)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(recipe.schedule, step, total_steps, recipe.warmup))


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The images moved by (dy, dx) pixels, the edge mirrored in (a one-pixel translation for test-time augmentation)."""
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    return padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


@torch.no_grad()
def _downscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """The batch resized to size x size pixels, antialiased and in the batch's memory format (low-resolution epochs)."""
    channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
    small = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return small.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@torch.no_grad()
def _eval_outputs(model: nn.Module, loader: Iterable, device: torch.device, dtype: torch.dtype | None, tta: bool,
                  translate: bool = False):
    """Yield (logits, flip-TTA probabilities or None, six-view probabilities or None, labels) per batch in eval mode.

    Flip-TTA averages the softmax of each image and its mirror; with `translate`, as airbench does, the six-view average
    counts that pair half and the same pair for the image moved one pixel up-left and one down-right a quarter each.
    """
    def both(views: torch.Tensor, plain: torch.Tensor | None = None) -> torch.Tensor:
        with autocast(device, dtype):
            plain = model(views).float() if plain is None else plain
            return (plain.softmax(1) + model(views.flip(3)).float().softmax(1)) / 2

    with model_state(model, training=False):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = model(x).float()
            flip = both(x, logits) if tta else None
            six = None
            if tta and translate:
                six = 0.5 * flip + 0.25 * both(_shifted(x, -1, -1)) + 0.25 * both(_shifted(x, 1, 1))
            yield logits, flip, six, y


def predict(model: nn.Module, loader: Iterable, *, tta: bool = False, translate: bool = False,
            device: torch.device | str | None = None, amp: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and labels for a whole loader; `tta` averages with mirrored (and `translate` shifted) images
    (notebook 04)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    probs, labels = [], []
    for logits, flip, six, y in _eval_outputs(model, loader, device, amp_dtype(amp, device), tta, translate):
        probs.append(six if six is not None else flip if flip is not None else logits.softmax(1))
        labels.append(y)
    return torch.cat(probs).cpu(), torch.cat(labels).cpu()


def evaluate(model: nn.Module, loader: Iterable, recipe: Recipe, device: torch.device, split: str = "val") -> dict:
    """Loss (the recipe's, no smoothing), accuracy, flip-TTA accuracy (`_tta`) and, with `recipe.tta_translate`, six-view
    TTA accuracy (`_tta6`) on a split, keys named after it (notebook 03's fit)."""
    sums = torch.zeros(5, dtype=torch.float64)  # loss, correct, correct with flip-TTA, with six views, images
    for logits, flip, six, y in _eval_outputs(model, loader, device, amp_dtype(recipe.amp, device), recipe.tta,
                                              recipe.tta_translate):
        if not torch.isfinite(logits).all():
            name = "validation" if split == "val" else split
            raise TrainingError(f"the model's outputs on the {name} images are not finite: the run diverged; lower the "
                                f"learning rate, add warm-up, or switch off fp16")
        sums[0] += compute_loss(recipe.loss, logits, y).item() * len(y)
        sums[1] += (logits.argmax(1) == y).sum().item()
        if flip is not None:
            sums[2] += (flip.argmax(1) == y).sum().item()
        if six is not None:
            sums[3] += (six.argmax(1) == y).sum().item()
        sums[4] += len(y)
    loss_sum, correct, correct_flip, correct_six, n = dist.all_reduce_sum(sums.to(device)).tolist()  # each its share
    out = {f"{split}_loss": loss_sum / n, f"{split}_acc": 100.0 * correct / n}
    if recipe.tta:
        out[f"{split}_acc_tta"] = 100.0 * correct_flip / n
    if recipe.tta and recipe.tta_translate:
        out[f"{split}_acc_tta6"] = 100.0 * correct_six / n
    return out


class _Loaders(NamedTuple):
    """A recipe's loaders: train, validation (None without a validation split) and test (notebook 03's recipe_loaders)."""

    train: DeviceLoader
    val: DeviceLoader | None
    test: DeviceLoader


def check_split(recipe: Recipe, train_labels: torch.Tensor, batch: bool = True) -> None:
    """Refuse a split that trains on nothing or holds out nothing where asked to, and (`batch`) a batch beyond the data."""
    sizes = split_sizes(recipe.validation, recipe.train_limit, recipe.eval_limit, train_labels)
    total = len(train_labels)
    if sizes["train_images"] == 0:
        raise ValueError(f"validation={recipe.validation!r} holds out all {total} training images, so nothing would train; "
                         f"use a smaller validation share (the course uses 0.1)")
    if recipe.validation and sizes["val_images"] == 0:
        smallest = int(torch.bincount(train_labels).min())
        raise ValueError(f"validation={recipe.validation!r} rounds to no held-out image (of {smallest} per class), and the "
                         f"run would monitor the test set instead; use at least {1 / smallest:.2g}, or validation=0 to "
                         f"monitor the test set on purpose")
    if batch and dist.split_batch(recipe.batch_size) > sizes["train_images"]:
        raise ValueError(f"the batch size {recipe.batch_size} is larger than the {sizes['train_images']} training images, "
                         f"so there would be no step to train; use --batch-size {sizes['train_images']} or less")


def recipe_loaders(recipe, data: Cifar10, *, device: torch.device | str = "cpu", seed: int = 0) -> _Loaders:
    """The train, validation and test loaders a recipe trains with: its split, batch, augmentation, limits, size (notebook 03)."""
    check_split(recipe, data.train_labels, batch=False)  # fit says it if the batch leaves no step
    per_process = dist.split_batch(recipe.batch_size)
    size = resolve_config(recipe.model, **recipe.model_overrides).input_size
    # Evaluation holds one batch's activations: about 1000 images' worth of 32x32 pixels (as many at
    # 227x227 would take gigabytes), but no fewer than a training batch.
    eval_batch = min(1000, max(per_process, 1000 * 32 * 32 // size**2))
    common = {"device": device, "size": size, "channels_last": recipe.channels_last, "rank": dist.rank(),
              "world_size": dist.world_size()}
    train_images, train_labels, val_images, val_labels = split_validation(data, recipe.validation, recipe.train_limit,
                                                                          recipe.eval_limit)
    train = DeviceLoader(train_images, train_labels, per_process, shuffle=True, augment=recipe.augment, seed=seed,
                         flip=recipe.flip, **common)
    val = DeviceLoader(val_images, val_labels, eval_batch, shuffle=False, **common) if len(val_images) else None
    test = DeviceLoader(data.test_images, data.test_labels, eval_batch, shuffle=False, limit=recipe.eval_limit, **common)
    return _Loaders(train, val, test)


@dataclass
class _Run:
    """What one training run carries from step to step: the model and everything that updates it."""

    model: nn.Module
    step_model: nn.Module  # the model wrapped for several processes and/or compiled; the same weights
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    device: torch.device
    recipe: Recipe
    seed: int | None
    data_id: str | None = None  # the fingerprint of the data it trains on: a resume on other data is refused
    ema: nn.Module | None = None  # the moving average of the weights, which is evaluated (recipe.ema)
    slow: list[torch.Tensor] | None = None  # Lookahead's slow weights (recipe.lookahead)
    steps: int = 0

    @property
    def eval_model(self) -> nn.Module:
        """The weights a run is judged by: their moving average if the recipe keeps one, else the trained ones."""
        return self.ema if self.ema is not None else self.model

    @classmethod
    def start(cls, model: nn.Module, recipe: Recipe, device: torch.device, steps_per_epoch: int, seed: int | None,
              data_id: str | None = None) -> _Run:
        model.to(device)
        if recipe.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, recipe)
        scheduler = make_scheduler(optimizer, recipe, recipe.epochs * steps_per_epoch)
        dtype = amp_dtype(recipe.amp, device)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        step_model = dist.wrap_model(model, device)
        if recipe.compile:
            step_model = torch.compile(step_model)
        ema = copy.deepcopy(model).requires_grad_(False) if recipe.ema else None
        slow = [p.detach().clone() for p in model.parameters() if p.requires_grad] if recipe.lookahead else None
        return cls(model, step_model, optimizer, scheduler, scaler, dtype, device, recipe, seed, data_id, ema, slow)

    def after_step(self) -> None:
        """Lookahead's pull every k steps, then the moving average's update (airbench's order)."""
        self.steps += 1
        with torch.no_grad():
            if self.slow is not None and self.steps % self.recipe.lookahead == 0:
                for slow, fast in zip(self.slow, (p for p in self.model.parameters() if p.requires_grad)):
                    slow.add_(fast - slow, alpha=0.5)  # halfway to the fast weights, which restart from there
                    fast.copy_(slow)
            if self.ema is not None:
                decay = min(self.recipe.ema, (1 + self.steps) / (10 + self.steps))  # short memory while it warms up
                for average, now in zip(self.ema.parameters(), self.model.parameters()):
                    average.lerp_(now, 1 - decay)
                for average, now in zip(self.ema.buffers(), self.model.buffers()):
                    average.copy_(now)  # BatchNorm's statistics: those of the weights now

    def state(self, history: History) -> dict:
        """The checkpoint of this run after the last epoch of `history`."""
        rngs = dist.gather_objects(rng_state())
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rngs[0],
                "rng_per_rank": rngs, "processes": dist.world_size(), "history": list(history),
                "epoch": len(history), "model_config": model_config(self.model), "recipe": self.recipe.to_dict(),
                "seed": self.seed, "data": self.data_id, "steps": self.steps,
                "ema": None if self.ema is None else self.ema.state_dict(), "slow": self.slow}

    def resume(self, checkpoint: Path) -> History:
        """Load a checkpoint into this run; returns the history it holds."""
        state = load_checkpoint(checkpoint, self.model, map_location=self.device)
        if self.data_id is not None and state.get("data") not in (None, self.data_id):
            raise TrainingError(f"{checkpoint} was trained on other data (fingerprint {state['data']}) than this run's "
                                f"({self.data_id}); continue it on the data it was made with, or start a new run")
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state.get("steps", 0)
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.slow is not None:
            for slow, saved in zip(self.slow, state["slow"]):
                slow.copy_(saved)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        per_rank = state.get("rng_per_rank") or []
        # Each process continues its own random stream when the number of processes is unchanged.
        set_rng_state(per_rank[dist.rank()] if len(per_rank) == dist.world_size() else state["rng"])
        return History(state["history"])


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int, run: _Run) -> None:
    """Raise a TrainingError if the loss is not finite, summed over processes so that all of them stop together."""
    if not torch.isfinite(dist.all_reduce_sum(loss_sum.clone())):
        raise TrainingError(f"the loss became non-finite at epoch {epoch + 1}, step {step + 1} (learning rate "
                            f"{run.optimizer.param_groups[0]['lr']:.4g}); lower the learning rate, add warm-up, or switch off "
                            f"fp16")


def _train_step(run: _Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss, zero_grad, backward, step: the hand-written loop's five steps; returns (loss, logits)."""
    with autocast(run.device, run.dtype):
        logits = run.step_model(x)
    try:
        loss = compute_loss(run.recipe.loss, logits, y, run.recipe.label_smoothing)
    except RuntimeError as err:  # binary_cross_entropy refuses NaN probabilities instead of returning NaN
        if torch.isfinite(logits).all():
            raise
        raise TrainingError(f"the model's outputs became non-finite ({err}); lower the learning rate, add warm-up, "
                            f"or switch off fp16") from err
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.after_step()
    return loss.detach(), logits.detach()


def _train_one_epoch(run: _Run, loader: Iterable, epoch: int, progress: bool = True) -> dict:
    """One pass over the training loader: train loss, accuracy, seconds and images/s (notebook 03's engine)."""
    steps = len(loader)
    # A CPU checks the loss at every step (cheap there); a GPU every 25, since each check waits for the GPU.
    check_every = 1 if run.device.type == "cpu" and dist.world_size() == 1 else 25
    sums = torch.zeros(2, device=run.device, dtype=torch.float64)  # loss, correct: summed on the device, no sync
    seen = 0
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{run.recipe.epochs}", leave=False, unit="batch",
               disable=not (progress and dist.is_main_process()))
    run.model.train()
    synchronize(run.device)
    start = time.perf_counter()
    low_res = run.recipe.low_res_size if epoch < run.recipe.low_res_epochs else None
    for step, (x, y) in enumerate(loader):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        if low_res is not None:
            x = _downscale(x, low_res)
        try:
            loss, logits = _train_step(run, x, y)
        except torch.OutOfMemoryError as err:
            batch = run.recipe.batch_size
            raise TrainingError(f"{run.device.type} ran out of memory at batch size {batch} (epoch {epoch + 1}, step "
                                f"{step + 1}); try a smaller batch, e.g. --batch-size {max(1, batch // 2)}, or turn on "
                                f"mixed precision (--amp auto)") from err
        sums += torch.stack([loss.double() * len(y), (logits.argmax(1) == y).sum().double()])
        seen += len(y)
        if (step + 1) % check_every == 0 or step + 1 == steps:
            _check_finite(sums[0], epoch, step, run)
            bar.set_postfix(loss=f"{sums[0].item() / seen:.3f}")
        bar.update()
    synchronize(run.device)
    seconds = dist.all_reduce_max(time.perf_counter() - start, run.device)  # the slowest process's time
    bar.close()
    loss_sum, correct, seen = dist.all_reduce_sum(torch.cat([sums, sums.new_tensor([seen])])).tolist()
    return {"train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen, "train_seconds": seconds,
            "images_per_s": seen / seconds}


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable, recipe: Recipe, *, test_loader: Iterable | None = None,
        monitor: str = "val", seed: int | None = None, device: torch.device | str | None = None,
        checkpoint: str | os.PathLike | None = None, resume: bool = False, callbacks: Sequence[_Callback] = (),
        progress: bool = True, stop_after: int | None = None, data_id: str | None = None,
        guard: Callable[[], None] | None = None) -> History:
    """Train `model` for `recipe.epochs` epochs, evaluating and checkpointing after each (notebook 03).

    `val_loader` is scored every epoch, its metrics named after `monitor` ("val", or "test" for a benchmark);
    `test_loader`, if given, once after the last epoch. `seed` and `data_id` (the data's fingerprint) go into the
    checkpoint so a resume can check them. With `recipe.ema` the moving average is what is scored, and what `model`
    holds at the end. With `progress`, the time the run should take here is printed first, from a short probe.
    `guard`, if given, runs before each checkpoint is written and may stop the run (the command line's folder lock).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if len(train_loader) == 0:
        raise ValueError("the training loader yields no batches: is the batch size larger than the data?")
    if checkpoint is not None:  # made here once: a folder that disappears later is not made again (two writers)
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    run = _Run.start(model, recipe, device, len(train_loader), seed, data_id)
    resuming = resume and checkpoint is not None and Path(checkpoint).is_file()
    history = run.resume(Path(checkpoint)) if resuming else History()
    first = len(history)
    if progress and dist.is_main_process() and first < recipe.epochs:
        seconds, rate = estimate_seconds(run, train_loader, recipe.epochs - first)
        print(f"This machine should take about {_minutes(seconds)} to train the {recipe.epochs - first} epoch(s) left "
              f"({rate:,.0f} images/s in a short probe; evaluation comes on top).", flush=True)
    for epoch in range(first, recipe.epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)  # data order and augmentation depend only on (seed, epoch)
        trained = _train_one_epoch(run, train_loader, epoch, progress)
        history.append({"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "train_loss": trained["train_loss"],
                        "train_acc": trained["train_acc"], **evaluate(run.eval_model, val_loader, recipe, device, monitor),
                        "train_seconds": trained["train_seconds"],
                        "train_seconds_total": history.last.get("train_seconds_total", 0.0) + trained["train_seconds"],
                        "images_per_s": trained["images_per_s"]})
        if test_loader is not None and epoch + 1 == recipe.epochs:
            history.last.update(evaluate(run.eval_model, test_loader, recipe, device, "test"))  # reported, never chosen on
        _end_of_epoch(run, history, checkpoint, callbacks, guard)
        if stop_after is not None and epoch + 1 - first >= stop_after:
            break
    if run.ema is not None and len(history) == recipe.epochs:
        model.load_state_dict(run.ema.state_dict())  # the trained model is the average that was scored
    return history


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def estimate_seconds(run: _Run, loader: Iterable, epochs: int, steps: int = 3) -> tuple[float, float]:
    """Training seconds for `epochs` epochs here, and images/s, from `steps` steps of a throwaway copy (fit's first line)."""
    probe = _Run.start(copy.deepcopy(run.model), run.recipe, run.device, len(loader), None)
    x, y = next(iter(loader))
    x, y = x.to(run.device), y.to(run.device)
    cuda = [run.device.index or 0] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # dropout in the probe must not move the run's random stream
        _train_step(probe, x, y)  # the first step pays for allocation and kernel selection
        synchronize(run.device)
        start = time.perf_counter()
        for _ in range(steps - 1):
            _train_step(probe, x, y)
        synchronize(run.device)
    per_step = (time.perf_counter() - start) / (steps - 1)
    return per_step * len(loader) * epochs, len(y) / per_step


def _end_of_epoch(run: _Run, history: History, checkpoint: str | os.PathLike | None, callbacks: Sequence[_Callback],
                  guard: Callable[[], None] | None = None) -> None:
    """Checkpoint (main process only, after `guard`), then let every process catch up, then the callbacks."""
    if guard is not None and dist.is_main_process():
        guard()
    if checkpoint is not None:
        state = run.state(history)  # every process takes part: it gathers their random states
        if dist.is_main_process():
            save_checkpoint(checkpoint, state)
        dist.barrier()  # no process runs ahead of a checkpoint it could be resumed from
    if dist.is_main_process():
        for callback in callbacks:
            callback(history, run.eval_model)


def train(recipe: Recipe | str = "cpu", *, data=None, seed: int = 0, device: torch.device | str | None = None,
          **fit_options) -> tuple[nn.Module, History]:
    """Build the recipe's model and loaders, then `fit`; returns the model and its History (notebook 03).

    Under torchrun `recipe.batch_size` and `recipe.lr` stay global: each of N processes takes batch_size / N of a step.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    device = pick_device() if device is None else torch.device(device)
    data = load_cifar10() if data is None else data
    seed_everything(seed)
    model = build_model(recipe.model, **recipe.model_overrides)  # the same initial weights in every process
    if dist.world_size() > 1:
        seed_everything(seed + dist.rank())  # but different dropout masks
    loaders = recipe_loaders(recipe, data, device=device, seed=seed)
    if recipe.whiten:
        conv = model.features[0]
        conv.weight.data.copy_(whitening_filters(normalize(loaders.train.images[:5000]), conv.kernel_size[0],
                                                 conv.out_channels))
        conv.weight.requires_grad_(False)  # fixed, as airbench's whitening layer: the optimiser never sees it
    fit_options.setdefault("data_id", getattr(data, "fingerprint", None))
    if loaders.val is None:  # no validation split: monitor the test set, as a time-to-accuracy benchmark does
        return model, fit(model, loaders.train, loaders.test, recipe, monitor="test", seed=seed, device=device, **fit_options)
    return model, fit(model, loaders.train, loaders.val, recipe, test_loader=loaders.test, seed=seed, device=device,
                      **fit_options)

