"""Property-based tests (hypothesis) of the model and recipe knobs.

For generated model configurations and recipes, valid and invalid ones mixed (out of range,
wrong type, wrong length, impossible combinations):
- whatever the code accepts builds, runs forward to logits of shape (batch, num_classes) and
  takes one optimiser step with the real helpers (make_optimizer, make_scheduler, compute_loss)
  at a finite loss;
- whatever it rejects raises ValueError naming an offending knob.
Accept or reject is decided by an oracle written here from the documented rules (the
ModelConfig and Recipe docstrings and field comments), not by calling the validators.
Widths and FC sizes are kept small so every accepted example runs in milliseconds on a CPU.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import MISSING, fields

import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from helpers.device import amp_dtype, autocast
from helpers.models import PRESETS, build_model
from helpers.training import Recipe, compute_loss, make_optimizer
from helpers.training.engine import make_scheduler

# The documented rules, typed in again on purpose (models.py and recipes.py docstrings).
NORMS, ACTIVATIONS = ("none", "lrn", "batch"), ("relu", "leaky_relu", "gelu")
OPTIMIZERS, SCHEDULES = ("sgd", "adam", "adamw"), ("onecycle", "cosine", "step", "constant")
LOSSES, AMP_MODES = ("ce", "softmax_ce", "bce_softmax"), ("auto", "bf16", "fp16", "off")
BOOL_KNOBS = ("nesterov", "decay_norm_and_bias", "augment", "channels_last", "compile", "tta")

BATCH = 2
# About 20 s together on one shared CPU core; the example counts are what they buy.
PROPERTY = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def is_int_seq(v) -> bool:
    return isinstance(v, (tuple, list)) and all(is_int(x) for x in v)


# ---------------------------------------------------------------- strategies

WRONG_INTS = st.sampled_from(["3", 3.0, 2.5, True, None, [3]])
WRONG_REALS = ["0.5", None, True, [0.5], math.nan]
WRONG_SEQS = st.sampled_from([5, "abc", 2.0, None])
WRONG_ENTRIES = st.sampled_from([2.5, "3", True, None, -1])


def chance(draw, n: int) -> bool:
    """True about once in n draws. The middle value, not 0: hypothesis favours the ends of a range
    and shrinks towards 0, so failures shrink towards knobs left alone and valid values."""
    return draw(st.integers(0, n - 1)) == n // 2


def rarely_wrong(draw, valid, wrong, odds: int = 8):
    """A valid value, or about once in `odds` draws a wrong one."""
    return draw(wrong) if chance(draw, odds) else draw(valid)


def int_seq(draw, length: int, entries, wrong_length: bool = True):
    if wrong_length and chance(draw, 10):
        length = draw(st.integers(0, 7))
    values = [rarely_wrong(draw, entries, WRONG_ENTRIES, odds=30) for _ in range(length)]
    return rarely_wrong(draw, st.sampled_from([tuple(values), values]), WRONG_SEQS, odds=20)


@st.composite
def model_requests(draw) -> tuple[str, dict]:
    """(preset, overrides) for build_model; width and fc_size are always set small to keep it cheap."""
    preset = draw(st.sampled_from(sorted(PRESETS)))
    overrides = {
        "width": rarely_wrong(draw, st.floats(0.01, 0.25), st.sampled_from([0, -1.0, math.inf, *WRONG_REALS])),
        "fc_size": rarely_wrong(draw, st.integers(1, 32), st.one_of(st.integers(-3, 0), WRONG_INTS)),
    }
    layers = preset_layers = len(PRESETS[preset].conv_channels)
    if chance(draw, 2):
        layers = draw(st.one_of(st.integers(3, 5), st.integers(1, 7)))
        overrides["conv_channels"] = int_seq(draw, layers, st.integers(1, 48), wrong_length=False)

    def override(name: str) -> bool:
        """Sometimes; usually when the preset's own value would not fit a changed number of layers."""
        stale = layers != preset_layers and getattr(PRESETS[preset], name) not in (None, ())
        return chance(draw, 4) or (stale and not chance(draw, 4))

    if chance(draw, 2):  # the CIFAR presets fit 32 px, the paper's need 67 px or more
        overrides["input_size"] = rarely_wrong(
            draw, st.one_of(st.integers(1, 40), st.integers(60, 100), st.just(227)), st.one_of(st.integers(-2, 0), WRONG_INTS))
    for name, entries in (("conv_kernels", st.integers(1, 5)), ("conv_strides", st.integers(1, 3)),
                          ("conv_paddings", st.integers(0, 3))):
        if override(name):
            overrides[name] = None if draw(st.booleans()) else int_seq(draw, layers, entries)
    for name in ("pool_after", "norm_layers"):
        if override(name):
            indices = st.integers(-2, layers + 1) if chance(draw, 6) else st.integers(0, layers - 1)
            overrides[name] = int_seq(draw, draw(st.integers(0, 3)), indices, wrong_length=False)
    for name, valid in (("pool_kernel", st.integers(1, 4)), ("pool_stride", st.integers(1, 3)),
                        ("num_classes", st.integers(1, 12))):
        if chance(draw, 4):
            overrides[name] = rarely_wrong(draw, valid, st.one_of(st.integers(-2, 0), WRONG_INTS))
    if chance(draw, 3):
        overrides["norm"] = rarely_wrong(draw, st.sampled_from(NORMS), st.sampled_from(["group", "BATCH", None, 1]))
    if chance(draw, 3):
        overrides["activation"] = rarely_wrong(draw, st.sampled_from(ACTIVATIONS), st.sampled_from(["tanh", "ReLU", None]))
    if chance(draw, 3):
        overrides["fc_layers"] = rarely_wrong(draw, st.integers(2, 4), st.one_of(st.integers(-1, 7), WRONG_INTS), odds=3)
    if chance(draw, 3):
        overrides["dropout"] = rarely_wrong(draw, st.floats(0, 0.99),
                                            st.sampled_from([1.0, -0.1, 1.5, math.inf, "0.5", None, True]))
    if chance(draw, 5):
        overrides["num_conv"] = rarely_wrong(draw, st.integers(3, 5), st.one_of(st.integers(0, 7), WRONG_INTS), odds=3)
    return preset, overrides


# ---------------------------------------------------------------- the model oracle


def output_side(size: int, kernels, strides, paddings, pool_after, pool_kernel, pool_stride) -> int | None:
    """Side of the last feature map, or None when some conv or pooling output is smaller than 1x1."""
    for i, (k, s, p) in enumerate(zip(kernels, strides, paddings)):
        size = (size + 2 * p - k) // s + 1  # nn.Conv2d's output size
        if size < 1:
            return None
        if i in pool_after:
            size = (size - pool_kernel) // pool_stride + 1  # nn.MaxPool2d's, no padding
            if size < 1:
                return None
    return size


def geometry(c: dict) -> tuple:
    n = len(c["conv_channels"])
    kernels = c["conv_kernels"] or (3,) * n  # documented defaults
    strides = c["conv_strides"] or (1,) * n
    paddings = c["conv_paddings"] or tuple(k // 2 for k in kernels)
    return kernels, strides, paddings


def fewer_layers(c: dict, num_conv: int) -> dict:
    """with_num_conv as documented: keep the first num_conv-1 conv layers and the last; poolings move along."""
    kept = [*range(num_conv - 1), len(c["conv_channels"]) - 1]
    out = dict(c)
    for name in ("conv_channels", "conv_kernels", "conv_strides", "conv_paddings"):
        out[name] = None if c[name] is None else tuple(c[name][i] for i in kept)
    out["pool_after"] = {kept.index(i) if i in kept else num_conv - 1 for i in c["pool_after"]}
    if c["norm_layers"] is not None:
        out["norm_layers"] = tuple(kept.index(i) for i in c["norm_layers"] if i in kept)
    return out


def model_problems(preset: str, overrides: dict) -> tuple[set[str], dict]:
    """The knobs that break a documented rule (empty: must be accepted), and the resulting config."""
    overrides = dict(overrides)
    num_conv = overrides.pop("num_conv", None)
    c = {f.name: getattr(PRESETS[preset], f.name) for f in fields(PRESETS[preset])}
    c.update(overrides)
    bad = set()
    if c["norm"] not in NORMS:
        bad.add("norm")
    if c["activation"] not in ACTIVATIONS:
        bad.add("activation")
    channels = c["conv_channels"]
    n = len(channels) if is_int_seq(channels) else None
    if n is None or not 3 <= n <= 5 or min(channels) < 1:
        bad.add("conv_channels")
    for name, smallest in (("conv_kernels", 1), ("conv_strides", 1), ("conv_paddings", 0)):
        v = c[name]
        if v is not None and (not is_int_seq(v) or len(v) != n or any(x < smallest for x in v)):
            bad.add(name)
    for name in ("pool_after", "norm_layers"):
        v = c[name]
        if (v is not None or name == "pool_after") and (not is_int_seq(v) or any(not 0 <= i < (n or 0) for i in v)):
            bad.add(name)
    for name in ("input_size", "pool_kernel", "pool_stride", "fc_size", "num_classes"):
        if not is_int(c[name]) or c[name] < 1:
            bad.add(name)
    if not is_int(c["fc_layers"]) or not 2 <= c["fc_layers"] <= 4:
        bad.add("fc_layers")
    if not is_real(c["dropout"]) or not 0 <= c["dropout"] < 1:
        bad.add("dropout")
    if not is_real(c["width"]) or not 0 < c["width"] < math.inf:
        bad.add("width")
    elif "conv_channels" not in bad and min(round(ch * c["width"]) for ch in c["conv_channels"]) < 1:
        bad.add("width")  # a layer rounded to no channel
    if not bad and not fits(c):  # the config itself is built (and checked) before num_conv is applied
        bad.add("input_size")
    if num_conv is not None and (not is_int(num_conv) or not 3 <= num_conv <= (n or 5)):
        bad.add("num_conv")
    if bad:
        return bad, c
    if num_conv is not None:
        c = fewer_layers(c, num_conv)
        if not fits(c):
            return {"input_size"}, c
    return set(), c


def fits(c: dict) -> bool:
    return output_side(c["input_size"], *geometry(c), c["pool_after"], c["pool_kernel"], c["pool_stride"]) is not None


# ---------------------------------------------------------------- one real training step


def one_step(model: torch.nn.Module, recipe: Recipe, num_classes: int, input_size: int) -> float:
    """Forward, loss, backward, optimiser and scheduler step as fit does them; returns the loss."""
    device = torch.device("cpu")
    x = torch.randn(BATCH, 3, input_size, input_size)
    y = torch.randint(0, num_classes, (BATCH,))
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = amp_dtype(recipe.amp, device)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, total_steps=recipe.epochs)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    model.train()
    with autocast(device, dtype):
        logits = model(x)
    assert logits.shape == (BATCH, num_classes)
    loss = compute_loss(recipe.loss, logits, y, recipe.label_smoothing)
    assert torch.isfinite(loss), loss
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    lr = optimizer.param_groups[0]["lr"]
    assert math.isfinite(lr) and lr >= 0, lr
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), f"{name} is not finite after one step"
    return loss.item()


def assert_names_a_knob(err: ValueError, bad: set[str]) -> None:
    message = str(err)
    named = [knob for knob in bad if re.search(rf"(?<![A-Za-z_]){knob}(?![A-Za-z_])", message)]
    assert named, f"the message {message!r} names none of {sorted(bad)}"


# ---------------------------------------------------------------- properties

STEP_RECIPE = Recipe(name="property", epochs=1, batch_size=BATCH, amp="off", channels_last=False)


@settings(PROPERTY, max_examples=500)
@given(model_requests())
def test_model_configs_either_run_or_are_rejected_naming_the_knob(request):
    preset, overrides = request
    bad, config = model_problems(preset, overrides)
    note(f"preset={preset!r} overrides={overrides!r} oracle={sorted(bad)}")
    if bad:
        event(f"model rejected: {sorted(bad)[0]}")
        with pytest.raises(ValueError) as err:
            build_model(preset, **overrides)
        assert_names_a_knob(err.value, bad)
        return
    event("model accepted")
    torch.manual_seed(0)
    model = build_model(preset, **overrides)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [max(1, round(ch * config["width"])) for ch in config["conv_channels"]]
    assert sum(isinstance(m, torch.nn.Linear) for m in model.classifier) == config["fc_layers"]
    one_step(model, STEP_RECIPE, config["num_classes"], config["input_size"])


CHEAP = {"width": 0.05, "fc_size": 16}  # any preset runs in milliseconds with these


@st.composite
def recipe_requests(draw) -> dict:
    """Recipe(**kwargs) arguments: each field left at its default or drawn, mostly valid."""
    floats = st.floats  # bounds are included, and hypothesis tries them: 0 momentum, 0 warm-up, ...
    knobs = {
        "epochs": (st.integers(1, 500), st.one_of(st.integers(-2, 0), WRONG_INTS)),
        "batch_size": (st.integers(1, 1024), st.one_of(st.integers(-2, 0), WRONG_INTS)),
        "optimizer": (st.sampled_from(OPTIMIZERS), st.sampled_from(["rmsprop", "SGD", None, 1])),
        "lr": (st.one_of(floats(1e-5, 5.0), st.integers(1, 2)),
               st.sampled_from([0, -0.1, math.nan, math.inf, "0.1", None, True])),
        "momentum": (floats(0, 0.99), st.sampled_from([1.0, -0.1, math.nan, "0.9", None])),
        "betas": (st.one_of(st.tuples(floats(0, 0.999), floats(0, 0.999)), st.lists(floats(0, 0.999), min_size=2, max_size=2)),
                  st.sampled_from([(0.9,), (0.9, 1.0), (0.9, 0.99, 0.9), 0.9, "ab", (0.9, None), (math.nan, 0.9), None])),
        "weight_decay": (floats(0, 0.1), st.sampled_from([-1e-4, math.nan, math.inf, "0", None])),
        "schedule": (st.sampled_from(SCHEDULES), st.sampled_from(["linear", None])),
        "warmup": (floats(0, 0.99), st.sampled_from([1.0, -0.1, math.nan, None])),
        "label_smoothing": (floats(0, 0.99), st.sampled_from([1.0, -0.5, math.nan, "0.1"])),
        "loss": (st.sampled_from(LOSSES), st.sampled_from(["mse", None])),
        "amp": (st.sampled_from(AMP_MODES), st.sampled_from(["fp8", None, True])),
        "train_limit": (st.one_of(st.none(), st.integers(1, 10**6)), st.sampled_from([0, -5, 2.5, "100"])),
        "eval_limit": (st.one_of(st.none(), st.integers(1, 10**6)), st.sampled_from([0, -5, 2.5, "100"])),
        "model": (st.sampled_from(sorted(PRESETS)), st.sampled_from(["resnet50", "", None, 3, ["cifar_alexnet"]])),
        "model_overrides": (st.one_of(st.just(CHEAP), st.just({**CHEAP, "activation": "gelu", "num_conv": 3})),
                            st.sampled_from([{**CHEAP, "colour": 1}, {**CHEAP, "dropout": 1.5}, "width=0.5", None])),
        **{k: (st.booleans(), st.sampled_from(["no", 0, 1, None])) for k in BOOL_KNOBS if k != "compile"},
        "compile": (st.just(False), st.sampled_from(["no", 1, None])),  # True is valid but too slow to run here
    }
    kwargs = {"model_overrides": CHEAP}
    for name, (valid, wrong) in knobs.items():
        if chance(draw, 3):
            kwargs[name] = rarely_wrong(draw, valid, wrong, odds=6 if name.startswith("model") else 12)
    return kwargs


def recipe_problems(kwargs: dict) -> set[str]:
    """The fields that break a documented rule of Recipe (empty: must be accepted)."""
    r = {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(Recipe)} | kwargs
    bad = set()
    for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("loss", LOSSES), ("amp", AMP_MODES)):
        if not isinstance(r[name], str) or r[name] not in allowed:
            bad.add(name)
    for name in ("epochs", "batch_size"):
        if not is_int(r[name]) or r[name] < 1:
            bad.add(name)
    if not is_real(r["lr"]) or not 0 < r["lr"] < math.inf:
        bad.add("lr")
    for name in ("momentum", "warmup", "label_smoothing"):
        if not is_real(r[name]) or not 0 <= r[name] < 1:
            bad.add(name)
    if not is_real(r["weight_decay"]) or not 0 <= r["weight_decay"] < math.inf:
        bad.add("weight_decay")
    betas = r["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(is_real(b) and 0 <= b < 1 for b in betas):
        bad.add("betas")
    for name in ("train_limit", "eval_limit"):
        if r[name] is not None and (not is_int(r[name]) or r[name] < 1):
            bad.add(name)
    for name in BOOL_KNOBS:
        if not isinstance(r[name], bool):
            bad.add(name)
    # torch's SGD: "Nesterov momentum requires a momentum" (Recipe defaults to nesterov=True)
    if r["optimizer"] == "sgd" and r["nesterov"] is True and r["momentum"] == 0:
        bad |= {"nesterov", "momentum"}
    overrides = r["model_overrides"]
    if not isinstance(r["model"], str) or r["model"] not in PRESETS:
        bad.add("model")
    elif not isinstance(overrides, dict):
        bad.add("model_overrides")
    else:
        model_bad = {"colour"} if "colour" in overrides else model_problems(r["model"], overrides)[0]
        bad |= model_bad
    return bad


@settings(PROPERTY, max_examples=300)
@given(recipe_requests())
def test_recipes_either_train_a_step_or_are_rejected_naming_the_field(kwargs):
    bad = recipe_problems(kwargs)
    note(f"kwargs={kwargs!r} oracle={sorted(bad)}")
    if bad:
        event(f"recipe rejected: {sorted(bad)[0]}")
        with pytest.raises(ValueError) as err:
            Recipe(**kwargs)
        assert_names_a_knob(err.value, bad)
        return
    event("recipe accepted")
    recipe = Recipe(**kwargs)
    assert Recipe(**recipe.to_dict()) == recipe  # what a checkpoint stores rebuilds the same recipe
    torch.manual_seed(0)
    model = build_model(recipe.model, **recipe.model_overrides)
    one_step(model, recipe, model.config.num_classes, model.config.input_size)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_at_full_width_is_accepted_with_the_documented_shapes(preset):
    # Full-size presets (up to 58M parameters) on the meta device: shapes without memory or time.
    config = PRESETS[preset]
    assert model_problems(preset, {})[0] == set()
    with torch.device("meta"):
        model = build_model(preset)
        logits = model(torch.empty(BATCH, 3, config.input_size, config.input_size))
    assert logits.shape == (BATCH, config.num_classes)
