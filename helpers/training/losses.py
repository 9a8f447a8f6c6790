"""The loss, and the upstream repository's two pitfalls: cross-entropy after a softmax, BCE on a softmax.

Every loss takes logits; `exact=True` computes it in float64 in a form that never rounds a confident softmax to 0 or 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..plumbing.checks import at_least, is_int, is_real, one_of

if TYPE_CHECKING:
    import pandas as pd

LOSSES = ("ce", "softmax_ce", "bce_softmax")
_LABEL_KINDS = ("right", "random", "wrong")
_GRADIENT_COLUMNS = ("scale", "mean_top_prob", "labels", "loss_kind", "loss", "grad_norm", "ratio_to_ce", "cosine_to_ce")


def compute_loss(kind: str, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                 exact: bool = False) -> torch.Tensor:
    """Cross-entropy on logits ('ce'), CE after softmax ('softmax_ce') or BCE on softmax ('bce_softmax') (notebook 02)."""
    one_of("loss", kind, LOSSES)
    z = logits.double() if exact else logits.float()  # losses in float32 even under autocast
    if kind == "ce":
        return F.cross_entropy(z, labels, label_smoothing=label_smoothing)
    if kind == "softmax_ce":
        # cross_entropy applies log_softmax again: a softmax of probabilities ("double softmax").
        return F.cross_entropy(z.softmax(1), labels, label_smoothing=label_smoothing)
    target = F.one_hot(labels, z.shape[1]).to(z.dtype)
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / z.shape[1]
    if not exact:
        return F.binary_cross_entropy(z.softmax(1), target)
    # PyTorch's binary_cross_entropy clamps log(p) to stay finite, and a confident softmax rounds p to 0 or 1.
    # log(1 - p_i) is the logsumexp of the other logits minus that of all, which never rounds.
    n, c = z.shape
    # log_p is built first: autograd sums the three paths into z's gradient in the order they were built,
    # and this order reproduces notebook 05's recorded float64 gradients to the last bit.
    log_p = z.log_softmax(1)
    others = z.unsqueeze(1).expand(n, c, c).masked_fill(torch.eye(c, dtype=torch.bool, device=z.device), float("-inf"))
    log_not_p = others.logsumexp(2) - z.logsumexp(1, keepdim=True)
    return -(target * log_p + (1 - target) * log_not_p).mean()


def softmax_ce_floor(num_classes: int = 10) -> float:
    """Smallest value cross-entropy can take on softmax outputs: -log(e / (e + C - 1)) (notebook 02)."""
    at_least("num_classes", num_classes, 2)
    return -math.log(math.e / (math.e + num_classes - 1))


def loss_gradients(scales: Sequence[float] = (0.5, 2.0, 8.0), kinds: Sequence[str] = LOSSES, *,
                   labels: Sequence[str] = ("right", "wrong"), batch: int = 2048, num_classes: int = 10, seed: int = 0,
                   exact: bool = True) -> pd.DataFrame:
    """Loss and per-example gradient w.r.t. the logits of each loss kind on random logits times each scale (notebooks 02, 05).

    Logits are `base * scale`, `base` standard normal from `seed`; labels "right" are base's argmax, "random" uniform,
    "wrong" right + 1..C-1 (mod C). `ratio_to_ce` and `cosine_to_ce` compare each gradient with cross-entropy's.
    """
    _check_gradient_arguments(scales, kinds, labels, batch, num_classes, seed)
    import pandas as pd

    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, num_classes, generator=gen, dtype=torch.float64 if exact else torch.float32)
    label_sets = {name: _draw_labels(name, base, gen) for name in labels}
    rows = []
    for scale in scales:
        logits = base * scale
        top_prob = logits.softmax(1).max(1).values.mean().item()
        for name, targets in label_sets.items():
            start = {"scale": scale, "mean_top_prob": top_prob, "labels": name}
            rows += [{**start, **row} for row in _gradient_rows(logits, targets, kinds, exact)]
    return pd.DataFrame(rows, columns=list(_GRADIENT_COLUMNS))


def _check_gradient_arguments(scales: Sequence[float], kinds: Sequence[str], labels: Sequence[str], batch: int,
                              num_classes: int, seed: int) -> None:
    for knob, values in (("scales", scales), ("kinds", kinds), ("labels", labels)):
        if isinstance(values, str) or len(values) == 0:
            raise ValueError(f"{knob} must be a non-empty sequence, got {values!r}")
    for scale in scales:
        if not is_real(scale) or not 0 <= scale < math.inf:
            raise ValueError(f"scales must be finite numbers >= 0, got {scale!r}")
    for kind in kinds:
        one_of("loss", kind, LOSSES)
    for name in labels:
        one_of("labels", name, _LABEL_KINDS)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must not repeat a label set, got {tuple(labels)}")
    if not is_int(batch) or batch < 1 or not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"need an integer batch >= 1 and num_classes >= 2, got batch={batch!r}, num_classes={num_classes!r}")
    if not is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def _draw_labels(name: str, base: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    batch, num_classes = base.shape
    if name == "random":
        return torch.randint(0, num_classes, (batch,), generator=gen)
    right = base.argmax(1)
    if name == "right":
        return right
    return (right + torch.randint(1, num_classes, (batch,), generator=gen)) % num_classes


def _gradient_rows(logits: torch.Tensor, labels: torch.Tensor, kinds: Sequence[str], exact: bool) -> list[dict]:
    losses, grads = {}, {}
    for kind in dict.fromkeys(("ce", *kinds)):  # CE always: the reference for the ratio and the cosine
        leaf = logits.detach().requires_grad_(True)
        loss = compute_loss(kind, leaf, labels, exact=exact)
        (grad,) = torch.autograd.grad(loss, leaf)
        losses[kind] = loss.item()
        grads[kind] = grad * len(leaf)  # the loss is a batch mean: undo it to get each example's gradient
    ce_norm = grads["ce"].norm(dim=1)
    rows = []
    for kind in kinds:
        norm = grads[kind].norm(dim=1)
        rows.append({"loss_kind": kind, "loss": losses[kind], "grad_norm": norm.mean().item(),
                     "ratio_to_ce": (norm.mean() / ce_norm.mean()).item(),
                     "cosine_to_ce": F.cosine_similarity(grads[kind], grads["ce"], dim=1).mean().item()})
    return rows


