"""Running the ablation sweep: every variant x seed, resumable run by run and epoch by epoch, records kept by the store."""

from __future__ import annotations

import datetime
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..course import is_full, runs_dir
from ..data import load_cifar10
from ..data.cifar10 import Cifar10, dataset_label, split_sizes
from ..device import describe_device, pick_device
from ..models import build_model, count_parameters, total_flops
from ..plumbing.checks import TrainingError
from ..training import predict, recipe_loaders, train
from ..training.recipes import Recipe, recipe_key
from .spec import BASELINE, VARIANTS, Variant, variant_recipe
from .store import (
    check_mode,
    check_same_experiment,
    default_output,
    read_sweep_file,
    results_lock,
    run_key,
    sweep_records,
    write_records,
)


def plan_runs(variants: Sequence[Variant], seeds: Sequence[int], shard: tuple[int, int] | None = None
              ) -> list[tuple[Variant, int]]:
    """Every (variant, seed) pair, seed-major so each seed's runs finish together; a shard takes every n-th (run_sweep)."""
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


def run_sweep(variants: Sequence[Variant] | None = None, seeds: Sequence[int] = (0, 1, 2), out: str | os.PathLike | None = None,
              full: bool | None = None, resume: bool = True, shard: tuple[int, int] | None = None, *,
              data: Cifar10 | None = None, device: torch.device | str | None = None, progress: bool = True,
              train_fn: Callable | None = None) -> list[dict]:
    """Train each variant x seed, appending a record per run to `out`; recorded runs are skipped if `resume` (notebook 05).

    `resume=False` reruns and replaces this sweep's runs; a non-finite loss is recorded as "diverged", not raised.
    """
    full = is_full(full)
    runs = plan_runs(list(VARIANTS) if variants is None else list(variants), seeds, shard)
    out = Path(out) if out is not None else default_output(full, shard)
    device = pick_device() if device is None else torch.device(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    # One writer per results file: a second sweep on the same file stops here, naming the first one's process,
    # instead of training the same runs and overwriting its records.
    with results_lock(out):
        records = read_sweep_file(out)
        check_mode(out, records, full)  # before anything is written: a refused sweep changes nothing
        planned = {v.name: recipe_key(variant_recipe(v, full)) for v, _ in runs}
        if not resume:  # a fresh start of these variants: their old records go, whatever settings made them
            records = [r for r in records if r["variant"] not in planned]
            write_records(out, records)
        check_same_experiment(out, records, planned)
        done = {run_key(r): r for r in records}
        result: list[dict] = []
        bar = tqdm(runs, desc="ablation runs", unit="run", disable=not progress)
        for variant, seed in bar:
            recipe = variant_recipe(variant, full)
            key = (variant.name, seed, recipe_key(recipe))
            if key not in done:
                bar.set_postfix_str(f"{variant.name} seed {seed}")
                data = load_cifar10() if data is None else data
                # A run checkpoints every epoch (outside git), so a stopped sweep continues it from its last epoch.
                checkpoint = checkpoint_path(out, variant, seed, recipe)
                done[key] = _train_run(variant, seed, recipe, full, data=data, device=device, train_fn=train_fn,
                                       checkpoint=checkpoint)
                records.append(done[key])
                write_records(out, records)
                checkpoint.unlink(missing_ok=True)  # recorded: the checkpoint is no longer needed
            result.append(done[key])
        return result


def checkpoint_path(out: Path, variant: Variant, seed: int, recipe: Recipe) -> Path:
    """Where a run of a sweep writing `out` keeps its per-epoch checkpoint: runs/ablation-checkpoints/, outside git."""
    return runs_dir() / "ablation-checkpoints" / f"{out.stem}-{variant.name}-seed{seed}-{recipe_key(recipe)}.pt"


def recorded_runs(variants: Sequence[Variant], seeds: Sequence[int], out: str | os.PathLike | None = None,
                  full: bool | None = None) -> tuple[list[dict], list[tuple[str, int]]]:
    """Runs of a sweep already in its results file (with today's settings) and the (variant, seed) pairs missing (notebook 05).

    Reads only: nothing is trained, so a notebook can show a recorded sweep without starting hours of work.
    """
    full = is_full(full)
    out = Path(out) if out is not None else default_output(full)
    done = {run_key(r): r for r in sweep_records(out)}
    found, missing = [], []
    for variant, seed in plan_runs(variants, seeds):
        record = done.get((variant.name, seed, recipe_key(variant_recipe(variant, full))))
        if record is None:
            missing.append((variant.name, seed))
        else:
            found.append(record)
    return found, missing


def estimate_seconds(variant: Variant, records: Sequence[dict], device_line: str) -> tuple[float, str] | None:
    """Training seconds one run of `variant` should take, from recorded runs, and what the estimate rests on (notebook 05).

    Prefers this variant's runs on this kind of machine (`device_line`, `describe_device`), then the baseline's there
    scaled by FLOPs per image, then the same on any machine (saying which). None without a usable record.
    """
    ok = [r for r in records if r.get("status") == "ok" and r.get("train_seconds")]
    kind = "reduced " if ok and all(r.get("reduced") for r in ok) else ""
    for runs, elsewhere in (([r for r in ok if r["device"] == device_line], False), (ok, True)):
        own = [r for r in runs if r["variant"] == variant.name]
        used = own or [r for r in runs if r["variant"] == BASELINE.name]
        if not used:
            continue
        seconds = statistics.median(r["train_seconds"] for r in used)
        basis = f"median of {len(used)} recorded {kind}run(s) of {used[0]['variant']}"
        if not own:
            ratio = _variant_flops(variant) / used[0]["flops_per_image"]
            seconds *= ratio
            basis += f", scaled by FLOPs per image ({ratio:.2f}x)"
        if elsewhere:
            basis += f", made on {'; '.join(sorted({r['device'] for r in used}))}: this machine may differ"
        return seconds, basis
    return None


def _variant_flops(variant: Variant) -> int:
    """Forward FLOPs per image of a variant's model, the cost its records store."""
    recipe = variant_recipe(variant, full=True)
    return total_flops(build_model(recipe.model, **recipe.model_overrides))


def _run_record(variant: Variant, seed: int, recipe: Recipe, full: bool, data: Cifar10) -> dict:
    """What a run's record says before it trains: the variant, seed, recipe hash, data sizes and model cost."""
    model = build_model(recipe.model, **recipe.model_overrides)
    return {"variant": variant.name, "group": variant.group, "label": variant.label, "reference": variant.reference,
            "seed": seed, "config": recipe_key(recipe), "reduced": not full, "status": "ok", "epochs": recipe.epochs,
            **_split_sizes(recipe, data), "data": dataset_label(data.root), "params": count_parameters(model),
            "flops_per_image": total_flops(model)}


def _split_sizes(recipe: Recipe, data: Cifar10) -> dict:
    """How many images a run trains on, chooses on (validation) and reports on (test)."""
    return {**split_sizes(recipe.validation, recipe.train_limit, recipe.eval_limit, data.train_labels,
                          len(data.test_labels)), "validation": recipe.validation}


# A run that predicts (nearly) one class for everything, or scores no better than guessing, has collapsed: it is
# shown as such and left out of the means, whatever its accuracy.
_COLLAPSED_SHARE = 0.5
_CHANCE_MARGIN = 2.0  # accuracy points above the 10% of guessing


def _collapse(model, recipe: Recipe, data: Cifar10, device: torch.device, last: dict) -> dict:
    """The share of the most predicted class on the validation images, and status "collapsed" if it dominates."""
    share = None
    if isinstance(model, torch.nn.Module):
        loaders = recipe_loaders(recipe, data, device=device)
        probs, _ = predict(model, loaders.val or loaders.test, device=device, amp=recipe.amp)
        share = float(probs.argmax(1).bincount(minlength=probs.shape[1]).max()) / len(probs)
    accuracy = last["val_acc"] if "val_acc" in last else last["test_acc"]
    collapsed = (share is not None and share >= _COLLAPSED_SHARE) or accuracy < 10.0 + _CHANCE_MARGIN
    return {"top_class_share": share, **({"status": "collapsed"} if collapsed else {})}


def _train_run(variant: Variant, seed: int, recipe: Recipe, full: bool, *, data: Cifar10, device: torch.device,
               train_fn: Callable | None, checkpoint: Path | None = None) -> dict:
    """Train one run (continuing its checkpoint, if any) and return its complete record; a TrainingError is "diverged"."""
    record = _run_record(variant, seed, recipe, full, data)
    try:
        model, history = (train if train_fn is None else train_fn)(recipe, data=data, seed=seed, device=device,
                                                                    progress=False, checkpoint=checkpoint,
                                                                    resume=checkpoint is not None)
        last = history[-1]
        record.update(_collapse(model, recipe, data, device, last))
        record.update(val_acc=last.get("val_acc"), val_acc_tta=last.get("val_acc_tta"),
                      test_acc=last["test_acc"], test_acc_tta=last.get("test_acc_tta"),
                      train_seconds=last["train_seconds_total"], epochs_done=len(history),
                      images=round(sum(row["images_per_s"] * row["train_seconds"] for row in history)))
    except TrainingError as err:
        record.update(status="diverged", error=str(err), val_acc=None, val_acc_tta=None, test_acc=None,
                      test_acc_tta=None, train_seconds=None, epochs_done=None, images=None)
    record.update(device=describe_device(device), torch=torch.__version__,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  recipe=recipe.to_dict())
    return record


