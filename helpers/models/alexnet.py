"""AlexNet-family models: one configuration dataclass, one builder, the named presets (notebook 02).

Every network is `features` (conv blocks) then `classifier` (Linear layers) and returns logits: softmax belongs in the loss.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn
from torch.nn import functional as F

from ..plumbing.checks import is_int, is_real, lookup, one_of

NORMS = ("none", "lrn", "batch")
ACTIVATIONS = ("relu", "leaky_relu", "gelu")
_CONV_LAYER_RANGE = (3, 5)
_FC_LAYER_RANGE = (2, 4)
IN_CHANNELS = 3  # RGB images only: CIFAR-10 and the ImageNet-sized paper input

_PER_LAYER_FIELDS = ("conv_kernels", "conv_strides", "conv_paddings")
_INDEX_FIELDS = ("pool_after", "norm_layers")
_LARGEST_INPUT_SEARCHED = 4096


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an AlexNet-family network; each field is one knob (notebook 02's PRESETS and build_model).

    Per-layer tuples and layer indices count conv layers from 0 (0 = conv1); lists (e.g. from JSON) become tuples.
    """

    input_size: int = 32  # side of the square input image in pixels
    conv_channels: tuple[int, ...] = (64, 192, 384, 256, 256)  # 3..5 conv layers
    conv_kernels: tuple[int, ...] | None = None  # None: 3 for every layer
    conv_strides: tuple[int, ...] | None = None  # None: 1 for every layer
    conv_paddings: tuple[int, ...] | None = None  # None: kernel // 2, keeping the size at stride 1
    pool_after: tuple[int, ...] = (0, 1, 4)  # conv layers followed by max-pooling
    pool_kernel: int = 2  # the paper uses overlapping 3/2 pooling
    pool_stride: int = 2
    norm: str = "batch"  # "none" | "lrn" | "batch"
    norm_layers: tuple[int, ...] | None = None  # conv layers that get the norm; None: all
    activation: str = "relu"  # "relu" | "leaky_relu" | "gelu"
    fc_layers: int = 3  # Linear layers including the class head: 2..4
    fc_size: int = 1024  # width of each hidden Linear layer
    dropout: float = 0.5  # before each hidden Linear layer, 0 <= p < 1 (0 adds no Dropout)
    num_classes: int = 10
    width: float = 1.0  # multiplier on conv_channels

    def __post_init__(self) -> None:
        for name in ("conv_channels", *_PER_LAYER_FIELDS, *_INDEX_FIELDS):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                    raise ValueError(f"{name}={value!r} is not allowed; give a tuple (or list) of integers")
                object.__setattr__(self, name, tuple(value))
        _validate(self)


def _validate(config: ModelConfig) -> None:
    """Raise ValueError naming the first knob that is out of range or of the wrong type."""
    one_of("norm", config.norm, NORMS)
    one_of("activation", config.activation, ACTIVATIONS)
    for name in ("conv_channels", *_PER_LAYER_FIELDS, *_INDEX_FIELDS):
        _check_int_entries(name, getattr(config, name), none_allowed=name not in ("conv_channels", "pool_after"))
    num_conv = len(config.conv_channels)
    low, high = _CONV_LAYER_RANGE
    if not low <= num_conv <= high:
        raise ValueError(f"conv_channels={config.conv_channels!r} gives {num_conv} conv layers; use {low}..{high}")
    for name in ("fc_layers", "input_size", "pool_kernel", "pool_stride", "fc_size", "num_classes"):
        if not is_int(getattr(config, name)):
            raise ValueError(f"{name}={getattr(config, name)!r} is not allowed; use an integer")
    low, high = _FC_LAYER_RANGE
    if not low <= config.fc_layers <= high:
        raise ValueError(f"fc_layers={config.fc_layers!r} is not allowed; use {low}..{high}")
    for name in ("dropout", "width"):
        if not is_real(getattr(config, name)):
            raise ValueError(f"{name}={getattr(config, name)!r} is not allowed; use a number")
    if not 0 <= config.dropout < 1:
        raise ValueError(f"dropout={config.dropout!r} is not allowed; use 0 <= dropout < 1")
    if not 0 < config.width < math.inf:
        raise ValueError(f"width={config.width!r} is not allowed; use a finite multiplier > 0")
    positive = [(name, getattr(config, name)) for name in ("input_size", "pool_kernel", "pool_stride", "fc_size", "num_classes")]
    for name, value in positive + [("conv_channels entries", channels) for channels in config.conv_channels]:
        if value < 1:
            raise ValueError(f"{name}={value!r} is not allowed; use an integer >= 1")
    # A width that rounds a layer to no channel would build a one-channel network without a word: refuse it.
    if min(round(c * config.width) for c in config.conv_channels) < 1:
        smallest = min(config.conv_channels)
        raise ValueError(f"width={config.width!r} leaves conv layers with no channel (the narrowest has {smallest}); use a "
                         f"width of at least {1 / smallest:.3g}")
    for name in _PER_LAYER_FIELDS:
        _check_per_layer(name, getattr(config, name), num_conv)
    for name in _INDEX_FIELDS:
        _check_indices(name, getattr(config, name), num_conv)
    _check_input_size(config)


def _check_int_entries(name: str, values: tuple | None, none_allowed: bool) -> None:
    if values is None and none_allowed:
        return
    if values is None or not all(is_int(v) for v in values):
        raise ValueError(f"{name}={values!r} is not allowed; give a tuple (or list) of integers")


def _check_per_layer(name: str, values: tuple[int, ...] | None, num_conv: int) -> None:
    if values is None:
        return
    if len(values) != num_conv:
        raise ValueError(f"{name}={values!r} has {len(values)} entries; give one per conv layer ({num_conv}) or None")
    smallest = 0 if name == "conv_paddings" else 1
    if min(values) < smallest:
        raise ValueError(f"{name}={values!r} is not allowed; every entry must be >= {smallest}")


def _check_indices(name: str, values: tuple[int, ...] | None, num_conv: int) -> None:
    if values is None:
        return
    bad = [i for i in values if not 0 <= i < num_conv]
    if bad:
        raise ValueError(f"{name}={values!r} names conv layers {bad} that do not exist; use indices 0..{num_conv - 1}")


def _check_input_size(config: ModelConfig) -> None:
    stage, size = _first_empty_stage(config, config.input_size)
    if stage is None:
        return
    minimum = next((n for n in range(1, _LARGEST_INPUT_SEARCHED + 1) if _first_empty_stage(config, n)[0] is None), None)
    raise ValueError(f"input_size={config.input_size} is too small: the output of {stage} would be {size}x{size}, smaller "
                     f"than 1x1; the minimum input_size for these kernels/strides/poolings is "
                     f"{minimum or f'above {_LARGEST_INPUT_SEARCHED}'}")


def _first_empty_stage(config: ModelConfig, input_size: int) -> tuple[str | None, int]:
    """Name and size of the first stage whose output is smaller than 1x1, or (None, final size)."""
    size = input_size
    for i, (kernel, stride, padding) in enumerate(_conv_geometry(config)):
        size = _output_side(size, kernel, stride, padding)
        if size < 1:
            return f"conv{i + 1}", size
        if i in config.pool_after:
            size = _output_side(size, config.pool_kernel, config.pool_stride, 0)
            if size < 1:
                return f"the pooling after conv{i + 1}", size
    return None, size


def _output_side(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv_geometry(config: ModelConfig) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of each conv layer with the None defaults filled in (notebook 02's build_model)."""
    num_conv = len(config.conv_channels)
    kernels = config.conv_kernels or (3,) * num_conv
    strides = config.conv_strides or (1,) * num_conv
    paddings = config.conv_paddings or tuple(k // 2 for k in kernels)
    return list(zip(kernels, strides, paddings))


def _scaled_channels(config: ModelConfig) -> tuple[int, ...]:
    """Conv widths after the width multiplier (notebook 02's build_model)."""
    return tuple(round(c * config.width) for c in config.conv_channels)


def _feature_shape(config: ModelConfig) -> tuple[int, int, int]:
    """(channels, height, width) that `features` hands to the classifier (notebook 02's build_model)."""
    side = _first_empty_stage(config, config.input_size)[1]
    return _scaled_channels(config)[-1], side, side


def with_num_conv(config: ModelConfig, num_conv: int) -> ModelConfig:
    """Same config with `num_conv` conv layers: keep the first num_conv-1 and the last (notebook 05).

    The classifier's input keeps its shape; a pooling on a dropped layer moves to the last conv, so it still downsamples.
    """
    current = len(config.conv_channels)
    if not is_int(num_conv) or not _CONV_LAYER_RANGE[0] <= num_conv <= current:
        raise ValueError(f"num_conv={num_conv!r} is not allowed for a {current}-layer config; "
                         f"use {_CONV_LAYER_RANGE[0]}..{current} (start from a 5-layer preset for more)")
    kept = [*range(num_conv - 1), current - 1]
    new_index = {old: new for new, old in enumerate(kept)}
    changes = {name: None if getattr(config, name) is None else tuple(getattr(config, name)[i] for i in kept)
               for name in ("conv_channels", *_PER_LAYER_FIELDS)}
    changes["pool_after"] = tuple(sorted({new_index.get(i, num_conv - 1) for i in config.pool_after}))
    if config.norm_layers is not None:
        changes["norm_layers"] = tuple(new_index[i] for i in config.norm_layers if i in new_index)
    return replace(config, **changes)


def _make_activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}[name]()


def _conv_block(config: ModelConfig, index: int, in_channels: int, out_channels: int) -> list[nn.Module]:
    kernel, stride, padding = _conv_geometry(config)[index]
    has_norm = config.norm != "none" and (config.norm_layers is None or index in config.norm_layers)
    batch_norm = has_norm and config.norm == "batch"
    # BatchNorm subtracts the mean, so a conv bias in front of it would be wasted parameters
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(_make_activation(config.activation))
    if has_norm and config.norm == "lrn":
        # Krizhevsky et al. 2012, section 3.3: k=2, n=5, alpha=1e-4, beta=0.75. PyTorch divides alpha
        # by n inside the sum, so the paper's alpha is passed as n * 1e-4 (notebook 02 checks this).
        layers.append(nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0))
    if index in config.pool_after:
        layers.append(nn.MaxPool2d(config.pool_kernel, config.pool_stride))
    return layers


def _build_features(config: ModelConfig) -> nn.Sequential:
    channels = (IN_CHANNELS, *_scaled_channels(config))
    layers = []
    for i in range(len(channels) - 1):
        layers += _conv_block(config, i, channels[i], channels[i + 1])
    return nn.Sequential(*layers)


def _build_classifier(config: ModelConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = math.prod(_feature_shape(config))
    for _ in range(config.fc_layers - 1):
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        layers += [nn.Linear(in_features, config.fc_size), _make_activation(config.activation)]
        in_features = config.fc_size
    layers.append(nn.Linear(in_features, config.num_classes))
    return nn.Sequential(*layers)


class AlexNet(nn.Module):
    """AlexNet-family network built from a ModelConfig; forward returns logits (notebook 02)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.features = _build_features(config)
        self.classifier = _build_classifier(config)
        self._feature_side = _feature_shape(config)[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes) for images of shape (batch, 3, H, W) (notebook 02)."""
        features = self.features(x)
        if features.shape[-2:] != self._feature_side:
            # An input of another size (a recipe's low-resolution epochs): its feature map is max-pooled to the side
            # the head was built for, as torchvision's AlexNet pools to 6x6; at the config's input size nothing changes.
            features = F.adaptive_max_pool2d(features, self._feature_side)
        return self.classifier(features)


PRESETS: dict[str, ModelConfig] = {}

# Krizhevsky et al. 2012 on one GPU (no grouped convs), with a 10-class head.
PRESETS["alexnet_paper"] = ModelConfig(
    input_size=227, conv_channels=(96, 256, 384, 384, 256), conv_kernels=(11, 5, 3, 3, 3), conv_strides=(4, 1, 1, 1, 1),
    conv_paddings=(0, 2, 1, 1, 1), pool_after=(0, 1, 4), pool_kernel=3, pool_stride=2, norm="lrn", norm_layers=(0, 1),
    fc_layers=3, fc_size=4096, dropout=0.5)
# The upstream repository's variants: paper geometry, BatchNorm instead of LRN, one hidden FC layer.
PRESETS["upstream_5conv"] = replace(PRESETS["alexnet_paper"], norm="batch", fc_layers=2)
PRESETS["upstream_4conv"] = with_num_conv(PRESETS["upstream_5conv"], 4)
PRESETS["upstream_3conv"] = with_num_conv(PRESETS["upstream_5conv"], 3)
PRESETS["cifar_alexnet"] = ModelConfig()
# About a quarter of the conv compute of cifar_alexnet: the CPU recipe's model.
PRESETS["cifar_alexnet_small"] = replace(PRESETS["cifar_alexnet"], conv_channels=(32, 96, 192, 128, 128), fc_size=256,
                                         dropout=0.25)


def resolve_config(name_or_config: str | ModelConfig = "cifar_alexnet", **overrides) -> ModelConfig:
    """A preset name or config with field overrides applied; `num_conv=k` keeps k conv layers (notebook 02's build_model)."""
    config = _lookup(name_or_config)
    num_conv = overrides.pop("num_conv", None)
    allowed = [f.name for f in fields(ModelConfig)]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown model override(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}, num_conv")
    config = replace(config, **overrides)
    return config if num_conv is None else with_num_conv(config, num_conv)


def _lookup(name_or_config: str | ModelConfig) -> ModelConfig:
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    return lookup("model preset", name_or_config, PRESETS)


def build_model(name_or_config: str | ModelConfig = "cifar_alexnet", **overrides) -> AlexNet:
    """Build an AlexNet-family model from a preset name or config plus field overrides (notebook 02)."""
    return AlexNet(resolve_config(name_or_config, **overrides))


def model_config_dict(model: AlexNet | ModelConfig) -> dict:
    """A model's (or a config's) settings as a plain JSON-ready dict, for checkpoints (notebook 03's engine)."""
    config = model if isinstance(model, ModelConfig) else model.config
    return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(config).items()}


def config_from_dict(data: dict) -> ModelConfig:
    """Rebuild a ModelConfig from model_config_dict output, e.g. read from a checkpoint (notebook 04)."""
    allowed = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown model config key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return ModelConfig(**data)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, trainable or not (notebook 02)."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def model_state(model: nn.Module, training: bool = False) -> Iterator[nn.Module]:
    """Put `model` in eval (or training) state for a `with` block, then restore it (predict, conv_activations, FLOPs)."""
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)


def whitening_filters(images: torch.Tensor, kernel: int, channels: int, eps: float = 5e-4) -> torch.Tensor:
    """Conv filters (channels, 3, k, k) that whiten k x k patches of `images` (N, 3, H, W): the top channels // 2
    eigenvectors of the patches' covariance, each scaled by 1/sqrt(eigenvalue + eps), with its negative (airbench's
    frozen first layer, which gives the ReLU after it both signs) (the engine, recipe.whiten)."""
    dim = images.shape[1] * kernel * kernel
    if channels < 2 or channels // 2 > dim:
        raise ValueError(f"whitening needs between 2 and {2 * dim} channels for {kernel}x{kernel} patches, got {channels}")
    patches = images.float().unfold(2, kernel, 1).unfold(3, kernel, 1)  # N, C, H', W', k, k
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, dim).double()
    patches = patches - patches.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending
    top = eigenvectors.T.flip(0)[: channels // 2] / (eigenvalues.flip(0)[: channels // 2, None] + eps).sqrt()
    filters = torch.cat([top, -top] + ([top[:1]] if channels % 2 else []))
    return filters.view(channels, images.shape[1], kernel, kernel).float()
