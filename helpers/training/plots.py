"""Plots of training: curves per epoch (also live, as a fit callback) and learning-rate schedules (notebook 03)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt

from .engine import lr_factor
from .recipes import Recipe


def plot_history(history: Sequence[dict], title: str | None = None, loss_floor: float | None = None):
    """Loss and accuracy per epoch, train and validation (or test, where that is monitored), side by side (notebook 03).

    `loss_floor`, the lowest training loss the targets allow (label smoothing's entropy), adds the training loss
    minus that floor and the floor itself as a dotted line: what is left of the training loss that is still error.
    """
    _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    split = "val" if history and "val_acc" in history[0] else "test"
    name = {"val": "validation", "test": "test"}[split]
    epochs = [row["epoch"] for row in history]
    ax_loss, ax_acc = axes
    for ax, metric, ylabel, ax_title in ((ax_loss, "loss", "loss", "loss"), (ax_acc, "acc", "accuracy (%)", "accuracy")):
        ax.plot(epochs, [r[f"train_{metric}"] for r in history], "o-", label="train")
        ax.plot(epochs, [r[f"{split}_{metric}"] for r in history], "o-", label=name)
        ax.set(xlabel="epoch", ylabel=ylabel, title=ax_title)
    if loss_floor is not None:
        ax_loss.plot(epochs, [r["train_loss"] - loss_floor for r in history], "o-", label="train - floor")
        ax_loss.axhline(loss_floor, color="gray", linestyle=":", label=f"label-smoothing floor {loss_floor:.2f}")
    if history and f"{split}_acc_tta" in history[0]:
        ax_acc.plot(epochs, [r[f"{split}_acc_tta"] for r in history], "--", label=f"{name}, flip-TTA")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        ax_loss.figure.suptitle(title)
    ax_loss.figure.tight_layout()
    return ax_loss.figure


class LivePlot:
    """A `fit` callback that redraws the loss/accuracy curves after every epoch (notebook 03)."""

    def __init__(self, title: str | None = None) -> None:
        self.title = title
        self.handle = None

    def __call__(self, history, model) -> None:
        from IPython.display import display

        fig = plot_history(history, self.title)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def plot_lr_schedule(recipe: Recipe, steps_per_epoch: int, ax=None):
    """The learning rate a recipe uses at every step (notebook 03)."""
    total = recipe.epochs * steps_per_epoch
    steps = range(total)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    ax.plot([s / steps_per_epoch for s in steps], [recipe.lr * lr_factor(recipe.schedule, s, total, recipe.warmup)
                                                   for s in steps])
    ax.set(xlabel="epoch", ylabel="learning rate", title=f"{recipe.schedule} schedule, peak {recipe.lr:g}")
    ax.grid(alpha=0.3)
    return ax.figure
