"""A run and its folder: the settings of a run in one line, comparing two runs, and the run folder the command line
writes (config.json, history.json/.csv, checkpoint.pt, metrics.json) and continues with --resume."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import torch

from ..course import REDUCED
from ..data.cifar10 import split_sizes
from ..models.alexnet import model_config_dict, resolve_config
from ..plumbing.checks import is_int
from ..plumbing.files import atomic_write_json, atomic_write_text, remove_temps
from .checkpoint import load_checkpoint
from .recipes import Recipe, recipe_from_dict

TIMING_KEYS = ("train_seconds", "train_seconds_total", "images_per_s")


def describe_run(recipe: Recipe, device: torch.device | str | None = None, history: Sequence[dict] | None = None) -> str:
    """One line of settings for a printed result: device, recipe, epochs, train/validation/test images (notebooks 03, 04)."""
    sizes = split_sizes(recipe.validation, recipe.train_limit, recipe.eval_limit)
    epochs = len(history) if history else recipe.epochs
    where = f"device={torch.device(device).type}, " if device is not None else ""
    images = f"train images={sizes['train_images']}, " + (f"validation images={sizes['val_images']}, "
                                                          if recipe.validation else "")
    return (f"{where}recipe={recipe.name} (model {recipe.model}), epochs={epochs}/{recipe.epochs}, "
            f"{images}test images={sizes['test_images']}")


def state_dict_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Tensors that differ between two state_dicts: name -> max |a - b| (inf if shapes differ); {} if equal (notebook 03)."""
    if set(a) != set(b):
        raise ValueError(f"the state_dicts hold different tensors: only in first {sorted(set(a) - set(b))}, "
                         f"only in second {sorted(set(b) - set(a))}")
    out = {}
    for name in a:
        x, y = a[name], b[name]
        if x.shape != y.shape:
            out[name] = float("inf")
        elif not torch.equal(x, y):
            out[name] = (x.double() - y.double()).abs().max().item()
    return out


def without_timing(history: Sequence[dict]) -> list[dict]:
    """History rows without the wall-clock fields, for comparing two runs (notebook 03)."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def resume_settings(checkpoint: Path, recipe: Recipe, seed: int, explicit: bool) -> tuple[Recipe, int, str | None]:
    """The recipe, seed and data fingerprint a --resume continues: the checkpoint's own, checked whole before anything is
    written, and any flag given must agree with them (README)."""
    if not checkpoint.is_file():
        raise ValueError(f"--resume: {checkpoint.parent} holds no checkpoint.pt, so there is nothing to continue; "
                         f"run without --resume to start a new run there")
    state = load_checkpoint(checkpoint)
    missing = [k for k in ("model", "optimizer", "scheduler", "scaler", "history", "recipe") if k not in state]
    if missing or not isinstance(state["recipe"], dict):
        raise ValueError(f"{checkpoint} is not a whole checkpoint of this course's engine (it lacks "
                         f"{', '.join(missing) or 'a recipe'}); use another --run-dir")
    saved_seed = state.get("seed", seed)
    if not is_int(saved_seed):
        raise ValueError(f"{checkpoint} holds the seed {saved_seed!r}, not a whole number: it is damaged; use another --run-dir")
    saved = recipe_from_dict(state["recipe"])
    architecture = model_config_dict(resolve_config(saved.model, **saved.model_overrides))
    if state.get("model_config") not in (None, architecture):
        raise ValueError(f"{checkpoint} holds weights of another architecture than its recipe builds: it is damaged or "
                         f"was written by another version; use another --run-dir")
    if not explicit:
        print(f"resuming {checkpoint} with its own recipe {saved.name!r} and seed {saved_seed}")
        return saved, saved_seed, state.get("data")
    theirs, mine = saved.to_dict(), recipe.to_dict()
    differ = [f"{k}: checkpoint {theirs.get(k)!r}, asked {mine.get(k)!r}" for k in sorted(set(theirs) | set(mine))
              if theirs.get(k) != mine.get(k)]
    if saved_seed != seed:
        differ.append(f"seed: checkpoint {saved_seed}, asked {seed}")
    if differ:
        raise ValueError(f"--resume would continue another run: {checkpoint} was made with other settings.\n  "
                         + "\n  ".join(differ) + "\nResume with the same flags (or with none: the checkpoint's own), "
                         "or start a new run in another --run-dir")
    return recipe, seed, state.get("data")


def check_same_data(checkpoint: Path, saved: str | None, current: str | None) -> None:
    """Refuse to continue a run on other data than it trained on, naming both fingerprints (README)."""
    if saved is not None and current is not None and saved != current:
        raise ValueError(f"{checkpoint} was trained on other data (fingerprint {saved}) than --data-root holds now "
                         f"({current}); resume with the data it was made with, or start a new run in another --run-dir")


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder, or say why it cannot be (README)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the run folder {run_dir}: {err}; choose another --run-dir") from err


def prepare_run_dir(run_dir: Path) -> None:
    """Check the run folder is writable and drop the temp files killed writes left beside its files (README)."""
    try:
        atomic_write_text(run_dir / ".write-test", "x" * 1024).unlink()
    except OSError as err:
        raise OSError(f"cannot write to the run folder {run_dir}: {err}; choose another --run-dir") from err
    remove_temps(run_dir)


def resumed_banner(recipe: Recipe) -> str:
    """What a resumed run is, whatever mode this shell is in: its own recipe says whether it is a smoke test (README)."""
    reduced = all(getattr(recipe, knob) == value for knob, value in REDUCED.items() if knob != "epochs")
    return ("continuing a REDUCED-MODE run (a smoke test made with few images: its numbers are not results)" if reduced
            else "continuing a full-size run")


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


def last_checkpoint_message(run_dir: Path) -> str:
    """Where an interrupted run can continue from, in words."""
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        return "No epoch had finished, so nothing was saved; start again with the same command."
    epoch = load_checkpoint(path).get("epoch")
    return f"The last checkpoint, after epoch {epoch}, is {path}; continue with the same command and --resume."
