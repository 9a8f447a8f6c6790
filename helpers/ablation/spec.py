"""The ablation study written as data: one-change variants of a baseline recipe, grouped by the question they answer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..course import REDUCED, is_full
from ..plumbing.checks import lookup, unknown_names
from ..training.recipes import Recipe, get_recipe

_BASELINE_RECIPE = "cpu"
# The sweep's fixed per-run budget: the cpu recipe with its schedule compressed to this many epochs. 17 CPU variants x
# 3 seeds are 51 runs; at 5 epochs they took 2.7 hours of training on a 2-core Intel Xeon with AVX512-BF16 (the
# fastest run of each variant x 3; LRN, slow in PyTorch on a CPU, about a third), inside the 4 hours allowed;
# 10 epochs would have doubled it.
SWEEP_EPOCHS = 5


@dataclass(frozen=True)
class Variant:
    """One run configuration of the sweep: the baseline with one recipe field or model knob changed (an entry of VARIANTS)."""

    name: str  # unique key, used in the results file
    group: str  # the question it answers, e.g. "loss"
    label: str  # what the chart shows, e.g. "BCE on softmax"
    recipe_changes: dict = field(default_factory=dict)  # Recipe fields to replace
    model_overrides: dict = field(default_factory=dict)  # merged into Recipe.model_overrides
    reference: str = "baseline"  # the variant this one differs from by one change


@dataclass(frozen=True)
class Group:
    """A question of the sweep: its variants are compared with one reference run (an entry of GROUPS)."""

    name: str
    title: str
    reference: str  # name of the variant every member differs from
    reference_label: str  # what the reference is called in this group's chart


BASELINE = Variant("baseline", "baseline", f"baseline (cpu recipe, {SWEEP_EPOCHS} epochs)")

GROUPS: dict[str, Group] = {g.name: g for g in (
    Group("conv", "conv layers", "baseline", "5 conv"),
    Group("fc", "FC layers", "baseline", "3 FC"),
    Group("activation", "activation", "baseline", "ReLU"),
    Group("loss", "loss (SGD one-cycle)", "baseline", "CE on logits"),
    Group("loss_adam", "loss (Adam 1e-4, as upstream)", "adam", "CE on logits"),
    Group("norm", "normalisation", "baseline", "BatchNorm"),
    Group("dropout", "dropout", "baseline", "no dropout"),
    Group("augment", "augmentation", "baseline", "crop + flip"),
    Group("input", "input size", "conv_3", "32x32, 3 conv"),
    Group("optimizer", "optimiser", "baseline", "SGD one-cycle"),
)}

# Groups left out of a CPU sweep unless named: upstream's 39M-parameter model at 227x227 takes hours per run there.
SLOW_ON_CPU_GROUPS = ("input",)


def groups_for_device(device_type: str) -> list[str]:
    """Every group on CUDA; on a CPU or Apple GPU all but the slow ones (notebook 05, `python -m helpers.ablation`)."""
    return [g for g in GROUPS if device_type == "cuda" or g not in SLOW_ON_CPU_GROUPS]


_ADAM = {"optimizer": "adam", "lr": 1e-4, "schedule": "constant"}

VARIANTS: list[Variant] = [
    BASELINE,
    Variant("conv_3", "conv", "3 conv", model_overrides={"num_conv": 3}),
    Variant("conv_4", "conv", "4 conv", model_overrides={"num_conv": 4}),
    Variant("fc_2", "fc", "2 FC", model_overrides={"fc_layers": 2}),
    Variant("fc_4", "fc", "4 FC", model_overrides={"fc_layers": 4}),
    Variant("leaky_relu", "activation", "LeakyReLU", model_overrides={"activation": "leaky_relu"}),
    Variant("gelu", "activation", "GELU", model_overrides={"activation": "gelu"}),
    Variant("softmax_ce", "loss", "CE after softmax", {"loss": "softmax_ce"}),
    Variant("bce_softmax", "loss", "BCE on softmax", {"loss": "bce_softmax"}),
    Variant("norm_none", "norm", "no norm", model_overrides={"norm": "none"}),
    Variant("norm_lrn", "norm", "LRN", model_overrides={"norm": "lrn"}),
    Variant("dropout_0.25", "dropout", "dropout 0.25", model_overrides={"dropout": 0.25}),
    Variant("dropout_0.5", "dropout", "dropout 0.5", model_overrides={"dropout": 0.5}),
    Variant("no_augment", "augment", "no augmentation", {"augment": False}),
    # Input size and stem change together: the CIFAR net on 227x227 would carry a 28x28 map into its classifier,
    # and the paper stem (11x11 stride-4 conv, 3/2 pools) on 32x32 would shrink the image to nothing.
    Variant("input_227", "input", "227x227, upstream 3 conv", {"model": "upstream_3conv"}, reference="conv_3"),
    Variant("adam", "optimizer", "Adam 1e-4 constant", dict(_ADAM)),
    Variant("adam_softmax_ce", "loss_adam", "CE after softmax", {**_ADAM, "loss": "softmax_ce"}, reference="adam"),
    Variant("adam_bce_softmax", "loss_adam", "BCE on softmax", {**_ADAM, "loss": "bce_softmax"}, reference="adam"),
]


def variant_by_name(name: str) -> Variant:
    """The Variant called `name` (helpers.ablation.report, tests)."""
    return lookup("variant", name, {v.name: v for v in VARIANTS})


def select_variants(groups: Iterable[str] | None = None) -> list[Variant]:
    """The variants of some groups plus the reference runs they are compared with, in VARIANTS order (notebook 05)."""
    names = list(GROUPS) if groups is None else list(groups)
    if not names:
        raise ValueError(f"give at least one group; choose from {', '.join(GROUPS)}")
    unknown_names("group", names, GROUPS)
    wanted = {GROUPS[g].reference for g in names} | {v.name for v in VARIANTS if v.group in names}
    # a reference that is itself a variant of another group needs its own reference too (conv_3 -> baseline)
    wanted |= {variant_by_name(n).reference for n in list(wanted) if n != "baseline"}
    return [v for v in VARIANTS if v.name in wanted]


def variant_recipe(variant: Variant, full: bool | None = None) -> Recipe:
    """The recipe a variant trains with: the baseline with the variant's change, shrunk to REDUCED if not full (notebook 05)."""
    base = get_recipe(_BASELINE_RECIPE, reduced=False, epochs=SWEEP_EPOCHS)
    unknown_names("recipe field", variant.recipe_changes, Recipe.__dataclass_fields__)
    changes = dict(variant.recipe_changes)
    if "model" in changes:
        overrides = dict(variant.model_overrides)  # a different preset does not inherit the baseline's overrides
    else:
        overrides = {**base.model_overrides, **variant.model_overrides}
    recipe = base.replace(name=f"ablation:{variant.name}", model_overrides=overrides, **changes)
    return recipe if is_full(full) else recipe.replace(**REDUCED)
