"""One training engine for every notebook, benchmark and the command line.

`fit` trains a model on (images, labels) batches and returns a History; `train`
builds model and data from a named recipe and calls `fit`; `python -m helpers.train`
does the same from a terminal and writes a run folder.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as dist
from .device import cpu_supports_bf16, describe_device, pick_device, synchronize
from .recipes import Recipe, get_recipe, recipe_for_device

Callback = Callable[["History", nn.Module], None]


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, out of memory, a mismatched checkpoint); the message says why."""


class History(list):
    """Per-epoch records (dicts) of a run, with a few conveniences (notebook 03)."""

    def column(self, key: str) -> list:
        """One metric across epochs, e.g. history.column('test_acc')."""
        return [row[key] for row in self]

    @property
    def last(self) -> dict:
        """The final epoch's record."""
        return self[-1] if self else {}

    def time_to(self, accuracy: float, key: str = "test_acc") -> float | None:
        """Training seconds until the first epoch whose `key` reaches `accuracy`, or None (notebook 06)."""
        for row in self:
            if row[key] >= accuracy:
                return row["train_seconds_total"]
        return None


# ---------------------------------------------------------------- small pieces, each reusable


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and GPU) so runs repeat (notebook 03)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """Split parameters so weight decay skips norms and biases unless asked (notebook 03)."""
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
    # The fused kernel updates each tensor in one pass; the default (foreach) implementation makes
    # whole-model temporaries. For the seed's 39M-parameter model on a CPU that is about 0.3-0.4 GB
    # less peak memory (it decides whether notebook 03 fits a 2 GB Binder machine) and faster steps.
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return cls(groups, lr=recipe.lr, betas=tuple(recipe.betas), fused=fused)


def lr_factor(schedule: str, step: int, total: int, warmup: float = 0.25) -> float:
    """Multiplier on the peak learning rate at `step` of `total` for a schedule (notebook 03)."""
    frac = step / max(total, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.1 ** (int(frac >= 0.5) + int(frac >= 0.75))
    if schedule == "cosine":
        if frac < warmup:
            return (frac / warmup) if warmup else 1.0
        return 0.5 * (1 + math.cos(math.pi * (frac - warmup) / (1 - warmup)))
    if schedule == "onecycle":
        # Linear warm-up from a tenth of the peak, then linear decay to zero (airbench-style).
        if frac < warmup:
            return 0.1 + 0.9 * frac / warmup
        return max(0.0, (1 - frac) / (1 - warmup))
    raise ValueError(f"schedule={schedule!r} is not known; choose one of onecycle, cosine, step, constant")


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int):
    """A per-step LambdaLR following `lr_factor` (notebook 03)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(recipe.schedule, step, total_steps, recipe.warmup)
    )


def compute_loss(kind: str, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy on logits, or the seed's two pitfalls: CE after softmax, BCE on softmax (notebook 05)."""
    logits = logits.float()  # losses in float32 even under autocast
    if kind == "ce":
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    probs = logits.softmax(dim=1)
    if kind == "softmax_ce":
        # cross_entropy applies log_softmax again: a softmax of probabilities ("double softmax").
        return F.cross_entropy(probs, labels, label_smoothing=label_smoothing)
    if kind == "bce_softmax":
        target = F.one_hot(labels, probs.shape[1]).float()
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / probs.shape[1]
        return F.binary_cross_entropy(probs, target)
    raise ValueError(f"loss={kind!r} is not known; choose one of ce, softmax_ce, bce_softmax")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a recipe's `amp` on a device, or None for float32 (notebook 06)."""
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None  # CPU and MPS: float32 unless a recipe asks
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        warnings.warn("this CPU has no native bfloat16; training in float32 instead (bf16 would be slower)",
                      stacklevel=2)
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for `dtype`, or a no-op when dtype is None (notebook 06)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


@torch.no_grad()
def _eval_outputs(model: nn.Module, loader: Iterable, device: torch.device, dtype: torch.dtype | None,
                  channels_last: bool, tta: bool):
    """Yield (logits, logits of the mirrored images or None, labels) per batch in eval mode."""
    was_training = model.training
    model.eval()
    try:
        for x, y in loader:
            x, y = _to(x, y, device, channels_last)
            with autocast(device, dtype):
                logits = model(x)
                logits_flip = model(x.flip(3)) if tta else None
            yield logits.float(), None if logits_flip is None else logits_flip.float(), y
    finally:
        model.train(was_training)


def predict(model: nn.Module, loader: Iterable, *, tta: bool = False, device: torch.device | str | None = None,
            amp: str = "auto", channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and labels for a whole loader; `tta` averages with mirrored images (notebook 04)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    probs, labels = [], []
    for logits, logits_flip, y in _eval_outputs(model, loader, device, amp_dtype(amp, device), channels_last, tta):
        p = logits.softmax(1)
        probs.append(p if logits_flip is None else (p + logits_flip.softmax(1)) / 2)
        labels.append(y)
    return torch.cat(probs).cpu(), torch.cat(labels).cpu()


def accuracy(model: nn.Module, loader: Iterable, *, tta: bool = False, **kwargs) -> float:
    """Top-1 accuracy in percent over a loader, optionally with flip TTA (notebook 04)."""
    probs, labels = predict(model, loader, tta=tta, **kwargs)
    return 100.0 * (probs.argmax(1) == labels).float().mean().item()


def evaluate(model: nn.Module, loader: Iterable, recipe: Recipe, device: torch.device) -> dict:
    """Test loss (the recipe's loss, no smoothing) and accuracy, plus flip-TTA accuracy if the recipe asks (notebook 03).

    Under torchrun each process scores its share of the test set and the sums are added up.
    """
    loss_sum = correct = correct_tta = n = 0
    outputs = _eval_outputs(model, loader, device, amp_dtype(recipe.amp, device), recipe.channels_last, recipe.tta)
    with torch.no_grad():
        for logits, logits_flip, y in outputs:
            loss_sum += compute_loss(recipe.loss, logits, y).item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            if logits_flip is not None:
                p = logits.softmax(1) + logits_flip.softmax(1)
                correct_tta += (p.argmax(1) == y).sum().item()
            n += len(y)
    if dist.world_size() > 1:
        sums = dist.all_reduce_sum(torch.tensor([loss_sum, correct, correct_tta, n], dtype=torch.float64, device=device))
        loss_sum, correct, correct_tta, n = sums.tolist()
    out = {"test_loss": loss_sum / n, "test_acc": 100.0 * correct / n}
    if recipe.tta:
        out["test_acc_tta"] = 100.0 * correct_tta / n
    return out


# ---------------------------------------------------------------- checkpoints


def _model_config(model: nn.Module) -> dict | None:
    from .models import model_config_dict

    try:
        return model_config_dict(model)
    except (AttributeError, TypeError):
        return None


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write a checkpoint atomically: a temp file renamed over the old one, so a crash never leaves half a file (notebook 03).

    A failed write (a full disk, a lost mount) removes the temp file, keeps the previous
    checkpoint and raises a TrainingError naming the path.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(tmp, state)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # never leave half a checkpoint behind
        if not isinstance(err, OSError):
            raise
        raise TrainingError(
            f"could not write the checkpoint {path} ({err}); the previous checkpoint there, if any, is intact. "
            f"Free some disk space or write to another disk (--run-dir); a run can resume from the previous checkpoint"
        ) from err
    _fsync_dir(path.parent)


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, map_location="cpu") -> dict:
    """Read a checkpoint; with `model`, check the architecture matches and load the weights (notebook 04)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (notebook 03 or `python -m helpers.train`)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise TrainingError(f"{path}: cannot be read as a checkpoint ({type(err).__name__}: {err})") from err
    if model is not None:
        check_same_architecture(state.get("model_config"), _model_config(model), path)
        model.load_state_dict(state["model"])
    return state


def check_same_architecture(saved: dict | None, current: dict | None, where: str | os.PathLike = "checkpoint") -> None:
    """Raise a TrainingError naming both configs when a checkpoint belongs to another architecture (notebook 04)."""
    if saved is not None and current is not None and saved != current:
        diff = {k: (saved.get(k), current.get(k)) for k in sorted(set(saved) | set(current))
                if saved.get(k) != current.get(k)}
        raise TrainingError(
            f"{where} holds a different architecture.\n  checkpoint: {saved}\n  this model: {current}\n"
            f"  differing fields (checkpoint, model): {diff}\n"
            f"Build the model with the checkpoint's config (helpers.models.config_from_dict) or use a new run folder."
        )


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable,
    recipe: Recipe,
    *,
    device: torch.device | str | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    stop_after: int | None = None,
    check_every: int | None = None,
) -> History:
    """Train `model` for `recipe.epochs` epochs, evaluating and checkpointing after each (notebook 03).

    Returns a History of per-epoch dicts: epoch, lr, train_loss, train_acc, test_loss,
    test_acc (and test_acc_tta), train_seconds (this epoch, evaluation excluded),
    train_seconds_total and images_per_s. `checkpoint` is a file path written
    atomically every epoch; `resume=True` continues from it. `stop_after` ends the
    run after that many epochs (to demonstrate resuming). A non-finite loss is checked
    every `check_every` steps (default: each step on CPU, every 25 on accelerators).

    Under torchrun (helpers.distributed) the model is wrapped in DistributedDataParallel,
    the loaders give each process its share, metrics are summed over processes, and
    only rank 0 writes the checkpoint (with every process's RNG state) and runs callbacks.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError("the training loader yields no batches: is the batch size larger than the data?")
    total_steps = recipe.epochs * steps_per_epoch
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, total_steps)
    dtype = amp_dtype(recipe.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    parallel = dist.wrap_model(model, device)
    step_model = torch.compile(parallel) if recipe.compile else parallel
    world = dist.world_size()
    main_process = dist.is_main_process()
    check_every = check_every or (1 if device.type == "cpu" and world == 1 else 25)
    history = History()
    config = _model_config(model)

    start_epoch = 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, model, map_location=device)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        per_rank = state.get("rng_per_rank") or []
        # Each process continues its own random stream when the number of processes is unchanged.
        _set_rng_state(per_rank[dist.rank()] if len(per_rank) == world else state["rng"])
        history.extend(state["history"])
        start_epoch = state["epoch"]
        if start_epoch >= recipe.epochs:
            return history

    for epoch in range(start_epoch, recipe.epochs):
        if hasattr(train_loader, "epoch"):
            train_loader.epoch = epoch  # data order and augmentation depend only on (seed, epoch)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{recipe.epochs}",
                   disable=not (progress and main_process), leave=False, unit="batch")
        synchronize(device)
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(train_loader):
            x, y = _to(x, y, device, recipe.channels_last)
            try:
                with autocast(device, dtype):
                    logits = step_model(x)
                loss = compute_loss(recipe.loss, logits, y, recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            except torch.OutOfMemoryError as err:
                raise TrainingError(
                    f"{device.type} ran out of memory at batch size {recipe.batch_size} "
                    f"(epoch {epoch + 1}, step {step + 1}); try a smaller batch, e.g. --batch-size "
                    f"{max(1, recipe.batch_size // 2)}, or turn on mixed precision (--amp auto)"
                ) from err
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if (step + 1) % check_every == 0 or step + 1 == steps_per_epoch:
                # Summed over processes so that all of them stop together.
                _check_finite(dist.all_reduce_sum(loss_sum.clone()), epoch, step, optimizer)
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}")
            bar.update()
        synchronize(device)
        seconds = dist.all_reduce_max(time.perf_counter() - t0, device)
        bar.close()
        if world > 1:
            totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(seen, dtype=torch.float64, device=device)])
            loss_sum, correct, seen = dist.all_reduce_sum(totals)
            seen = int(seen.item())
        row = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum.item() / seen,
            "train_acc": 100.0 * correct.item() / seen,
            **evaluate(model, test_loader, recipe, device),
            "train_seconds": seconds,
            "train_seconds_total": (history.last.get("train_seconds_total", 0.0) if history else 0.0) + seconds,
            "images_per_s": seen / seconds,
        }
        history.append(row)
        if checkpoint is not None:
            rng = dist.gather_objects(_rng_state())
            if main_process:
                save_checkpoint(checkpoint, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng[0],
                    "rng_per_rank": rng, "processes": world,
                    "history": list(history), "epoch": epoch + 1, "model_config": config,
                    "recipe": recipe.to_dict(),
                })
            dist.barrier()  # no process runs ahead of a checkpoint it could be resumed from
        if main_process:
            for callback in callbacks:
                callback(history, model)
        if stop_after is not None and epoch + 1 - start_epoch >= stop_after:
            break
    return history


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int, optimizer: torch.optim.Optimizer) -> None:
    if not torch.isfinite(loss_sum):
        raise TrainingError(
            f"the loss became non-finite ({loss_sum.item()}) at epoch {epoch + 1}, step {step + 1} "
            f"(learning rate {optimizer.param_groups[0]['lr']:.4g}); lower the learning rate, "
            f"add warm-up, or switch off fp16"
        )


# ---------------------------------------------------------------- one call from a recipe


def train(
    recipe: Recipe | str = "cpu",
    *,
    data=None,
    seed: int = 0,
    device: torch.device | str | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[nn.Module, History]:
    """Build the recipe's model and GPU-resident loaders, then `fit` (notebook 03).

    Under torchrun, `recipe.batch_size` and `recipe.lr` stay global: each of the N processes
    takes batch_size / N images of every step, so the run takes the same steps as one process.
    """
    from .data import load_cifar10, loaders
    from .models import build_model

    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    device = pick_device() if device is None else torch.device(device)
    world, rank = dist.world_size(), dist.rank()
    per_process = dist.split_batch(recipe.batch_size)
    data = load_cifar10() if data is None else data
    seed_everything(seed)
    model = build_model(recipe.model, **recipe.model_overrides)  # the same initial weights in every process
    if world > 1:
        seed_everything(seed + rank)  # but different dropout masks
    size = model.config.input_size
    # Evaluation holds one test batch's activations: keep it near 1000 images' worth of 32x32 pixels
    # (1000 images at 227x227 take over 3 GB on a CPU), but no smaller than a training batch.
    test_batch = min(1000, max(per_process, 1000 * 32 * 32 // size**2))
    train_loader, test_loader = loaders(
        data, per_process, device=device, seed=seed, augment=recipe.augment,
        train_limit=recipe.train_limit, test_limit=recipe.test_limit, size=size, test_batch_size=test_batch,
        channels_last=recipe.channels_last, rank=rank, world_size=world,
    )
    history = fit(model, train_loader, test_loader, recipe, device=device, checkpoint=checkpoint, resume=resume,
                  callbacks=callbacks, progress=progress, stop_after=stop_after)
    return model, history


# ---------------------------------------------------------------- command line


def write_history(run_dir: str | os.PathLike, history: History) -> None:
    """Save a history as history.json and history.csv in a run folder (notebook 03)."""
    run_dir = Path(run_dir)
    (run_dir / "history.json").write_text(json.dumps(list(history), indent=1))
    if history:
        with open(run_dir / "history.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)


def _parser():
    import argparse

    from .recipes import AMP_MODES, LOSSES, OPTIMIZERS, RECIPES, SCHEDULES

    p = argparse.ArgumentParser(
        prog="python -m helpers.train",
        description="Train an AlexNet-family model on CIFAR-10 with a named recipe. Writes a run folder with "
                    "config.json, history.json/.csv, checkpoint.pt and metrics.json; --resume continues it. "
                    "Reduced mode (CI=true or ALEXNET_REDUCED=1) shrinks epochs and data.",
    )
    p.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help="named recipe (default: 'gpu' on CUDA, else 'cpu')")
    p.add_argument("--model", help="model preset from helpers.models.PRESETS (default: the recipe's)")
    p.add_argument("--norm", choices=("none", "lrn", "batch"), help="model knob: normalisation after each conv layer")
    p.add_argument("--dropout", type=float, help="model knob: dropout before each hidden Linear layer (0 for none)")
    p.add_argument("--width", type=float, help="model knob: multiplier on the conv channel widths")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--batch-size", type=int, help="images per training step")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="optimiser")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, help="L2 weight decay (not on norms/biases unless the recipe says)")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule")
    p.add_argument("--label-smoothing", type=float, help="label smoothing for cross-entropy")
    p.add_argument("--loss", choices=LOSSES, help="loss: ce on logits, or the seed's softmax_ce / bce_softmax")
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision: auto (bf16/fp16 on CUDA), bf16, fp16, off")
    p.add_argument("--no-augment", action="store_true", help="switch off random crop and flip")
    p.add_argument("--no-channels-last", action="store_true", help="keep the NCHW memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--train-limit", type=int, help="use only the first N training images")
    p.add_argument("--test-limit", type=int, help="use only the first N test images")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py/ (default: $CIFAR10_ROOT or ./data)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument("--run-dir", help="output folder (default: runs/<recipe>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop after N epochs of this call (the schedule still spans --epochs); continue with --resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: `python -m helpers.train --help` (notebook 03); also under `torchrun` (README)."""
    args = _parser().parse_args(argv)
    distributed = dist.launched_by_torchrun()
    try:
        return _main(args, distributed)
    finally:
        if distributed:
            dist.close_distributed()


def _main(args, distributed: bool) -> int:
    from .data import CIFAR10Error, load_cifar10
    from .mode import mode_banner
    from .models import resolve_config

    try:
        if args.stop_after is not None and args.stop_after < 1:
            raise ValueError(f"--stop-after must be at least 1, got {args.stop_after}")
        device = dist.init_distributed(args.device) if distributed else pick_device(args.device)
        name = args.recipe or recipe_for_device(device.type)
        flags = {
            "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer,
            "lr": args.lr, "weight_decay": args.weight_decay, "schedule": args.schedule,
            "label_smoothing": args.label_smoothing, "loss": args.loss, "amp": args.amp,
            "train_limit": args.train_limit, "test_limit": args.test_limit,
            "augment": False if args.no_augment else None, "channels_last": False if args.no_channels_last else None,
            "compile": True if args.compile else None,
        }
        recipe = get_recipe(name, **{k: v for k, v in flags.items() if v is not None})
        knobs = {k: getattr(args, k) for k in ("norm", "dropout", "width") if getattr(args, k) is not None}
        if knobs:
            recipe = recipe.replace(model_overrides={**recipe.model_overrides, **knobs})
        resolve_config(recipe.model, **recipe.model_overrides)  # an unknown model fails before any work
        processes = dist.world_size()
        dist.split_batch(recipe.batch_size)  # fails before any work
        run_dir = Path(args.run_dir or f"runs/{recipe.name}-seed{args.seed}")
        if dist.is_main_process():  # one writer per run folder
            _prepare_run_dir(run_dir, args.resume)
            _check_disk_space(run_dir, recipe)  # a full disk fails now, not at the first checkpoint
            data = load_cifar10(args.data_root, download=not args.no_download)
        dist.barrier()  # the others read what rank 0 downloaded and cached
        if not dist.is_main_process():
            data = load_cifar10(args.data_root, download=False)
    except (ValueError, CIFAR10Error, OSError) as err:
        print(f"error: {err}")
        return 2
    say = print if dist.is_main_process() else (lambda *a, **k: None)
    where = describe_device(device) + (f" | {processes} processes ({'nccl' if device.type == 'cuda' else 'gloo'})"
                                       if processes > 1 else "")
    say(where)
    say(mode_banner())
    say(f"recipe {recipe.name}: {recipe.to_dict()}")
    config = {"recipe": recipe.to_dict(), "seed": args.seed, "device": where, "processes": processes}
    if dist.is_main_process():
        (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    try:
        model, history = train(
            recipe, data=data, seed=args.seed, device=device, checkpoint=run_dir / "checkpoint.pt",
            resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after,
            callbacks=[lambda h, m: (print(_epoch_line(h.last)), write_history(run_dir, h))],
        )
    except TrainingError as err:
        print(f"error: {err}")
        return 1
    if len(history) < recipe.epochs:
        say(f"stopped after epoch {len(history)} of {recipe.epochs}; continue with the same command and --resume")
        return 0
    if dist.is_main_process():
        metrics = {**history.last, "recipe": recipe.name, "seed": args.seed, "device": where, "processes": processes}
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    say(f"done: test accuracy {history.last['test_acc']:.2f}% in {history.last['train_seconds_total']:.1f} s "
        f"of training; run folder {run_dir}")
    return 0


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
    if (run_dir / "checkpoint.pt").exists() and not resume:
        raise ValueError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or pick another --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the run folder {run_dir}: {err}; choose another --run-dir") from err
    probe = run_dir / ".write-test"
    try:
        probe.write_bytes(b"x" * 1024)
        probe.unlink()
    except OSError as err:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise OSError(f"cannot write to the run folder {run_dir}: {err}; choose another --run-dir") from err
    # A run killed while saving leaves checkpoint.pt.tmp beside the intact checkpoint.pt: drop it.
    (run_dir / "checkpoint.pt.tmp").unlink(missing_ok=True)


def _check_disk_space(run_dir: Path, recipe: Recipe) -> None:
    """Fail before any training when the run folder's disk cannot hold a checkpoint and its temporary copy."""
    import shutil

    checkpoint = run_dir / "checkpoint.pt"
    estimate = _checkpoint_bytes(recipe)
    existing = checkpoint.stat().st_size if checkpoint.is_file() else 0
    # Every save writes a whole temporary copy before it replaces the previous checkpoint: two at once.
    needed = 2 * estimate - min(existing, estimate)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise OSError(
            f"not enough disk space in {run_dir}: a checkpoint of this model and optimiser takes about "
            f"{_mib(estimate)} and each save writes a temporary copy beside the previous one, so {_mib(needed)} "
            f"must be free, but only {_mib(free)} is; free some space or pick a --run-dir on another disk"
        )


def _checkpoint_bytes(recipe: Recipe) -> int:
    """Estimated size of one checkpoint: weights and buffers, optimiser state, history, RNG states, overhead."""
    from .models import build_model

    with torch.device("meta"):  # shapes only: no memory, no time
        model = build_model(recipe.model, **recipe.model_overrides)
    tensors = model.state_dict().values()
    params = [p for p in model.parameters() if p.requires_grad]
    # SGD keeps a momentum buffer per parameter (none without momentum); Adam and AdamW keep two moments.
    slots = 2 if recipe.optimizer in ("adam", "adamw") else int(recipe.momentum > 0)
    data = sum(t.numel() * t.element_size() for t in tensors) + slots * sum(p.numel() * p.element_size() for p in params)
    records = len(tensors) + slots * len(params)  # each tensor is a zip record with its own header and padding
    return data + 1024 * records + 2048 * recipe.epochs + 32 * 1024 * (dist.world_size() + 1)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _write_synced(path: Path, state: dict) -> None:
    # torch.save reports a failed write as a vague RuntimeError ("unexpected pos ..."): keep the
    # OSError that caused it (ENOSPC, EFBIG, EIO) so the message says what went wrong.
    from types import SimpleNamespace

    failures: list[OSError] = []
    with open(path, "wb") as f:
        def write(data) -> int:
            try:
                return f.write(data)
            except OSError as err:
                failures.append(err)
                raise

        try:
            torch.save(state, SimpleNamespace(write=write, flush=f.flush))
        except RuntimeError:
            if not failures:
                raise
        if failures:
            raise failures[0]
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself survive a power cut; some platforms cannot open a folder, which is fine.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _epoch_line(row: dict) -> str:
    tta = f" (flip-TTA {row['test_acc_tta']:.2f}%)" if "test_acc_tta" in row else ""
    return (f"epoch {row['epoch']:>3}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.2f}% | "
            f"test loss {row['test_loss']:.3f} acc {row['test_acc']:.2f}%{tta} | "
            f"{row['train_seconds']:.1f} s, {row['images_per_s']:.0f} img/s")


if __name__ == "__main__":
    raise SystemExit(main())
