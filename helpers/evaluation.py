"""Evaluating a trained classifier: confusion matrix, per-class metrics, calibration, mistakes, what the layers see."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import torch
from torch import nn

from .data import show_images
from .models.alexnet import model_state
from .plumbing.checks import at_least

if TYPE_CHECKING:
    import pandas as pd


def _check_probs_labels(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, num_classes), got {tuple(probs.shape)}")
    if labels.ndim != 1 or len(labels) != len(probs):
        raise ValueError(f"labels must have shape ({len(probs)},) to match probs, got {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("probs and labels are empty: there is nothing to evaluate")
    _check_class_range("labels", labels, probs.shape[1])


def _check_class_range(name: str, values: torch.Tensor, num_classes: int) -> None:
    if values.dtype.is_floating_point or values.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices, got dtype {values.dtype}")
    if len(values) and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{name} must lie in 0..{num_classes - 1}, found {values.min().item()}..{values.max().item()}")


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Counts C[i, j] of images of true class i predicted as class j, as int64 (notebook 04)."""
    labels, preds = torch.as_tensor(labels).cpu(), torch.as_tensor(preds).cpu()
    at_least("num_classes", num_classes, 1)
    if labels.ndim != 1 or labels.shape != preds.shape:
        raise ValueError(f"labels and preds must be 1-d of equal length, got {tuple(labels.shape)} and {tuple(preds.shape)}")
    _check_class_range("labels", labels, num_classes)
    _check_class_range("preds", preds, num_classes)
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def _check_cm(cm: torch.Tensor) -> torch.Tensor:
    cm = torch.as_tensor(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square (C, C), got {tuple(cm.shape)}")
    if (cm < 0).any():
        raise ValueError("a confusion matrix holds counts; found negative entries")
    return cm


def per_class_metrics(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 (0 where undefined) and support per class from a confusion matrix (notebook 04's metrics_table)."""
    cm = _check_cm(cm).double()
    tp = cm.diag()
    predicted = cm.sum(0)  # column sums: how often each class was predicted
    support = cm.sum(1)  # row sums: how many images each class has
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.long()}


def metrics_table(cm: torch.Tensor, classes: Sequence[str]) -> pd.DataFrame:
    """Per-class precision/recall/F1/support as a pandas DataFrame with a macro-average row (notebook 04)."""
    import pandas as pd

    cm = _check_cm(cm)
    if len(classes) != cm.shape[0]:
        raise ValueError(f"{len(classes)} class names for a {cm.shape[0]}x{cm.shape[0]} confusion matrix")
    m = per_class_metrics(cm)
    table = pd.DataFrame({k: v.numpy() for k, v in m.items()}, index=list(classes))
    table.loc["macro average"] = [*(m[key].mean().item() for key in ("precision", "recall", "f1")), int(m["support"].sum())]
    table["support"] = table["support"].astype(int)
    table.index.name = "class"
    return table


def top_confusions(cm: torch.Tensor, classes: Sequence[str] | None = None, k: int = 5) -> list[dict]:
    """The k largest off-diagonal cells: true class, predicted class, count and share of the true class (notebook 04)."""
    cm = _check_cm(cm)
    at_least("k", k, 1)
    n = cm.shape[0]
    names = list(classes) if classes is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}x{n} confusion matrix")
    flat = cm.clone().fill_diagonal_(-1).flatten()
    order = sorted(range(n * n), key=lambda i: (-int(flat[i]), i))
    rows, support = [], cm.sum(1)
    for i in order[:k]:
        t, p = divmod(i, n)
        if flat[i] <= 0:
            break
        rows.append({"true": names[t], "predicted": names[p], "count": int(cm[t, p]),
                     "share_of_true": float(cm[t, p]) / max(int(support[t]), 1)})
    return rows


def top_k_accuracy(probs: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Percent of images whose true class is among the k most probable (notebook 04)."""
    _check_probs_labels(probs, labels)
    if not 1 <= k <= probs.shape[1]:
        raise ValueError(f"k must lie in 1..{probs.shape[1]}, got {k}")
    if k == 1:  # argmax, as the engine and the confusion matrix count: one top-1 accuracy wherever it is computed
        return 100.0 * (probs.argmax(1) == labels).float().mean().item()
    top = probs.topk(k, dim=1).indices
    return 100.0 * (top == labels[:, None]).any(1).float().mean().item()


def confident_mistakes(probs: torch.Tensor, labels: torch.Tensor, k: int = 16) -> torch.Tensor:
    """Indices of the (up to) k wrong predictions made with the highest confidence, most confident first (notebook 04)."""
    _check_probs_labels(probs, labels)
    at_least("k", k, 1)
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().squeeze(1)
    order = conf[wrong].argsort(descending=True, stable=True)
    return wrong[order[:k]]


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> list[dict]:
    """Equal-width confidence bins (lo, hi]: count, mean confidence and accuracy of each (notebook 04)."""
    _check_probs_labels(probs, labels)
    at_least("n_bins", n_bins, 1)
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    # bin m holds confidences in (m/M, (m+1)/M]; a confidence of exactly 0 goes to the first bin
    index = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    bins = []
    for m in range(n_bins):
        sel = index == m
        count = int(sel.sum())
        bins.append({"lo": m / n_bins, "hi": (m + 1) / n_bins, "count": count,
                     "confidence": conf[sel].mean().item() if count else float("nan"),
                     "accuracy": correct[sel].mean().item() if count else float("nan")})
    return bins


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over confidence bins, as a fraction (notebook 04).

    Guo et al. 2017 ("On Calibration of Modern Neural Networks", ICML) use 15 bins.
    """
    bins = calibration_bins(probs, labels, n_bins)
    n = sum(b["count"] for b in bins)
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])


def plot_reliability_diagram(bins: Sequence[dict], ece: float | None = None, ax: plt.Axes | None = None) -> plt.Figure:
    """Accuracy against confidence per bin, with the diagonal of perfect calibration (notebook 04)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    width = bins[0]["hi"] - bins[0]["lo"]
    lo, acc, conf = ([b[key] for b in bins if b["count"]] for key in ("lo", "accuracy", "confidence"))
    ax.bar(lo, acc, width=width, align="edge", edgecolor="k", alpha=0.8, label="accuracy in bin")
    ax.plot(conf, conf, "o", color="tab:red", ms=4, label="mean confidence in bin")
    ax.vlines(conf, acc, conf, color="tab:red", lw=1.5, label="gap |accuracy - confidence|")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    title = "reliability diagram" + (f" (ECE {100 * ece:.2f}%)" if ece is not None else "")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy", title=title)
    ax.legend(loc="best", fontsize=7)
    return ax.figure


def plot_confusion_matrix(cm: torch.Tensor, classes: Sequence[str], normalize: bool = True) -> plt.Figure:
    """Seaborn heatmap of a confusion matrix, rows normalised to percent of the true class if asked (notebook 04)."""
    import seaborn as sns

    cm = _check_cm(cm)
    values = cm.double()
    if normalize:
        values = 100 * values / values.sum(1, keepdim=True).clamp(min=1)
    _, ax = plt.subplots(figsize=(7.5, 6.5))
    sns.heatmap(values.numpy(), annot=True, fmt=".0f",
                cmap="Blues", xticklabels=classes, yticklabels=classes, ax=ax, square=True,
                cbar_kws={"label": "% of true class" if normalize else "images"})
    ax.set(xlabel="predicted class", ylabel="true class",
           title="confusion matrix" + (" (row %)" if normalize else " (counts)"))
    return ax.figure


def show_predictions(images: torch.Tensor, labels: Sequence[int], probs: torch.Tensor, classes: Sequence[str],
                     ncols: int = 8, title: str | None = None) -> plt.Figure:
    """Image grid titled "true→pred (p)" per image, green when right and red when wrong (notebook 04)."""
    if len(images) != len(labels) or len(images) != len(probs):
        raise ValueError(f"{len(images)} images, {len(labels)} labels and {len(probs)} probability rows must match")
    fig = show_images(images, ncols=ncols, title=title, size=1.6)
    conf, pred = torch.as_tensor(probs).max(1)
    for ax, t, p, c in zip(fig.axes, labels, pred.tolist(), conf.tolist()):
        ax.set_title(f"{classes[int(t)]}→{classes[p]} ({c:.2f})", fontsize=7,
                     color="tab:green" if int(t) == p else "tab:red")
    fig.tight_layout()
    return fig


def filter_grid(weight: torch.Tensor, ncols: int = 16) -> plt.Figure:
    """First-layer conv filters (out, 3, k, k) as small RGB pictures, each scaled to [0, 1] (notebook 04)."""
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected RGB conv filters of shape (out, 3, k, k), got {tuple(weight.shape)}")
    w = weight.detach().float().cpu()
    lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp(min=1e-12)
    n, _, k, _ = w.shape
    nrows, step = -(-n // ncols), k + 1  # one pixel of padding around each filter
    canvas = torch.ones(3, nrows * step + 1, ncols * step + 1)
    for i in range(n):
        r, c = divmod(i, ncols)
        canvas[:, 1 + r * step:1 + r * step + k, 1 + c * step:1 + c * step + k] = w[i]
    _, ax = plt.subplots(figsize=(ncols * 0.5, nrows * 0.5 + 0.4))
    ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{n} first-layer filters, {k}x{k}")
    return ax.figure


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU)


@torch.no_grad()
def conv_activations(model: nn.Module, image: torch.Tensor, num_convs: int = 2) -> dict[str, torch.Tensor]:
    """Feature maps after the activation of each of the first `num_convs` conv layers, for one image (notebook 04)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ValueError("conv_activations needs a model with an nn.Sequential `features` (an AlexNet from helpers.models)")
    if image.ndim != 3:
        raise ValueError(f"image must be one (3, H, W) tensor, got {tuple(image.shape)}")
    total = sum(isinstance(m, nn.Conv2d) for m in features)
    if not 1 <= num_convs <= total:
        raise ValueError(f"num_convs must lie in 1..{total} for this model, got {num_convs}")
    param = next(model.parameters())
    x = image[None].to(param.device, param.dtype)
    out, convs = {}, 0
    with model_state(model, training=False):
        for layer in features:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                convs += 1
            elif isinstance(layer, _ACTIVATIONS) and convs and f"conv{convs}" not in out:
                out[f"conv{convs}"] = x[0].float().cpu()
                if len(out) == num_convs:
                    break
    return out


def plot_feature_maps(maps: torch.Tensor, n: int = 16, title: str | None = None) -> plt.Figure:
    """The first n channels of (C, h, w) feature maps as grey images (notebook 04)."""
    if maps.ndim != 3:
        raise ValueError(f"feature maps must have shape (C, h, w), got {tuple(maps.shape)}")
    n, ncols = min(n, maps.shape[0]), 8
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.1, nrows * 1.1 + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(maps[i].numpy(), cmap="viridis")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_top_k(image: torch.Tensor, probs: torch.Tensor, classes: Sequence[str], label: int | None = None,
               k: int = 3) -> plt.Figure:
    """One uint8 (3, H, W) image beside a bar chart of its k most probable classes (notebook 04)."""
    if probs.ndim != 1 or len(probs) != len(classes):
        raise ValueError(f"probs must be one row of {len(classes)} class probabilities, got {tuple(probs.shape)}")
    values, indices = probs.topk(min(k, len(probs)))
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(6.5, 2.4), gridspec_kw={"width_ratios": [1, 1.8]})
    ax_img.imshow(image.permute(1, 2, 0).cpu().numpy())
    ax_img.axis("off")
    if label is not None:
        ax_img.set_title(f"true: {classes[int(label)]}", fontsize=9)
    names = [classes[i] for i in indices.tolist()]
    colors = ["tab:green" if label is not None and i == int(label) else "tab:gray" for i in indices.tolist()]
    ax_bar.barh(names[::-1], values.tolist()[::-1], color=colors[::-1])
    ax_bar.set(xlim=(0, 1), xlabel="probability", title=f"top-{len(names)} predictions")
    for y, v in enumerate(values.tolist()[::-1]):
        ax_bar.text(min(v + 0.02, 0.85), y, f"{v:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def prediction_explorer(images: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                        k: int = 3) -> Callable[[int], None]:
    """An ipywidgets slider over test images showing each with its top-k predicted classes (notebook 04)."""
    import ipywidgets as widgets

    if not len(images) == len(probs) == len(labels):
        raise ValueError(f"{len(images)} images, {len(probs)} probability rows and {len(labels)} labels must match")

    def show(index: int) -> None:
        plot_top_k(images[index], probs[index], classes, int(labels[index]), k)
        plt.show()

    slider = widgets.IntSlider(value=0, min=0, max=len(images) - 1, step=1, description="test image",
                               continuous_update=False)
    return widgets.interact(show, index=slider)
