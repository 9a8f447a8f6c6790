"""helpers/training/lr_range.py: the learning-rate range test on tiny synthetic data (notebook 03)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.models import build_model  # noqa: E402
from helpers.training import (
    get_recipe,  # noqa: E402
    lr_range_test,
    plot_lr_range,
)
from helpers.training.lr_range import COLUMNS  # noqa: E402

# float32 on every machine (a bf16 CPU would otherwise autocast), the course's SGD, loss and label smoothing
RECIPE = get_recipe("cpu", reduced=False, amp="off")


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cifar_alexnet_small", conv_channels=(8, 16, 16, 16, 16), fc_size=32)


@pytest.fixture
def loader() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """256 random 3x32x32 images with random labels, in 8 batches of 32."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(256, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 10, (256,), generator=gen)
    return list(zip(images.split(32), labels.split(32)))


def test_rates_grow_geometrically_from_start_to_end(model, loader):
    frame = lr_range_test(model, loader, RECIPE, start=1e-4, end=1e-2, steps=12)  # more steps than batches: cycles
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 12  # rates this small never diverge
    assert frame["lr"].iloc[0] == pytest.approx(1e-4)
    assert frame["lr"].iloc[-1] == pytest.approx(1e-2)
    ratios = frame["lr"].to_numpy()[1:] / frame["lr"].to_numpy()[:-1]
    assert ratios == pytest.approx([(1e-2 / 1e-4) ** (1 / 11)] * 11)
    assert frame["loss"].notna().all() and frame["smoothed_loss"].notna().all()
    assert frame.attrs["recipe_lr"] == RECIPE.lr


def test_first_smoothed_loss_is_the_first_loss(model, loader):
    frame = lr_range_test(model, loader, RECIPE, start=1e-4, end=1e-3, steps=3)
    assert frame["smoothed_loss"].iloc[0] == pytest.approx(frame["loss"].iloc[0])  # bias-corrected: no pull towards 0


def test_stops_early_when_the_loss_explodes(model, loader):
    steps = 60
    frame = lr_range_test(model, loader, RECIPE, start=1e-2, end=1e6, steps=steps)
    assert len(frame) < steps
    last = frame.iloc[-1]
    exploded = not math.isfinite(last["loss"]) or last["smoothed_loss"] > 4 * frame["smoothed_loss"].min()
    assert exploded
    assert frame["smoothed_loss"].iloc[:-1].le(4 * frame["smoothed_loss"].min()).all()  # it stopped at the first one


def test_the_callers_model_and_random_state_are_untouched(model, loader):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    rng = torch.get_rng_state()
    lr_range_test(model, loader, RECIPE, start=1e-3, end=10.0, steps=10)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("kwargs, message", [
    ({"start": 0.0}, "start must be a finite learning rate > 0"),
    ({"start": -1e-3}, "start must be a finite learning rate > 0"),
    ({"start": math.nan}, "start must be a finite learning rate > 0"),
    ({"start": 1e-2, "end": 1e-2}, "end must be a finite learning rate larger than start"),
    ({"start": 1e-2, "end": 1e-3}, "end must be a finite learning rate larger than start"),
    ({"end": math.inf}, "end must be a finite learning rate larger than start"),
    ({"steps": 1}, "steps must be a whole number >= 2"),
    ({"steps": 10.0}, "steps must be a whole number >= 2"),
    ({"steps": True}, "steps must be a whole number >= 2"),
])
def test_bad_arguments_say_what_to_change(model, loader, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr_range_test(model, loader, RECIPE, **kwargs)


def test_an_empty_loader_is_refused(model):
    with pytest.raises(ValueError, match="no batches"):
        lr_range_test(model, [], RECIPE, steps=5)


def test_plot_marks_the_recipes_peak_lr(model, loader):
    frame = lr_range_test(model, loader, RECIPE, start=1e-3, end=1.0, steps=8)
    fig = plot_lr_range(frame)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [line.get_label() for line in ax.lines]
    assert f"recipe's peak lr {RECIPE.lr:g}" in labels
    plt.close(fig)
    fig = plot_lr_range(frame, peak_lr=0.05)
    assert "recipe's peak lr 0.05" in [line.get_label() for line in fig.axes[0].lines]
    plt.close(fig)


def test_plot_refuses_a_frame_that_is_not_a_range_test():
    with pytest.raises(ValueError, match="lr_range_test's frame"):
        plot_lr_range(pd.DataFrame({"lr": [0.1], "loss": [2.0]}))
