"""Named training recipes shared by the notebooks, the benchmarks and the command line."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from .mode import reduced_mode
from .models import ModelConfig, resolve_config

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
LOSSES = ("ce", "softmax_ce", "bce_softmax")
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class Recipe:
    """Everything that defines a training run except the seed and the device (notebook 03)."""

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
    train_limit: int | None = None
    test_limit: int | None = None

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


def _one_of(knob: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{knob}={value!r} is not known; choose one of {', '.join(allowed)}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_recipe(r: Recipe) -> None:
    """Reject impossible hyperparameters and models with a message naming the field (notebook 03)."""
    _one_of("optimizer", r.optimizer, OPTIMIZERS)
    _one_of("schedule", r.schedule, SCHEDULES)
    _one_of("loss", r.loss, LOSSES)
    _one_of("amp", r.amp, AMP_MODES)
    for knob in ("epochs", "batch_size"):
        if not _is_int(getattr(r, knob)):
            raise ValueError(f"{knob} must be a whole number, got {getattr(r, knob)!r}")
    for knob in ("lr", "momentum", "warmup", "label_smoothing", "weight_decay"):
        if not _is_real(getattr(r, knob)):
            raise ValueError(f"{knob} must be a number, got {getattr(r, knob)!r}")
    positive = {"epochs": r.epochs, "batch_size": r.batch_size, "lr": r.lr}
    for knob, value in positive.items():
        if not value > 0:
            raise ValueError(f"{knob} must be positive, got {value}")
    if not math.isfinite(r.lr):
        raise ValueError(f"lr must be finite, got {r.lr}")
    ranges = {"momentum": (r.momentum, 0, 1), "warmup": (r.warmup, 0, 1), "label_smoothing": (r.label_smoothing, 0, 1)}
    for knob, (value, lo, hi) in ranges.items():
        if not lo <= value < hi:
            raise ValueError(f"{knob} must lie in [{lo}, {hi}), got {value}")
    if not 0 <= r.weight_decay < math.inf:
        raise ValueError(f"weight_decay must be >= 0 and finite, got {r.weight_decay}")
    betas = r.betas
    if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(_is_real(b) and 0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1) (Adam has betas, not momentum), got {betas!r}")
    for knob in ("train_limit", "test_limit"):
        value = getattr(r, knob)
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(f"{knob} must be a positive number of images or None, got {value!r}")
    for knob in ("nesterov", "decay_norm_and_bias", "augment", "channels_last", "compile", "tta"):
        if not isinstance(getattr(r, knob), bool):
            raise ValueError(f"{knob} must be True or False, got {getattr(r, knob)!r}")
    if r.optimizer == "sgd" and r.nesterov and r.momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0 (torch's SGD refuses it); set nesterov=False for plain SGD")
    if not isinstance(r.model, (str, ModelConfig)):
        raise ValueError(f"model must be a preset name from helpers.models.PRESETS, got {r.model!r}")
    if not isinstance(r.model_overrides, dict):
        raise ValueError(f"model_overrides must be a dict of model knobs, got {r.model_overrides!r}")
    resolve_config(r.model, **r.model_overrides)  # an unknown preset or a bad model knob fails here, not in training


RECIPES: dict[str, Recipe] = {
    # The seed repository: 3-conv AlexNet on 227x227 upscaled images, Adam 1e-4 with L2 5e-4 on
    # every parameter, batch 128, BCE on softmax outputs, fp32, no augmentation, 20 epochs.
    "seed": Recipe(
        name="seed", model="seed_3conv", epochs=20, batch_size=128, optimizer="adam", lr=1e-4,
        weight_decay=5e-4, decay_norm_and_bias=True, schedule="constant", loss="bce_softmax",
        augment=False, amp="off", channels_last=False, tta=False,
    ),
    # Tuned for a 2-core CPU with bf16 (AVX512-BF16): a narrow CIFAR-native AlexNet, one-cycle
    # SGD with Nesterov momentum, label smoothing, crop+flip augmentation, flip TTA at test time.
    "cpu": Recipe(
        name="cpu", model="cifar_alexnet_small", epochs=13, batch_size=256, optimizer="sgd", lr=0.2,
        weight_decay=5e-4, schedule="onecycle", warmup=0.25, label_smoothing=0.1, amp="bf16",
    ),
    # For one CUDA GPU: the full-width CIFAR-native AlexNet, same recipe family, bf16 autocast.
    # Not yet measured on a GPU (see README): the settings follow the CPU recipe scaled up.
    "gpu": Recipe(
        name="gpu", model="cifar_alexnet", epochs=30, batch_size=512, optimizer="sgd", lr=0.4,
        weight_decay=5e-4, schedule="onecycle", warmup=0.2, label_smoothing=0.1, amp="auto",
    ),
}

# What reduced mode (CI) keeps of any recipe: every code path, little data.
REDUCED = {"epochs": 2, "train_limit": 2048, "test_limit": 1000}


def get_recipe(name: str = "cpu", reduced: bool | None = None, **overrides) -> Recipe:
    """A named recipe ('seed', 'cpu', 'gpu'), shrunk in reduced mode, with field overrides (notebook 03)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if reduced_mode() if reduced is None else reduced:
        recipe = recipe.replace(**{k: v for k, v in REDUCED.items() if k not in overrides})
    return recipe.replace(**overrides)


# The seed's own batch of 128 images at 227x227 with Adam peaks at about 2.7 GB on a CPU, above the 2 GB of
# a Binder machine. Its 39M parameters with their gradients and Adam's two buffers are 0.6 GB whatever the
# batch; the activations are what the batch scales. At 16 a one-epoch seed run in a fresh process peaked
# 0.9 GB above the loaded data (1.04 GB at 32), and a CPU's per-image cost barely moves with the batch
# (35.1 vs 35.9 img/s at 16 and 32 on the 2-core machine of the README, fused Adam).
SEED_TIMING_BATCH_CPU = 16


def seed_timing_batch(device_type: str) -> int:
    """Batch for timing the seed's model: its own 128 on a GPU, 16 on a CPU to fit a 2 GB machine (notebooks 03, 06)."""
    return SEED_TIMING_BATCH_CPU if device_type == "cpu" else RECIPES["seed"].batch_size


def recipe_for_device(device_type: str) -> str:
    """The recipe name that suits a device type: 'gpu' on CUDA, else 'cpu' (notebook 03)."""
    return "gpu" if device_type == "cuda" else "cpu"
