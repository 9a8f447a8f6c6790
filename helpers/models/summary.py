"""Looking inside a model: a layer-by-layer table of output shapes, parameters and FLOPs, and the presets side by side.

The one place the course counts FLOPs. They are FlopCounterMode's: 2 x multiply-adds of convs and matmuls; biases,
activations, norms and poolings count 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from ..plumbing.checks import unknown_names
from .alexnet import IN_CHANNELS, PRESETS, build_model, count_parameters, model_state


def _counter():
    # Not at the top: with a CUDA build it loads Triton (tens of MB), which notebooks that never count FLOPs need not carry.
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False)


def _images(model: nn.Module, batch: int) -> torch.Tensor:
    reference = next(model.parameters())
    size = model.config.input_size
    return torch.zeros(batch, IN_CHANNELS, size, size, device=reference.device, dtype=reference.dtype)


def summarize(model: nn.Module) -> list[dict]:
    """One row per leaf layer, in call order: layer, type, output_shape, params, flops per image (notebook 02)."""
    if getattr(model, "config", None) is None:
        raise ValueError("summarize needs a course model (helpers.models.build_model), whose config gives the input size")
    leaves = {name: module for name, module in model.named_modules() if not any(module.children())}
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [module.register_forward_hook(_shape_recorder(shapes, name)) for name, module in leaves.items()]
    try:
        with model_state(model, training=False), torch.no_grad(), _counter() as counter:
            model(_images(model, 1))
    finally:
        for hook in hooks:
            hook.remove()
    flops = counter.get_flop_counts()
    prefix = type(model).__name__  # FlopCounterMode names modules "<ClassName>.<qualified name>"
    return [{"layer": name, "type": type(leaves[name]).__name__, "output_shape": shape, "params": count_parameters(leaves[name]),
             "flops": int(sum(flops.get(f"{prefix}.{name}", {}).values()))} for name, shape in shapes.items()]


def _shape_recorder(shapes: dict[str, tuple[int, ...]], name: str):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        shapes[name] = tuple(output.shape[1:])

    return hook


def total_flops(model: nn.Module) -> int:
    """FLOPs of one forward pass of one image, as FlopCounterMode counts them (notebook 05)."""
    return sum(row["flops"] for row in summarize(model))


def step_flops(model: nn.Module | str) -> dict:
    """FLOPs per image of a forward pass and of a training step (forward + backward) (notebook 06)."""
    model = build_model(model) if isinstance(model, str) else model
    batch = 2  # BatchNorm in training mode needs more than one image
    with model_state(model, training=True):
        try:
            with _counter() as forward:
                out = model(_images(model, batch))
            with _counter() as backward:
                out.float().sum().backward()
        finally:
            model.zero_grad(set_to_none=True)
    fwd, bwd = forward.get_total_flops() / batch, backward.get_total_flops() / batch
    return {"forward": int(fwd), "backward": int(bwd), "train": int(fwd + bwd)}


def summary_frame(model: nn.Module) -> pd.DataFrame:
    """`summarize` as a DataFrame, output shapes written CxHxW (notebook 02)."""
    rows = summarize(model)
    frame = pd.DataFrame(rows, columns=["layer", "type", "output_shape", "params", "flops"])
    frame["output_shape"] = ["x".join(map(str, shape)) for shape in frame["output_shape"]]
    return frame


def preset_table(names: Sequence[str] | None = None) -> pd.DataFrame:
    """Input size, layer counts, parameters, FC share and FLOPs per image of model presets (notebook 02)."""
    names = list(PRESETS) if names is None else list(names)
    unknown_names("preset(s)", names, PRESETS)
    rows = []
    for name in names:
        with torch.device("meta"):  # shapes only: no memory, no random init, same counts
            model = build_model(name)
        frame = summary_frame(model)
        params = count_parameters(model)
        fc_params = int(frame.loc[frame["type"] == "Linear", "params"].sum())
        rows.append({"preset": name, "input": f"{model.config.input_size}x{model.config.input_size}",
                     "conv_layers": len(model.config.conv_channels), "fc_layers": model.config.fc_layers, "params": params,
                     "fc_share_of_params": fc_params / params, "flops": int(frame["flops"].sum())})
    return pd.DataFrame(rows).set_index("preset")
