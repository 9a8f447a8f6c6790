"""The command line: `python -m helpers.train --recipe cpu` trains a recipe and writes a run folder."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import typing
from collections.abc import Sequence
from pathlib import Path

from . import distributed as dist
from .checks import TrainingError
from .files import atomic_write_json, atomic_write_text, remove_temps
from .recipes import CHOICES, FIELD_HELP, OLD_NAMES, RECIPES, Recipe, get_recipe, recipe_for_device

# Fields that are not flags of their own: the name comes with --recipe, model knobs with --set model.KNOB=V.
_NOT_FLAGS = ("name", "model_overrides")
_FLAG_FIELDS = [f.name for f in dataclasses.fields(Recipe) if f.name not in _NOT_FLAGS]
MODEL_FLAGS = {"norm": (str, "normalisation after each conv layer: none, lrn, batch"),
               "dropout": (float, "dropout before each hidden Linear layer (0 for none)"),
               "width": (float, "multiplier on the conv channel widths"),
               "num_conv": (int, "number of conv layers, 3..5")}


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(Recipe)
    group = p.add_argument_group("recipe fields (default: the recipe's own)")
    for name in _FLAG_FIELDS:
        flag, kind = "--" + name.replace("_", "-"), hints[name]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=FIELD_HELP[name])
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, type=float, nargs=len(typing.get_args(kind)), help=FIELD_HELP[name])
        else:
            scalar = next(t for t in (int, float, str) if kind is t or t in typing.get_args(kind))
            group.add_argument(flag, type=scalar, choices=CHOICES.get(name), help=FIELD_HELP[name])
    for knob, (kind, text) in MODEL_FLAGS.items():
        p.add_argument("--" + knob.replace("_", "-"), type=kind, help=f"model knob: {text}")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="any recipe field, or model.KNOB for a model knob, e.g. --set lr=0.3 model.norm=lrn "
                        "(values read as JSON, else as text)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m helpers.train` (README)."""
    p = argparse.ArgumentParser(prog="python -m helpers.train", description=(
        "Train an AlexNet-family model on CIFAR-10 with a named recipe. Writes a run folder with config.json, "
        "history.json/.csv, checkpoint.pt and metrics.json; --resume continues it. Reduced mode (CI=true or "
        "ALEXNET_REDUCED=1) shrinks epochs and data."))
    p.add_argument("--recipe", choices=[*RECIPES, *OLD_NAMES], help="named recipe (default: 'gpu' on CUDA, else 'cpu')")
    _add_recipe_flags(p)
    p.add_argument("--seed", type=int, help="random seed (default 0; with --resume, the checkpoint's)")
    p.add_argument("--device", help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py/ (default: $CIFAR10_ROOT or ./data)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument("--run-dir", help="output folder (default: runs/<recipe>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop after N epochs of this call (the schedule still spans --epochs); continue with --resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_settings(items: Sequence[str]) -> dict:
    """['lr=0.3', 'model.norm=lrn'] -> {'lr': 0.3, 'model.norm': 'lrn'}: values read as JSON, else as text (README)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r} is not of the form FIELD=VALUE, e.g. --set lr=0.3")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def recipe_from_args(args: argparse.Namespace, device_type: str) -> Recipe:
    """The recipe the flags ask for: the named recipe with every given field and model knob changed (README)."""
    fields = {f: getattr(args, f) for f in _FLAG_FIELDS if getattr(args, f, None) is not None}
    if fields.get("betas") is not None:
        fields["betas"] = tuple(fields["betas"])
    knobs = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None}
    for key, value in parse_settings(args.set).items():
        if key.startswith("model."):
            knobs[key.removeprefix("model.")] = value
        else:
            fields[key] = value
    name = args.recipe or recipe_for_device(device_type)
    if knobs:
        fields["model_overrides"] = {**RECIPES[name].model_overrides, **knobs}
    return get_recipe(name, **fields)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: `python -m helpers.train --help` (README); also under `torchrun`."""
    args = build_parser().parse_args(argv)
    distributed = dist.launched_by_torchrun()
    try:
        return _main(args, distributed)
    finally:
        if distributed:
            dist.close_distributed()


def _explicit(args: argparse.Namespace) -> bool:
    """Whether the command names any setting of the run: a recipe, a field, a model knob, --set or --seed."""
    return (args.recipe is not None or args.seed is not None or bool(args.set)
            or any(getattr(args, name, None) is not None for name in [*_FLAG_FIELDS, *MODEL_FLAGS]))


def resume_settings(checkpoint: Path, recipe: Recipe, seed: int, explicit: bool) -> tuple[Recipe, int]:
    """The recipe and seed a --resume continues: the checkpoint's own, and any flag given must agree with them (README)."""
    from .checkpoint import load_checkpoint

    if not checkpoint.is_file():
        raise ValueError(f"--resume: {checkpoint.parent} holds no checkpoint.pt, so there is nothing to continue; "
                         f"run without --resume to start a new run there")
    state = load_checkpoint(checkpoint)
    saved = state.get("recipe") if isinstance(state, dict) else None
    if not isinstance(saved, dict) or "model" not in state:
        raise ValueError(f"{checkpoint} is not a checkpoint of this course's engine (no recipe or weights in it); "
                         f"use another --run-dir")
    saved_seed = state.get("seed", seed)
    if not explicit:
        print(f"resuming {checkpoint} with its own recipe {saved.get('name')!r} and seed {saved_seed}")
        return Recipe(**saved), saved_seed
    mine = recipe.to_dict()
    differ = [f"{k}: checkpoint {saved.get(k)!r}, asked {mine.get(k)!r}" for k in sorted(set(saved) | set(mine))
              if saved.get(k) != mine.get(k)]
    if saved_seed != seed:
        differ.append(f"seed: checkpoint {saved_seed}, asked {seed}")
    if differ:
        raise ValueError(f"--resume would continue another run: {checkpoint} was made with other settings.\n  "
                         + "\n  ".join(differ) + "\nResume with the same flags (or with none: the checkpoint's own), "
                         "or start a new run in another --run-dir")
    return recipe, seed


def _setup(args: argparse.Namespace, distributed: bool):
    """Every check before anything is written. Returns (device, recipe, seed, run folder, data)."""
    from .data import load_cifar10
    from .device import pick_device

    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"--stop-after must be at least 1, got {args.stop_after}")
    device = dist.init_distributed(args.device) if distributed else pick_device(args.device)
    recipe, seed = recipe_from_args(args, device.type), 0 if args.seed is None else args.seed
    run_dir = Path(args.run_dir or f"runs/{recipe.name}-seed{seed}")
    if args.resume:
        recipe, seed = resume_settings(run_dir / "checkpoint.pt", recipe, seed, _explicit(args))
    elif (run_dir / "checkpoint.pt").exists():
        raise ValueError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or pick another --run-dir")
    dist.split_batch(recipe.batch_size)  # a batch the processes cannot share fails before any work
    data = load_cifar10(args.data_root, download=not args.no_download) if dist.is_main_process() else None
    dist.barrier()  # the others read what the main process downloaded and cached
    if data is None:
        data = load_cifar10(args.data_root, download=False)
    _check_batch_fits(recipe, data)
    return device, recipe, seed, run_dir, data


def _check_batch_fits(recipe: Recipe, data) -> None:
    """A batch larger than the training images would train on nothing: refuse it before anything is written."""
    from .data import split_sizes

    images = split_sizes(recipe.validation, recipe.train_limit, train_labels=data.train_labels)["train_images"]
    if dist.split_batch(recipe.batch_size) > images:
        raise ValueError(f"the batch size {recipe.batch_size} is larger than the {images} training images, so there "
                         f"would be no step to train; use --batch-size {images} or less")


def _main(args: argparse.Namespace, distributed: bool) -> int:
    from .data import CIFAR10Error
    from .files import exclusive_lock

    try:
        device, recipe, seed, run_dir, data = _setup(args, distributed)
        if dist.is_main_process():  # one writer per run folder, for the run's whole life
            make_run_dir(run_dir)
            with exclusive_lock(run_dir / ".lock", f"the run folder {run_dir}"):
                prepare_run_dir(run_dir)
                return _run(args, device, recipe, seed, run_dir, data)
        return _run(args, device, recipe, seed, run_dir, data)
    except (ValueError, CIFAR10Error, OSError, TrainingError) as err:
        print(f"error: {err}")
        return 2


def _run(args: argparse.Namespace, device, recipe: Recipe, seed: int, run_dir: Path, data) -> int:
    """Train with every check passed; exit code 0, 1 (training failed) or 130 (Ctrl-C)."""
    from .device import describe_device
    from .mode import mode_banner
    from .train import train

    main_process = dist.is_main_process()
    say = print if main_process else (lambda *a, **k: None)
    processes = dist.world_size()
    backend = "nccl" if device.type == "cuda" else "gloo"
    where = describe_device(device) + (f" | {processes} processes ({backend})" if processes > 1 else "")
    say(f"{where}\n{mode_banner()}\nrecipe {recipe.name}: {recipe.to_dict()}")
    run = {"recipe": recipe.to_dict(), "seed": seed, "device": where, "processes": processes}
    if main_process:
        atomic_write_json(run_dir / "config.json", run)

    def after_epoch(history, model) -> None:
        print(epoch_line(history.last))
        write_history(run_dir, history)

    try:
        _, history = train(recipe, data=data, seed=seed, device=device, checkpoint=run_dir / "checkpoint.pt",
                           resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after,
                           callbacks=[after_epoch])
    except TrainingError as err:
        print(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        say(f"\ninterrupted. {_last_checkpoint(run_dir)}")
        return 130
    if len(history) < recipe.epochs:
        say(f"stopped after epoch {len(history)} of {recipe.epochs}; continue with the same command and --resume")
        return 0
    if main_process:
        atomic_write_json(run_dir / "metrics.json", {**history.last, **run, "recipe": recipe.name})
    tta = f" (flip-TTA {history.last['test_acc_tta']:.2f}%)" if "test_acc_tta" in history.last else ""
    say(f"done: test accuracy {history.last['test_acc']:.2f}%{tta} after {history.last['train_seconds_total']:.1f} s "
        f"of training; run folder {run_dir}")
    return 0


def _last_checkpoint(run_dir: Path) -> str:
    """Where an interrupted run can continue from, in words."""
    import torch

    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        return "No epoch had finished, so nothing was saved; start again with the same command."
    epoch = torch.load(path, map_location="cpu", weights_only=False).get("epoch")
    return f"The last checkpoint, after epoch {epoch}, is {path}; continue with the same command and --resume."


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder, or say why it cannot be (README)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the run folder {run_dir}: {err}; choose another --run-dir") from err


def prepare_run_dir(run_dir: Path) -> None:
    """Check the run folder is writable and drop the temp files a killed save left beside the checkpoint (README)."""
    try:
        atomic_write_text(run_dir / ".write-test", "x" * 1024).unlink()
    except OSError as err:
        raise OSError(f"cannot write to the run folder {run_dir}: {err}; choose another --run-dir") from err
    remove_temps(run_dir / "checkpoint.pt")


def write_history(run_dir: str | Path, history: Sequence[dict]) -> None:
    """Save a history as history.json and history.csv in a run folder, each atomically (README)."""
    run_dir = Path(run_dir)
    atomic_write_json(run_dir / "history.json", list(history))
    if history:
        text = io.StringIO()
        columns = list(dict.fromkeys(key for row in history for key in row))  # the last row adds the test scores
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(run_dir / "history.csv", text.getvalue())


def epoch_line(row: dict) -> str:
    """One printed line per epoch: losses, accuracies (validation, or test where it is monitored), seconds (README)."""
    split = "val" if "val_acc" in row else "test"
    tta = f" (flip-TTA {row[f'{split}_acc_tta']:.2f}%)" if f"{split}_acc_tta" in row else ""
    return (f"epoch {row['epoch']:>3}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.2f}% | "
            f"{split} loss {row[f'{split}_loss']:.3f} acc {row[f'{split}_acc']:.2f}%{tta} | "
            f"{row['train_seconds']:.1f} s, {row['images_per_s']:.0f} img/s")


if __name__ == "__main__":
    raise SystemExit(main())
