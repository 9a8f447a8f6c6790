"""Named training recipes shared by the notebooks, the benchmarks and the command line, and the upstream target."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from ..course import REDUCED, is_reduced
from ..models.alexnet import ModelConfig, resolve_config
from ..plumbing.checks import is_int, is_real, lookup, one_of
from .losses import LOSSES

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
FLIPS = ("random", "alternate")
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "loss": LOSSES, "amp": AMP_MODES, "flip": FLIPS}


@dataclass
class Recipe:
    """Everything that defines a training run except the seed and the device (notebook 03's get_recipe, notebook 04)."""

    name: str = "custom"
    model: str = "cifar_alexnet_small"
    model_overrides: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False
    schedule: str = "onecycle"
    warmup: float = 0.25
    label_smoothing: float = 0.0
    loss: str = "ce"
    augment: bool = True
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    tta: bool = True
    tta_translate: bool = False
    flip: str = "random"
    ema: float = 0.0
    lookahead: int = 0
    whiten: bool = False
    low_res_epochs: int = 0
    low_res_size: int = 24
    validation: float = 0.1
    train_limit: int | None = None
    eval_limit: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):  # e.g. read back from JSON
            self.betas = tuple(self.betas)
        check_recipe(self)

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed; unknown fields are an error (notebook 03)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict of the recipe (notebook 03)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def check_recipe(r: Recipe) -> None:
    """Reject impossible hyperparameters and models with a message naming the field (Recipe, on creation)."""
    for knob, allowed in CHOICES.items():
        one_of(knob, getattr(r, knob), allowed)
    for knob in ("epochs", "batch_size"):
        if not is_int(getattr(r, knob)):
            raise ValueError(f"{knob} must be a whole number, got {getattr(r, knob)!r}")
    for knob in ("lr", "momentum", "warmup", "label_smoothing", "weight_decay", "validation"):
        if not is_real(getattr(r, knob)):
            raise ValueError(f"{knob} must be a number, got {getattr(r, knob)!r}")
    positive = {"epochs": r.epochs, "batch_size": r.batch_size, "lr": r.lr}
    for knob, value in positive.items():
        if not value > 0:
            raise ValueError(f"{knob} must be positive, got {value}")
    if not math.isfinite(r.lr):
        raise ValueError(f"lr must be finite, got {r.lr}")
    ranges = {"momentum": (r.momentum, 0, 1), "warmup": (r.warmup, 0, 1), "label_smoothing": (r.label_smoothing, 0, 1),
              "validation": (r.validation, 0, 1)}
    for knob, (value, lo, hi) in ranges.items():
        if not lo <= value < hi:
            raise ValueError(f"{knob} must lie in [{lo}, {hi}), got {value}")
    if not 0 <= r.weight_decay < math.inf:
        raise ValueError(f"weight_decay must be >= 0 and finite, got {r.weight_decay}")
    betas = r.betas
    if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(is_real(b) and 0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1) (Adam has betas, not momentum), got {betas!r}")
    for knob in ("train_limit", "eval_limit"):
        value = getattr(r, knob)
        if value is not None and (not is_int(value) or value < 1):
            raise ValueError(f"{knob} must be a positive number of images or None, got {value!r}")
    if not (is_real(r.ema) and 0 <= r.ema < 1):
        raise ValueError(f"ema must be a decay in [0, 1) (0: no averaging of the weights), got {r.ema!r}")
    if not (is_int(r.lookahead) and r.lookahead >= 0):
        raise ValueError(f"lookahead must be a whole number of steps >= 0 (0: off), got {r.lookahead!r}")
    if not (is_int(r.low_res_epochs) and 0 <= r.low_res_epochs < r.epochs):
        raise ValueError(f"low_res_epochs must be a whole number of epochs from 0 (off) to epochs - 1 = {r.epochs - 1} "
                         f"(the last epoch trains at the size the model is scored at), got {r.low_res_epochs!r}")
    if not (is_int(r.low_res_size) and r.low_res_size >= 1):
        raise ValueError(f"low_res_size must be a whole number of pixels >= 1, got {r.low_res_size!r}")
    for knob in ("nesterov", "decay_norm_and_bias", "augment", "channels_last", "compile", "tta", "tta_translate",
                 "whiten"):
        if not isinstance(getattr(r, knob), bool):
            raise ValueError(f"{knob} must be True or False, got {getattr(r, knob)!r}")
    if r.optimizer == "sgd" and r.nesterov and r.momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0 (torch's SGD refuses it); set nesterov=False for plain SGD")
    if not isinstance(r.model, (str, ModelConfig)):
        raise ValueError(f"model must be a preset name from helpers.models.PRESETS, got {r.model!r}")
    if not isinstance(r.model_overrides, dict):
        raise ValueError(f"model_overrides must be a dict of model knobs, got {r.model_overrides!r}")
    config = resolve_config(r.model, **r.model_overrides)  # an unknown preset or a bad model knob fails here
    if r.low_res_epochs and r.low_res_size >= config.input_size:
        raise ValueError(f"low_res_size={r.low_res_size} is not lower than the model's input_size={config.input_size}; "
                         f"use a smaller size, or low_res_epochs=0")
    if r.low_res_epochs:  # a size the model's poolings cannot take is refused here, not in the first step
        resolve_config(r.model, **{**r.model_overrides, "input_size": r.low_res_size})


# One line per field: the command line's --help (helpers.commands) reads it; a test checks every field has one.
FIELD_HELP = {
    "name": "the recipe's name, written into run folders and results",
    "model": "model preset from helpers.models.PRESETS",
    "model_overrides": "model knobs that differ from the preset (e.g. norm, dropout, width, num_conv)",
    "epochs": "number of epochs",
    "batch_size": "images per training step (all processes together)",
    "optimizer": "optimiser",
    "lr": "peak learning rate",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum for SGD",
    "betas": "Adam's two decay rates (Adam has betas, not momentum)",
    "weight_decay": "L2 weight decay",
    "decay_norm_and_bias": "also decay norm weights and biases",
    "schedule": "learning-rate schedule",
    "warmup": "fraction of training spent warming up the learning rate",
    "label_smoothing": "label smoothing for the cross-entropy losses",
    "loss": "loss: ce on logits, or the upstream repository's softmax_ce / bce_softmax",
    "augment": "random crop and flip of the training images",
    "amp": "mixed precision: auto (bf16/fp16 on CUDA), bf16, fp16, off",
    "channels_last": "NHWC memory format for images and weights",
    "compile": "torch.compile the model",
    "tta": "also report accuracy averaged with mirrored test images",
    "tta_translate": "with tta, also score the six-view average over images shifted by one pixel (airbench's; _tta6)",
    "flip": "training flips: random each epoch, or alternate (random in epoch 1, then each image flipped every other epoch)",
    "ema": "evaluate an exponential moving average of the weights with this decay per step (0: off)",
    "lookahead": "Lookahead: every this many steps, pull the weights halfway back to their slow copy (0: off)",
    "whiten": "first conv layer fixed to the whitening filters of the training images' patches, not trained",
    "low_res_epochs": "the first this many epochs train on images downscaled to low_res_size, which costs fewer FLOPs "
                      "(0: off)",
    "low_res_size": "side in pixels of the training images in the low-resolution epochs",
    "validation": "share of the training images held out, stratified, to monitor and choose on (0: none; the test "
                  "set is then monitored, as a time-to-accuracy benchmark does)",
    "train_limit": "use only the first N training images",
    "eval_limit": "use only the first N validation and N test images",
}

UPSTREAM = "upstream"  # the repository this course grew from
# The test accuracy the upstream repository reports for its recipe (its README): the target every comparison uses.
UPSTREAM_ACCURACY = 81.37

_CPU = Recipe(name="cpu", model="cifar_alexnet_small", model_overrides={"dropout": 0.0}, epochs=10, batch_size=256,
              optimizer="sgd", lr=0.2, weight_decay=5e-4, schedule="onecycle", warmup=0.25, label_smoothing=0.1,
              amp="bf16")
RECIPES: dict[str, Recipe] = {
    UPSTREAM: Recipe(name=UPSTREAM, model="upstream_3conv", epochs=20, batch_size=128, optimizer="adam", lr=1e-4,
                     weight_decay=5e-4, decay_norm_and_bias=True, schedule="constant", loss="bce_softmax", augment=False,
                     amp="off", channels_last=False, tta=False),
    # For a 2-core CPU with bf16 (AVX512-BF16). Chosen on the validation split by benchmarks/recipe_search.py
    # (notebook 06): without dropout, which a schedule this short underfits with, 10 epochs match 13 of cpu_v1's.
    "cpu": _CPU,
    # `cpu` stretched to 20 epochs, for a budget of about ten minutes on a 2-core CPU with native bf16: chosen on the
    # validation split by round 3 of benchmarks/recipe_search.py (notebook 06), where no other idea beat the schedule.
    "cpu_long": _CPU.replace(name="cpu_long", epochs=20),
    # The course's first CPU recipe (dropout 0.25, 13 epochs), kept so that benchmarks/time_to_accuracy.py can time
    # the old and the new recipe side by side.
    "cpu_v1": Recipe(name="cpu_v1", model="cifar_alexnet_small", epochs=13, batch_size=256, optimizer="sgd", lr=0.2,
                     weight_decay=5e-4, schedule="onecycle", warmup=0.25, label_smoothing=0.1, amp="bf16"),
    # For one CUDA GPU. Not yet measured on a GPU (README): the settings follow the CPU recipe scaled up.
    "gpu": Recipe(name="gpu", model="cifar_alexnet", epochs=30, batch_size=512, optimizer="sgd", lr=0.4,
                  weight_decay=5e-4, schedule="onecycle", warmup=0.2, label_smoothing=0.1, amp="auto"),
}

def get_recipe(name: str = "cpu", reduced: bool | None = None, **overrides) -> Recipe:
    """A named recipe ('upstream', 'cpu', 'gpu'), shrunk in reduced mode, with field overrides (notebook 03)."""
    recipe = lookup("recipe", name, RECIPES)
    changes = dict(REDUCED) if is_reduced(reduced) else {}
    changes.update(overrides)  # what the caller asks for wins over reduced mode
    return recipe.replace(**changes)  # always a copy: the registry's recipes stay as written


# Fields renamed since runs were recorded, under the names the records hash them by, so a rename orphans no record.
_RECORDED_NAMES = {"eval_limit": "test_limit"}


def recipe_from_dict(fields: dict) -> Recipe:
    """A Recipe from its to_dict() form, e.g. read from a checkpoint or a record; unknown fields are refused by name."""
    current = {old: new for new, old in _RECORDED_NAMES.items()}
    fields = {current.get(k, k): v for k, v in fields.items()}
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(Recipe)})
    if unknown:
        raise ValueError(f"the recipe holds field(s) {', '.join(unknown)} that this version of the course does not know: "
                         f"it was written by another version; use that version, or start a new run")
    return Recipe(**fields)


# Fields added since runs were recorded, with the value every earlier run had: at that value they are left out of the
# hash, so the records made before them keep their keys.
_ADDED_FIELDS = {"tta_translate": False, "flip": "random", "ema": 0.0, "lookahead": 0, "whiten": False,
                 "low_res_epochs": 0, "low_res_size": 24}


def recorded_fields(recipe: Recipe | dict) -> dict:
    """A recipe's fields under the names records hash them by (recipe_key, the benchmarks' run keys)."""
    fields = recipe.to_dict() if isinstance(recipe, Recipe) else dict(recipe)
    return {_RECORDED_NAMES.get(k, k): v for k, v in fields.items() if k not in _ADDED_FIELDS or v != _ADDED_FIELDS[k]}


def recipe_key(recipe: Recipe | dict) -> str:
    """A short hash of every recipe field: runs with the same key are the same experiment (the sweep, the benchmarks)."""
    return hashlib.sha1(json.dumps(recorded_fields(recipe), sort_keys=True, default=str).encode()).hexdigest()[:12]


def recipe_for_device(device_type: str) -> str:
    """The recipe name that suits a device type: 'gpu' on CUDA, else 'cpu' (notebook 03)."""
    return "gpu" if device_type == "cuda" else "cpu"
