"""helpers/training/losses.py: the loss bounds, the exact float64 losses, and loss_gradients against closed-form gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.training import compute_loss, loss_gradients, softmax_ce_floor, weight_decay_share
from helpers.training.losses import LOSSES


def reference_gradient(kind: str, z: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Batch loss and per-example gradients w.r.t. the logits, from the formulas, in float64 (no autograd).

    Written without differences of nearly equal numbers: 1 - p_i is the sum of the other
    probabilities, and each formula is rearranged so that a p_i near 1 cancels nothing.
    """
    z = z.double()
    n, c = z.shape
    y = torch.nn.functional.one_hot(labels, c).double()
    p = z.softmax(1)
    off = 1 - torch.eye(c, dtype=torch.float64)
    not_p = (p.unsqueeze(1) * off).sum(2)  # 1 - p_i
    if kind == "ce":  # d(-log p_y)/dz = p - y; at the label that is -(1 - p_y)
        return -(p * y).sum(1).log().mean().item(), torch.where(y.bool(), -not_p, p)
    if kind == "softmax_ce":  # CE on q = softmax(p): g = dL/dp = q - y, then dz_k = p_k sum_i p_i (g_k - g_i)
        q = p.softmax(1)
        g = q - y
        return -(q * y).sum(1).log().mean().item(), p * (p.unsqueeze(1) * (g.unsqueeze(2) - g.unsqueeze(1))).sum(2)
    # BCE on p averaged over the C outputs: d log(1 - p_i)/dz_k = [k != i] p_k / (1 - p_i) - p_k, so
    # dz_k = -(y_k - C p_k + p_k * sum over i not k, not the label, of 1 / (1 - p_i)) / C
    loss = -(y * p.log() + (1 - y) * not_p.log()).mean().item()
    others = off.unsqueeze(0) * (1 - y).unsqueeze(1)  # [n, k, i]: i != k and i != the label
    t = (others / not_p.unsqueeze(1)).sum(2)
    return loss, -(y - c * p + p * t) / c


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row cosines as torch.nn.functional.cosine_similarity defines them: each norm floored at eps."""
    return (a * b).sum(1) / (a.norm(dim=1).clamp_min(eps) * b.norm(dim=1).clamp_min(eps))


def expected_rows(scales, kinds, label_kinds, batch, num_classes, seed, exact) -> list[dict]:
    """What loss_gradients must return, computed from its specification with the closed-form gradients."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, num_classes, generator=gen, dtype=torch.float64 if exact else torch.float32)
    right = base.argmax(1)
    label_sets = {}
    for name in label_kinds:  # the draws happen in the order of label_kinds
        if name == "right":
            label_sets[name] = right
        elif name == "random":
            label_sets[name] = torch.randint(0, num_classes, (batch,), generator=gen)
        else:
            label_sets[name] = (right + torch.randint(1, num_classes, (batch,), generator=gen)) % num_classes
    rows = []
    for scale in scales:
        z = base * scale
        top = z.double().softmax(1).max(1).values.mean().item()
        for name, labels in label_sets.items():
            _, ce = reference_gradient("ce", z, labels)
            for kind in kinds:
                loss, g = reference_gradient(kind, z, labels)
                rows.append({"scale": scale, "mean_top_prob": top, "labels": name, "loss_kind": kind, "loss": loss,
                             "grad_norm": g.norm(dim=1).mean().item(),
                             "ratio_to_ce": g.norm(dim=1).mean().item() / ce.norm(dim=1).mean().item(),
                             "cosine_to_ce": cosine(g, ce).mean().item()})
    return rows


def assert_rows_match(frame, rows, rel):
    assert list(frame.columns) == ["scale", "mean_top_prob", "labels", "loss_kind", "loss", "grad_norm", "ratio_to_ce",
                                   "cosine_to_ce"]
    assert len(frame) == len(rows)
    for got, want in zip(frame.to_dict("records"), rows):
        assert (got["scale"], got["labels"], got["loss_kind"]) == (want["scale"], want["labels"], want["loss_kind"])
        for column in ("mean_top_prob", "loss", "grad_norm", "ratio_to_ce", "cosine_to_ce"):
            assert got[column] == pytest.approx(want[column], rel=rel), (want["scale"], want["labels"], want["loss_kind"], column)


def test_exact_loss_gradients_match_the_closed_forms():
    # notebook 05's table: float64, labels right and wrong, confident logits included
    frame = loss_gradients((0.5, 2.0, 8.0, 16.0), batch=256, seed=3)
    assert_rows_match(frame, expected_rows((0.5, 2.0, 8.0, 16.0), LOSSES, ("right", "wrong"), 256, 10, 3, True), rel=1e-9)


def test_float32_loss_gradients_match_the_closed_forms():
    # notebook 02's sweep: float32 as in training, labels right and random; small scales, where float32 does not round p
    args = ((0.0, 0.5, 2.0), LOSSES, ("right", "random"), 128, 7, 5)
    frame = loss_gradients(args[0], args[1], labels=args[2], batch=args[3], num_classes=args[4], seed=args[5], exact=False)
    assert_rows_match(frame, expected_rows(*args, exact=False), rel=1e-4)


def test_all_three_label_sets_in_any_order():
    kinds = ("bce_softmax",)
    frame = loss_gradients((1.0,), kinds, labels=("wrong", "random", "right"), batch=64, num_classes=4, seed=1)
    assert_rows_match(frame, expected_rows((1.0,), kinds, ("wrong", "random", "right"), 64, 4, 1, True), rel=1e-9)


def test_uniform_logits_give_log_c_and_the_ce_gradient_norm():
    # scale 0: every probability is 1/C; CE's gradient p - onehot has norm sqrt((C-1)/C) on every row
    frame = loss_gradients((0.0,), ("ce",), labels=("random",), batch=3)
    assert frame.loc[0, "loss"] == pytest.approx(math.log(10))
    assert frame.loc[0, "grad_norm"] == pytest.approx(math.sqrt(0.9))
    assert frame.loc[0, "mean_top_prob"] == pytest.approx(0.1)
    assert frame.loc[0, "ratio_to_ce"] == pytest.approx(1.0) and frame.loc[0, "cosine_to_ce"] == pytest.approx(1.0)


def test_double_softmax_squashes_loss_and_gradient():
    frame = loss_gradients([0.0, 10.0], batch=64, seed=0, labels=("right", "random"), exact=False)
    assert len(frame) == 2 * 2 * 3
    assert frame.loc[frame["scale"] == 10, "mean_top_prob"].iloc[0] > 0.8
    pick = frame.set_index(["scale", "labels", "loss_kind"])
    # confidently wrong: CE keeps a large gradient, CE on softmax outputs almost none and a bounded loss
    assert pick.loc[(10.0, "random", "ce"), "grad_norm"] > 10 * pick.loc[(10.0, "random", "softmax_ce"), "grad_norm"]
    assert pick.loc[(10.0, "random", "softmax_ce"), "loss"] <= math.log(math.e + 9) + 1e-5
    assert np.all(frame.loc[frame["loss_kind"] == "softmax_ce", "loss"] >= softmax_ce_floor(10) - 1e-6)


def test_loss_gradients_explain_the_upstream_bce_finding():
    t = loss_gradients(scales=(0.5, 8.0), batch=512).set_index(["scale", "labels", "loss_kind"])
    # Near the start of training: BCE on softmax points where CE points, with a gradient about C times smaller.
    assert t.loc[(0.5, "wrong", "bce_softmax"), "cosine_to_ce"] > 0.99
    assert 0.05 < t.loc[(0.5, "wrong", "bce_softmax"), "ratio_to_ce"] < 0.2
    # A confident mistake: the double softmax's gradient all but vanishes, BCE's does not.
    assert t.loc[(8.0, "wrong", "softmax_ce"), "ratio_to_ce"] < 0.05
    assert 0.1 < t.loc[(8.0, "wrong", "bce_softmax"), "ratio_to_ce"] < 0.3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scales": (-1.0,)}, "scales must be finite numbers >= 0"),
    ({"scales": (float("nan"),)}, "scales must be finite"),
    ({"scales": (float("inf"),)}, "scales must be finite"),
    ({"scales": ("2",)}, "scales must be finite"),
    ({"scales": ()}, "scales must be a non-empty sequence"),
    ({"kinds": ("mse",)}, "loss='mse' is not known; choose one of ce, softmax_ce, bce_softmax"),
    ({"kinds": "ce"}, "kinds must be a non-empty sequence"),
    ({"labels": ("argmax",)}, "labels='argmax' is not known; choose one of right, random, wrong"),
    ({"labels": ("right", "right")}, "must not repeat"),
    ({"batch": 0}, "batch >= 1"),
    ({"num_classes": 1}, "num_classes >= 2"),
    ({"seed": 0.5}, "seed must be an integer"),
])
def test_loss_gradients_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        loss_gradients(**kwargs)


def test_softmax_ce_floor_is_reached_by_confident_correct_logits():
    assert softmax_ce_floor(10) == pytest.approx(-math.log(math.e / (math.e + 9)))
    assert softmax_ce_floor(10) == pytest.approx(1.4612, abs=1e-4)
    logits = torch.tensor([[100.0] + [0.0] * 9])
    assert compute_loss("softmax_ce", logits, torch.tensor([0])).item() == pytest.approx(softmax_ce_floor(10), abs=1e-5)
    with pytest.raises(ValueError):
        softmax_ce_floor(1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_exact_losses_equal_the_training_losses(smoothing):
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(64, 10, generator=gen) * 2, torch.randint(0, 10, (64,), generator=gen)
    for kind in LOSSES:
        exact = compute_loss(kind, logits, labels, smoothing, exact=True)
        assert exact.dtype == torch.float64
        assert exact.item() == pytest.approx(compute_loss(kind, logits, labels, smoothing).item(), rel=1e-5)
    with pytest.raises(ValueError, match="loss='mse'"):
        compute_loss("mse", logits, labels, exact=True)


def test_weight_decay_share_measures_the_l2_term_against_the_loss_gradient():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    (grad,) = torch.autograd.grad(compute_loss("ce", model(x), y, 0.1), [model.weight])  # the bias is not decayed
    l2 = 1e-2 * model.weight.detach()
    share = weight_decay_share(model, "ce", x, y, weight_decay=1e-2)
    assert share["loss_grad_norm"] == pytest.approx(grad.norm().item())
    assert share["l2_norm"] == pytest.approx(l2.norm().item())
    assert share["l2_share"] == pytest.approx((l2.norm() / (grad.norm() + l2.norm())).item())
    assert share["weights_led_by_l2"] == pytest.approx((l2.abs() > grad.abs()).double().mean().item())
    none = weight_decay_share(model, "ce", x, y, weight_decay=0.0)
    assert none["l2_norm"] == none["l2_share"] == none["weights_led_by_l2"] == 0.0
    # BCE on softmax has a smaller loss gradient, so the same L2 term takes a larger share.
    assert weight_decay_share(model, "bce_softmax", x, y, weight_decay=1e-2)["l2_share"] > share["l2_share"]
    with pytest.raises(ValueError, match="weight_decay"):
        weight_decay_share(model, "ce", x, y, weight_decay=-1.0)
    with pytest.raises(ValueError, match="loss"):
        weight_decay_share(model, "mse", x, y)
