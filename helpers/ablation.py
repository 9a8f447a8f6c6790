"""Ablations: a declarative list of one-change variants of a baseline recipe and a resumable sweep runner.

Each `Variant` changes ONE thing (a recipe field or a model override) relative to
its group's reference run, usually the baseline: the `cpu` recipe (a narrow
CIFAR-native AlexNet at 32x32, one-cycle SGD, crop+flip augmentation). `run_sweep`
trains every variant x seed with `helpers.train.train`, appends one record per run
to a JSON file (atomically, after every run) and skips runs already recorded, so an
interrupted sweep continues where it stopped. `python -m helpers.ablation --help`
runs it from a terminal; notebook 05 runs it and plots the results.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .mode import reduced_mode
from .recipes import Recipe, get_recipe

BASELINE_RECIPE = "cpu"
# A reduced sweep run is a smoke test: one epoch on a sliver of the data, in batches of 64 so that it
# still takes 16 optimiser steps.
REDUCED_SWEEP = {"epochs": 1, "train_limit": 1024, "test_limit": 500, "batch_size": 64}
OUTPUT_NAME = "ablations.json"


@dataclass(frozen=True)
class Variant:
    """One run configuration of the sweep: the baseline with one recipe field or model knob changed (notebook 05)."""

    name: str  # unique key, used in the results file
    group: str  # the question it answers, e.g. "loss"
    label: str  # what the chart shows, e.g. "BCE on softmax"
    recipe_changes: dict = field(default_factory=dict)  # Recipe fields to replace
    model_overrides: dict = field(default_factory=dict)  # merged into Recipe.model_overrides
    reference: str = "baseline"  # the variant this one differs from by one change


@dataclass(frozen=True)
class Group:
    """A question of the sweep: its variants are compared with one reference run (notebook 05)."""

    name: str
    title: str
    reference: str  # name of the variant every member differs from
    reference_label: str  # what the reference is called in this group's chart


BASELINE = Variant("baseline", "baseline", "baseline (cpu recipe)")

GROUPS: dict[str, Group] = {g.name: g for g in (
    Group("conv", "conv layers", "baseline", "5 conv"),
    Group("fc", "FC layers", "baseline", "3 FC"),
    Group("activation", "activation", "baseline", "ReLU"),
    Group("loss", "loss (SGD one-cycle)", "baseline", "CE on logits"),
    Group("loss_adam", "loss (Adam 1e-4, as the seed)", "adam", "CE on logits"),
    Group("norm", "normalisation", "baseline", "BatchNorm"),
    Group("dropout", "dropout", "baseline", "dropout 0.25"),
    Group("augment", "augmentation", "baseline", "crop + flip"),
    Group("input", "input size", "conv_3", "32x32, 3 conv"),
    Group("optimizer", "optimiser", "baseline", "SGD one-cycle"),
)}

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
    Variant("dropout_0", "dropout", "no dropout", model_overrides={"dropout": 0.0}),
    Variant("dropout_0.5", "dropout", "dropout 0.5", model_overrides={"dropout": 0.5}),
    Variant("no_augment", "augment", "no augmentation", {"augment": False}),
    # The seed's 3-conv AlexNet (paper stem: 11x11 stride-4 conv, 3/2 pools) needs 227x227 input; the
    # reference is the baseline cut to 3 conv layers at 32x32. Input size and stem change together:
    # the CIFAR net on 227x227 would carry a 28x28 feature map into its classifier, and the paper stem
    # on 32x32 would shrink the image to nothing.
    Variant("input_227", "input", "227x227, seed 3 conv", {"model": "seed_3conv"}, reference="conv_3"),
    Variant("adam", "optimizer", "Adam 1e-4 constant", {"optimizer": "adam", "lr": 1e-4, "schedule": "constant"}),
    Variant("adam_softmax_ce", "loss_adam", "CE after softmax", {"optimizer": "adam", "lr": 1e-4, "schedule": "constant",
                                                                  "loss": "softmax_ce"}, reference="adam"),
    Variant("adam_bce_softmax", "loss_adam", "BCE on softmax", {"optimizer": "adam", "lr": 1e-4, "schedule": "constant",
                                                                 "loss": "bce_softmax"}, reference="adam"),
]


def variant_by_name(name: str) -> Variant:
    """The Variant called `name` (notebook 05)."""
    for v in VARIANTS:
        if v.name == name:
            return v
    raise ValueError(f"unknown variant {name!r}; known variants: {', '.join(v.name for v in VARIANTS)}")


def select_variants(groups: Iterable[str] | None = None) -> list[Variant]:
    """The variants of some groups plus the reference runs they are compared with, in VARIANTS order (notebook 05)."""
    names = list(GROUPS) if groups is None else list(groups)
    if not names:
        raise ValueError(f"give at least one group; known groups: {', '.join(GROUPS)}")
    unknown = [g for g in names if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown group(s) {', '.join(map(repr, unknown))}; known groups: {', '.join(GROUPS)}")
    wanted = {GROUPS[g].reference for g in names} | {v.name for v in VARIANTS if v.group in names}
    # a reference that is itself a variant of another group needs its own reference too (conv_3 -> baseline)
    wanted |= {variant_by_name(n).reference for n in list(wanted) if n != "baseline"}
    return [v for v in VARIANTS if v.name in wanted]


def variant_recipe(variant: Variant, full: bool | None = None, base: Recipe | None = None) -> Recipe:
    """The recipe a variant trains with: the baseline with the variant's change, shrunk if not `full` (notebook 05)."""
    full = (not reduced_mode()) if full is None else full
    base = get_recipe(BASELINE_RECIPE, reduced=False) if base is None else base
    unknown = sorted(set(variant.recipe_changes) - set(Recipe.__dataclass_fields__))
    if unknown:
        raise ValueError(f"variant {variant.name!r} changes unknown recipe field(s) {unknown}")
    changes = dict(variant.recipe_changes)
    if "model" in changes:
        overrides = dict(variant.model_overrides)  # a different preset does not inherit the baseline's overrides
    else:
        overrides = {**base.model_overrides, **variant.model_overrides}
    recipe = base.replace(name=f"ablation:{variant.name}", model_overrides=overrides, **changes)
    if not full:
        recipe = recipe.replace(**REDUCED_SWEEP)
    return recipe


def recipe_key(recipe: Recipe) -> str:
    """A short hash of every recipe field: runs with the same key are the same experiment (notebook 05)."""
    text = json.dumps(recipe.to_dict(), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- results files


def default_output(full: bool | None = None, shard: tuple[int, int] | None = None) -> Path:
    """Where a sweep writes: results/ablations.json in full mode, runs/ablations-reduced.json otherwise (notebook 05).

    Reduced (smoke-test) records never go into the committed results folder. A shard
    writes its own file (ablations-shard1of4.json) so shards on several machines never
    write the same file; `load_records` reads them all back together.
    """
    from .evaluation import results_dir
    from .notebook import runs_dir

    full = (not reduced_mode()) if full is None else full
    folder, stem = (results_dir(), "ablations") if full else (runs_dir(), "ablations-reduced")
    return shard_output(folder / f"{stem}.json", shard)


def shard_output(path: str | os.PathLike, shard: tuple[int, int] | None) -> Path:
    """The file a shard writes beside `path`: ablations.json -> ablations-shard2of4.json (notebook 05)."""
    path = Path(path)
    return path if shard is None else path.with_name(f"{path.stem}-shard{shard[0] + 1}of{shard[1]}{path.suffix}")


def merge_shards(path: str | os.PathLike) -> list[dict]:
    """Write the records of `path` and its shard files into `path` itself, and return them (notebook 05).

    Shard files stay where they are (a shard that is still running keeps appending to its
    own file); merging again later picks up what they added.
    """
    records = load_records(path)
    write_records(path, records)
    return records


def split_shard(shard: tuple[int, int] | None, job: int, jobs: int) -> tuple[int, int]:
    """Shard `job` of `jobs` inside shard (i, n): runs[i::n][job::jobs] is runs[i + job*n :: n*jobs] (notebook 05)."""
    i, n = shard if shard is not None else (0, 1)
    return i + job * n, n * jobs


def read_records(path: str | os.PathLike) -> list[dict]:
    """Records of one results file; [] if it does not exist, ValueError if it is not a sweep file (notebook 05)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path.name} is not valid JSON ({err}); fix or delete it before resuming the sweep") from err
    if not isinstance(data, list) or not all(isinstance(r, dict) and "variant" in r and "seed" in r for r in data):
        raise ValueError(f"{path.name} does not hold a list of sweep records (dicts with 'variant' and 'seed')")
    return data


def load_records(path: str | os.PathLike | None = None, full: bool | None = None) -> list[dict]:
    """Records of a sweep file and its shard files (name-shardIofN.json) beside it, without duplicates (notebook 05)."""
    path = Path(path) if path is not None else default_output(full)
    shards = sorted(path.parent.glob(f"{path.stem}-shard*of*.json")) if path.parent.is_dir() else []
    seen, records = set(), []
    for p in (path, *shards):
        for r in read_records(p):
            key = run_key(r)
            if key not in seen:
                seen.add(key)
                records.append(r)
    return records


def write_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Write records as JSON atomically: a temp file renamed over the old one (notebook 05)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=1))
    os.replace(tmp, path)


def run_key(record: dict) -> tuple:
    """What identifies a run in a results file: variant, seed and the recipe hash (notebook 05)."""
    return record["variant"], record["seed"], record.get("config")


# ---------------------------------------------------------------- the sweep


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (1, 4): the second of four shards, counted from 1 on the command line (notebook 05)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"shard {text!r} is not of the form i/n, e.g. 1/4")
    i, n = int(match.group(1)), int(match.group(2))
    if not 1 <= i <= n:
        raise ValueError(f"shard {text!r}: i must lie in 1..n")
    return i - 1, n


def plan_runs(variants: Sequence[Variant], seeds: Sequence[int], shard: tuple[int, int] | None = None
              ) -> list[tuple[Variant, int]]:
    """Every (variant, seed) pair, seed-major so each seed's runs finish together; a shard takes every n-th (notebook 05)."""
    if not variants:
        raise ValueError("no variants to run")
    if not seeds:
        raise ValueError("give at least one seed")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    runs = [(v, int(s)) for s in seeds for v in variants]
    if shard is not None:
        i, n = shard
        if not (isinstance(i, int) and isinstance(n, int) and n >= 1 and 0 <= i < n):
            raise ValueError(f"shard={shard!r} must be (i, n) with 0 <= i < n")
        runs = runs[i::n]
    return runs


def run_sweep(
    variants: Sequence[Variant] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    out: str | os.PathLike | None = None,
    full: bool | None = None,
    resume: bool = True,
    shard: tuple[int, int] | None = None,
    *,
    data=None,
    device: torch.device | str | None = None,
    progress: bool = True,
    train_fn: Callable | None = None,
) -> list[dict]:
    """Train each variant x seed, appending a record per run to `out`; recorded runs are skipped if `resume` (notebook 05).

    `full=None` follows reduced mode; reduced runs use REDUCED_SWEEP (1 epoch, 1024
    train / 500 test images, batch 64). `out=None` picks `default_output(full, shard)`.
    `resume=False` reruns this sweep's runs and replaces their old records. A run whose
    loss turns non-finite is recorded with status "diverged" instead of stopping the
    sweep. Returns the records of this sweep's runs (also those skipped).
    """
    from tqdm.auto import tqdm

    from .data import load_cifar10
    from .device import describe_device, pick_device
    from .models import build_model, count_parameters, total_flops
    from .train import TrainingError, train

    full = (not reduced_mode()) if full is None else full
    variants = list(VARIANTS) if variants is None else list(variants)
    runs = plan_runs(variants, seeds, shard)
    out = Path(out) if out is not None else default_output(full, shard)
    device = pick_device() if device is None else torch.device(device)
    train_fn = train if train_fn is None else train_fn
    records = read_records(out)
    planned = {(v.name, s, recipe_key(variant_recipe(v, full))) for v, s in runs}
    if not resume:
        records = [r for r in records if run_key(r) not in planned]
        write_records(out, records)
    done = {run_key(r): r for r in records}
    result: list[dict] = []
    bar = tqdm(runs, desc="ablation runs", unit="run", disable=not progress)
    for variant, seed in bar:
        recipe = variant_recipe(variant, full)
        key = (variant.name, seed, recipe_key(recipe))
        if key in done:
            result.append(done[key])
            continue
        bar.set_postfix_str(f"{variant.name} seed {seed}")
        if data is None:
            data = load_cifar10()
        model = build_model(recipe.model, **recipe.model_overrides)
        record = {
            "variant": variant.name, "group": variant.group, "label": variant.label, "reference": variant.reference,
            "seed": seed, "config": key[2], "reduced": not full, "status": "ok",
            "epochs": recipe.epochs,
            "train_images": min(recipe.train_limit or len(data.train_images), len(data.train_images)),
            "test_images": min(recipe.test_limit or len(data.test_images), len(data.test_images)),
            "params": count_parameters(model), "flops_per_image": total_flops(model),
        }
        del model
        try:
            _, history = train_fn(recipe, data=data, seed=seed, device=device, progress=False)
            last = history[-1]
            record.update(test_acc=last["test_acc"], test_acc_tta=last.get("test_acc_tta"),
                          train_seconds=last["train_seconds_total"], epochs_done=len(history),
                          images=round(sum(row["images_per_s"] * row["train_seconds"] for row in history)))
        except TrainingError as err:
            record.update(status="diverged", error=str(err), test_acc=None, test_acc_tta=None, train_seconds=None,
                          epochs_done=None, images=None)
        record.update(device=describe_device(device), torch=torch.__version__,
                      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      recipe=recipe.to_dict())
        records.append(record)
        done[key] = record
        write_records(out, records)
        result.append(record)
    return result


# ---------------------------------------------------------------- summaries and the chart


def _check_one_mode(records: Sequence[dict]) -> None:
    modes = {bool(r.get("reduced")) for r in records}
    if len(modes) > 1:
        raise ValueError("the records mix reduced (smoke-test) and full runs; filter them first, "
                         "e.g. [r for r in records if not r['reduced']]")


def group_runs(records: Sequence[dict], groups: Iterable[str] | None = None) -> list[dict]:
    """One row per run and group it belongs to: the reference run appears in each group it anchors (notebook 05)."""
    _check_one_mode(records)
    names = list(GROUPS) if groups is None else list(groups)
    unknown = [g for g in names if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown group(s) {', '.join(map(repr, unknown))}; known groups: {', '.join(GROUPS)}")
    rows = []
    for g in names:
        group = GROUPS[g]
        members = [group.reference] + [v.name for v in VARIANTS if v.group == g]
        for order, name in enumerate(members):
            label = group.reference_label if order == 0 else variant_by_name(name).label
            for r in records:
                if r["variant"] == name:
                    rows.append({**r, "group": g, "group_title": group.title, "label": label,
                                 "is_reference": order == 0, "order": order})
    return rows


def summarize_sweep(records: Sequence[dict], groups: Iterable[str] | None = None):
    """Mean ± std of test accuracy (and flip-TTA accuracy, training seconds) per group and variant (notebook 05).

    Only groups with at least one recorded run appear. Diverged runs are counted in
    `diverged` and left out of the means.
    """
    import pandas as pd

    rows = group_runs(records, groups)
    columns = ["group", "variant", "label", "runs", "diverged", "test_acc_mean", "test_acc_std", "test_acc_tta_mean",
               "test_acc_tta_std", "train_seconds_mean", "flops_per_image", "params", "test acc % (mean ± std)"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    present = frame.groupby("group")["is_reference"].transform(lambda s: (~s).any())
    frame = frame[present]
    if frame.empty:  # e.g. a shard that holds only reference runs so far
        return pd.DataFrame(columns=columns)
    out = []
    for (group, order, variant), runs in frame.groupby(["group", "order", "variant"], sort=False):
        ok = runs[runs["status"] == "ok"]
        acc = pd.to_numeric(ok["test_acc"], errors="coerce")
        tta = pd.to_numeric(ok["test_acc_tta"], errors="coerce")
        mean, std = acc.mean(), acc.std(ddof=1) if len(acc) > 1 else float("nan")
        out.append({
            "group": group, "order": order, "variant": variant, "label": runs["label"].iloc[0], "runs": len(runs),
            "diverged": int((runs["status"] != "ok").sum()),
            "test_acc_mean": mean, "test_acc_std": std,
            "test_acc_tta_mean": tta.mean(), "test_acc_tta_std": tta.std(ddof=1) if len(tta) > 1 else float("nan"),
            "train_seconds_mean": pd.to_numeric(ok["train_seconds"], errors="coerce").mean(),
            "flops_per_image": runs["flops_per_image"].iloc[0], "params": runs["params"].iloc[0],
            "test acc % (mean ± std)": _mean_std(mean, std, len(acc)),
        })
    order = {g: i for i, g in enumerate(GROUPS)}
    table = pd.DataFrame(out)
    table = table.sort_values(["group", "order"], key=lambda s: s.map(order) if s.name == "group" else s)
    table = table.reset_index(drop=True)
    deltas, verdicts = [], []
    for _, row in table.iterrows():
        ref = table[(table["group"] == row["group"]) & (table["order"] == 0)]
        delta, verdict = _verdict(row, ref.iloc[0]) if len(ref) else (float("nan"), "no reference run yet")
        deltas.append(delta)
        verdicts.append(verdict)
    table["delta_vs_reference"] = deltas
    table["verdict"] = verdicts
    return table.drop(columns="order")[columns + ["delta_vs_reference", "verdict"]]


def _verdict(row, ref) -> tuple[float, str]:
    """Difference from the reference and whether it exceeds twice the seeds' combined spread."""
    if row["order"] == 0:
        return 0.0, "reference"
    delta = row["test_acc_mean"] - ref["test_acc_mean"]
    if math.isnan(delta):
        return delta, "diverged"
    noise = math.hypot(row["test_acc_std"], ref["test_acc_std"])
    if math.isnan(noise):
        return delta, "one seed: no spread to compare with"
    if abs(delta) > 2 * noise:
        return delta, "better" if delta > 0 else "worse"
    return delta, "within noise"


def _mean_std(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "diverged"
    return f"{mean:.2f}" if n == 1 or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def plot_sweep(records: Sequence[dict], groups: Iterable[str] | None = None, ncols: int = 3, metric: str = "test_acc"):
    """Bar chart per group: mean test accuracy per variant, ±1 std error bars over seeds, a dotted chance line (notebook 05)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(group_runs(records, groups))
    if frame.empty:
        raise ValueError("no records to plot for these groups")
    frame = frame[frame["status"] == "ok"]
    shown = [g for g in GROUPS if g in set(frame["group"]) and (~frame[frame["group"] == g]["is_reference"]).any()]
    if not shown:
        raise ValueError("no group has both its reference and a variant recorded")
    ncols = min(ncols, len(shown))
    nrows = -(-len(shown) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, g in zip(axes.flat, shown):
        part = frame[frame["group"] == g].sort_values("order")
        part = part.assign(**{metric: pd.to_numeric(part[metric])})
        sns.barplot(data=part, x="label", y=metric, hue="is_reference", errorbar="sd", capsize=0.15, ax=ax,
                    palette={True: "#9e9e9e", False: "#4c72b0"}, legend=False)
        sns.stripplot(data=part, x="label", y=metric, color="black", size=3, ax=ax)
        if metric.startswith("test_acc"):
            ax.axhline(10.0, color="gray", ls=":", lw=1)  # chance: one class in ten
        ax.set(title=GROUPS[g].title, xlabel="", ylabel="test accuracy (%)" if metric.startswith("test_acc") else metric)
        ax.tick_params(axis="x", labelrotation=20)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the losses, looked at through their gradients


def exact_loss(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A loss of helpers.train.compute_loss written so that it stays exact for confident logits, in float64 (notebook 05).

    PyTorch's binary_cross_entropy clamps log(p) and its gradient to stay finite, and
    in float32 a confident softmax rounds p to exactly 0 or 1. Here log(1 - p_i) is
    computed as logsumexp of the other logits minus logsumexp of all, which never rounds.
    """
    z = logits.double()
    if kind == "ce":
        return F.cross_entropy(z, labels)
    if kind == "softmax_ce":
        return F.cross_entropy(z.softmax(1), labels)
    if kind != "bce_softmax":
        raise ValueError(f"loss={kind!r} is not known; choose one of ce, softmax_ce, bce_softmax")
    n, c = z.shape
    log_p = z.log_softmax(1)
    others = z.unsqueeze(1).expand(n, c, c).masked_fill(torch.eye(c, dtype=torch.bool, device=z.device), float("-inf"))
    log_not_p = others.logsumexp(2) - z.logsumexp(1, keepdim=True)  # log(1 - p_i) = log(sum of the other p_j)
    target = F.one_hot(labels, c).double()
    return -(target * log_p + (1 - target) * log_not_p).mean()


def loss_gradient_table(scales: Sequence[float] = (0.5, 2.0, 8.0), batch: int = 2048, num_classes: int = 10,
                        seed: int = 0, kinds: Sequence[str] = ("softmax_ce", "bce_softmax")):
    """Per-example gradient of each loss w.r.t. the logits, compared with CE's: size ratio and direction (notebook 05).

    Logits are random normals times `scale` (bigger scale = a more confident network);
    labels are either the largest logit ("right") or another class ("wrong"). Returns
    the mean gradient norm, its ratio to CE's, and the mean cosine between the loss's
    and CE's gradient (1 = same direction). Computed exactly, with `exact_loss`.
    """
    import pandas as pd

    if batch < 1 or num_classes < 2:
        raise ValueError(f"need batch >= 1 and num_classes >= 2, got batch={batch}, num_classes={num_classes}")
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, num_classes, generator=gen, dtype=torch.float64)
    right = base.argmax(1)
    wrong = (right + torch.randint(1, num_classes, (batch,), generator=gen)) % num_classes
    rows = []
    for scale in scales:
        if not scale > 0:
            raise ValueError(f"scales must be positive, got {scale}")
        for name, labels in (("right", right), ("wrong", wrong)):
            grads = {}
            for kind in ("ce", *kinds):
                logits = (base * scale).requires_grad_(True)
                (grad,) = torch.autograd.grad(exact_loss(kind, logits, labels), logits)
                grads[kind] = grad * batch  # the loss is a batch mean: undo it to get each example's gradient
            ce_norm = grads["ce"].norm(dim=1)
            for kind in kinds:
                norm = grads[kind].norm(dim=1)
                cosine = F.cosine_similarity(grads[kind], grads["ce"], dim=1)
                rows.append({"scale": scale, "label": name, "loss": kind, "grad_norm": norm.mean().item(),
                             "ratio_to_ce": (norm.mean() / ce_norm.mean()).item(), "cosine_to_ce": cosine.mean().item()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- command line


def _parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m helpers.ablation",
        description="Run the ablation sweep: each variant changes one thing from the baseline (the 'cpu' recipe at "
                    "32x32) and is trained once per seed. Records are appended to a JSON file after every run; runs "
                    "already in the file are skipped, so an interrupted sweep continues where it stopped. "
                    "Full results: python -m helpers.ablation --full --seeds 0 1 2 (hours on a CPU; use a GPU).",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", dest="full", action="store_true", default=None,
                      help="full-size runs: the baseline recipe's epochs on all 50,000/10,000 images")
    mode.add_argument("--reduced", dest="full", action="store_false",
                      help=f"smoke-test runs: {REDUCED_SWEEP['epochs']} epoch, {REDUCED_SWEEP['train_limit']} train / "
                           f"{REDUCED_SWEEP['test_limit']} test images, batch {REDUCED_SWEEP['batch_size']} "
                           f"(default: follows ALEXNET_REDUCED/CI)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)")
    p.add_argument("--groups", nargs="+", choices=list(GROUPS), metavar="GROUP",
                   help=f"groups to run (default: all): {', '.join(GROUPS)}")
    p.add_argument("--out", help="results file (default: results/ablations.json in full mode, "
                                 "runs/ablations-reduced.json in reduced mode; shards get their own file)")
    p.add_argument("--shard", help="run only shard i of n (e.g. 1/4): every n-th run, for several machines")
    p.add_argument("--jobs", type=int, default=1,
                   help="run this many sweep processes in parallel on this machine, one GPU each (round robin) or a "
                        "share of the CPU cores each, then merge their files (default 1)")
    p.add_argument("--merge", action="store_true",
                   help="only merge the shard files beside the results file into it, print the summary and exit")
    p.add_argument("--no-resume", action="store_true", help="rerun runs already in the file and replace their records")
    p.add_argument("--device", help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py/ (default: $CIFAR10_ROOT or ./data)")
    p.add_argument("--list", action="store_true", help="print the groups and variants and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: `python -m helpers.ablation --help` (notebook 05)."""
    from .data import CIFAR10Error, load_cifar10
    from .device import describe_device, pick_device
    from .mode import mode_banner

    args = _parser().parse_args(argv)
    if args.list:
        for g in GROUPS.values():
            members = ", ".join(f"{v.name} ({v.label})" for v in VARIANTS if v.group == g.name)
            print(f"{g.name:<11} {g.title}: reference {g.reference} ({g.reference_label}) vs {members}")
        return 0
    try:
        shard = parse_shard(args.shard) if args.shard else None
        variants = select_variants(args.groups)
        full = (not reduced_mode()) if args.full is None else args.full
        if args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
        if args.merge:
            return _print_merge(Path(args.out) if args.out else default_output(full), args.groups)
        if args.jobs > 1:
            return _run_jobs(args, full, shard)
        device = pick_device(args.device)
        out = shard_output(args.out, shard) if args.out else default_output(full, shard)
        data = load_cifar10(args.data_root)
    except (ValueError, CIFAR10Error, OSError) as err:
        print(f"error: {err}")
        return 2
    print(describe_device(device))
    print(mode_banner() if args.full is None else ("full-size runs" if full else "reduced (smoke-test) runs"))
    runs = plan_runs(variants, args.seeds, shard)
    print(f"{len(runs)} runs ({len(variants)} variants x {len(args.seeds)} seeds"
          f"{f', shard {args.shard}' if shard else ''}) -> {out}")
    try:
        records = run_sweep(variants, args.seeds, out, full=full, resume=not args.no_resume, shard=shard, data=data,
                            device=device, progress=not args.no_progress)
    except ValueError as err:
        print(f"error: {err}")
        return 2
    _print_summary(records, args.groups)
    return 0


def _print_summary(records: Sequence[dict], groups: Iterable[str] | None) -> None:
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        table = summarize_sweep(records, groups)
        print(table[["group", "label", "runs", "diverged", "test acc % (mean ± std)", "train_seconds_mean"]]
              .to_string(index=False))


def _print_merge(out: Path, groups: Iterable[str] | None) -> int:
    records = merge_shards(out)
    print(f"merged {len(records)} records into {out}")
    if records:
        _print_summary(records, groups)
    return 0


def _run_jobs(args, full: bool, shard: tuple[int, int] | None) -> int:
    """Start `--jobs` copies of this command, each on its own shard (and GPU, if any), wait, then merge."""
    import subprocess
    import sys

    from .distributed import cores_per_process

    gpus = torch.cuda.device_count() if args.device in (None, "cuda") else 0
    base = Path(args.out) if args.out else default_output(full)
    argv = ["--seeds", *map(str, args.seeds), "--out", str(base), "--full" if full else "--reduced", "--no-progress"]
    for flag, value in (("--groups", args.groups), ("--data-root", args.data_root), ("--device", args.device)):
        if value:
            argv += [flag, *([value] if isinstance(value, str) else value)]
    if args.no_resume:
        argv.append("--no-resume")
    procs = []
    for job in range(args.jobs):
        i, n = split_shard(shard, job, args.jobs)
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(job % gpus)
        else:  # share the cores instead of every process using all of them
            env["OMP_NUM_THREADS"] = str(cores_per_process(args.jobs))
        log = shard_output(base, (i, n)).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"job {job + 1}/{args.jobs}: shard {i + 1}/{n}"
              f"{f' on GPU {job % gpus}' if gpus else ''} -> {shard_output(base, (i, n)).name} (log {log.name})")
        with open(log, "w") as f:
            procs.append(subprocess.Popen([sys.executable, "-m", "helpers.ablation", *argv, "--shard", f"{i + 1}/{n}"],
                                          stdout=f, stderr=subprocess.STDOUT, env=env))
    failed = [job + 1 for job, p in enumerate(procs) if p.wait() != 0]
    code = _print_merge(base, args.groups)
    if failed:
        print(f"error: job(s) {failed} failed; see their .log files beside {base}. Rerun the same command: "
              f"finished runs are kept and skipped")
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
