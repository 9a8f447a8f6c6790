"""The ideas the CPU recipe search tries (issue 31), each as a recipe field of the one engine: a moving average of the
weights, Lookahead, a fixed whitening first layer, alternating flips, translate-and-flip test-time augmentation,
low-resolution early epochs, and the time estimate printed before a run starts."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import run, tiny_loaders, tiny_recipe

from helpers.course import seed_everything
from helpers.data import normalize
from helpers.models import build_model
from helpers.models.alexnet import whitening_filters
from helpers.training import fit
from helpers.training.engine import _eval_outputs, _shifted
from helpers.training.recipes import recipe_key
from helpers.training.runs import without_timing


@pytest.mark.parametrize("changes", [{"ema": 0.9}, {"lookahead": 3}, {"ema": 0.9, "lookahead": 2},
                                     {"low_res_epochs": 2, "low_res_size": 16}])
def test_a_resumed_run_with_averaged_or_lookahead_weights_equals_the_uninterrupted_one(tmp_path, changes):
    recipe = tiny_recipe(epochs=3, **changes)
    whole_model, whole = run(recipe, seed=2)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    run(recipe, seed=2, checkpoint=checkpoint, stop_after=1)
    seed_everything(7)
    model = build_model(recipe.model)
    train, val = tiny_loaders(seed=2)
    resumed = fit(model, train, val, recipe, device="cpu", progress=False, checkpoint=checkpoint, resume=True)
    assert without_timing(resumed) == without_timing(whole)
    for name, tensor in whole_model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_the_moving_average_is_what_is_scored_and_returned():
    _, plain = run(tiny_recipe(epochs=2), seed=0)
    model, averaged = run(tiny_recipe(epochs=2, ema=0.99), seed=0)
    assert [r["train_loss"] for r in plain] == [r["train_loss"] for r in averaged]  # the same training
    assert plain.last["val_loss"] != averaged.last["val_loss"]  # other weights scored
    _, val = tiny_loaders()
    from helpers.training.engine import evaluate

    again = evaluate(model, val, tiny_recipe(epochs=2, ema=0.99), torch.device("cpu"))
    assert again["val_loss"] == pytest.approx(averaged.last["val_loss"])  # the returned model is the average


def test_whitening_filters_decorrelate_the_patches():
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (64, 3, 12, 12), generator=gen, dtype=torch.uint8)
    images = normalize(base)
    images[:, 1] = 0.7 * images[:, 0] + 0.3 * images[:, 1]  # correlated channels, as in real photographs
    filters = whitening_filters(images, 3, 54, eps=1e-6)
    assert filters.shape == (54, 3, 3, 3) and torch.equal(filters[27:], -filters[:27])
    out = torch.nn.functional.conv2d(images, filters[:27]).permute(0, 2, 3, 1).reshape(-1, 27).double()
    covariance = torch.cov(out.T)
    assert torch.allclose(covariance, torch.eye(27, dtype=torch.float64), atol=0.05)
    with pytest.raises(ValueError, match="between 2 and 54 channels"):
        whitening_filters(images, 3, 60)


def test_a_whitened_first_layer_is_fixed_during_training(tmp_path):
    from conftest import make_cifar_folder
    from helpers.data import load_cifar10
    from helpers.training import get_recipe, train

    data = load_cifar10(make_cifar_folder(tmp_path / "cifar", per_batch=40), download=False)
    recipe = get_recipe("cpu", reduced=True, amp="off", batch_size=32, whiten=True)
    model, _ = train(recipe, data=data, seed=0, device="cpu", progress=False)
    conv = model.features[0]
    assert not conv.weight.requires_grad and torch.equal(conv.weight[16:], -conv.weight[:16])  # the filters, untrained


def test_a_one_pixel_shift_mirrors_the_edge_and_keeps_the_size():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    down_right = _shifted(x, 1, 1)
    assert down_right.shape == x.shape and torch.equal(down_right[0, 0, 1:, 1:], x[0, 0, :3, :3])
    assert torch.equal(_shifted(x, -1, -1)[0, 0, :3, :3], x[0, 0, 1:, 1:])


def test_translate_tta_scores_more_views_than_flip_tta():
    _, flip = run(tiny_recipe(epochs=1), seed=0)
    _, six = run(tiny_recipe(epochs=1, tta_translate=True), seed=0)
    assert flip.last["val_acc"] == six.last["val_acc"]  # the plain score is the same model's
    assert six.last["val_acc_tta"] == flip.last["val_acc_tta"]  # flip-TTA is still reported as flip-TTA
    assert "val_acc_tta6" in six.last and "val_acc_tta6" not in flip.last


def test_new_fields_at_their_defaults_keep_the_keys_of_recorded_runs():
    recipe = tiny_recipe()
    assert recipe_key(recipe) == recipe_key({k: v for k, v in recipe.to_dict().items()
                                             if k not in ("tta_translate", "flip", "ema", "lookahead", "whiten",
                                                          "low_res_epochs", "low_res_size")})
    assert recipe_key(recipe) != recipe_key(recipe.replace(ema=0.9))


def test_a_run_says_how_long_it_should_take_here_before_it_starts(capsys):
    def loud(seed: int):
        seed_everything(seed)
        model = build_model("cifar_alexnet_small")
        train, val = tiny_loaders(seed=seed)
        return fit(model, train, val, tiny_recipe(epochs=2), device="cpu", progress=True)

    history = loud(0)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("This machine should take about ") and "images/s in a short probe" in first
    _, quiet = run(tiny_recipe(epochs=2), seed=0)
    assert without_timing(quiet) == without_timing(history)  # the probe moves no random stream and no weight


def test_low_resolution_epochs_train_on_smaller_images_then_on_full_size_ones():
    recipe = tiny_recipe(epochs=3, low_res_epochs=2, low_res_size=16, channels_last=True)
    seed_everything(0)
    model = build_model(recipe.model)
    sizes = []
    model.features[0].register_forward_pre_hook(lambda _, args: sizes.append((model.training, *args[0].shape[-2:])))
    train, val = tiny_loaders()
    history = fit(model, train, val, recipe, device="cpu", progress=False)
    trained = [s[1:] for s in sizes if s[0]]
    steps = len(train)
    assert trained == [(16, 16)] * (2 * steps) + [(32, 32)] * steps  # two epochs small, the last at full size
    assert {s[1:] for s in sizes if not s[0]} == {(32, 32)}  # scored at the size the model was built for
    assert all(math.isfinite(r["val_loss"]) for r in history)


def test_a_smaller_input_is_pooled_to_the_heads_size_and_the_full_size_is_untouched():
    seed_everything(0)
    model = build_model("cifar_alexnet_small").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model.classifier(model.features(x)))  # no pooling at the config's size
        small = torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear", antialias=True)
        assert model(small).shape == (2, 10)


@pytest.mark.parametrize("changes, message", [
    ({"low_res_epochs": 3}, "low_res_epochs must be a whole number of epochs from 0"),
    ({"low_res_epochs": -1}, "low_res_epochs must be"),
    ({"low_res_epochs": 1, "low_res_size": 32}, "not lower than the model's input_size=32"),
    ({"low_res_epochs": 1, "low_res_size": 2}, "input_size=2 is too small"),
    ({"low_res_epochs": 1, "low_res_size": 1.5}, "low_res_size must be a whole number"),
])
def test_impossible_low_resolution_settings_are_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_recipe(epochs=3, **changes)


def test_scoring_builds_no_autograd_graph():
    seed_everything(0)
    model = build_model("cifar_alexnet_small")
    _, val = tiny_loaders()
    for outputs in _eval_outputs(model, val, torch.device("cpu"), None, tta=True, translate=True):
        assert not any(t.requires_grad for t in outputs[:3])  # a graph per batch would cost memory and time
