"""The trained course model for readers who have not trained it: notebook 03's own checkpoint when it exists, else the
weights shipped inside the package (helpers/weights/), loaded without running code and checked against their hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..course import course_checkpoint, reduced_mode, shown_path
from ..data.cifar10 import Cifar10, dataset_label
from ..models.alexnet import build_model, config_from_dict
from ..plumbing.checks import TrainingError, lookup
from .checkpoint import load_checkpoint
from .recipes import Recipe, recipe_from_dict

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
SHIPPED = {"cpu": "cpu"}  # recipe name -> file stem in WEIGHTS (the .pt weights and the .json card beside them)


class CourseModel(NamedTuple):
    """A trained course model, what it was trained with, where it came from and what it scored (course_model)."""

    model: nn.Module
    recipe: Recipe
    source: str  # "notebook 03" or "shipped"
    card: dict  # val_acc, test_acc (and, for shipped weights, the whole card)


def shipped_card(recipe: str = "cpu") -> dict:
    """The JSON card of the weights shipped for a recipe: recipe, seed, data, split, accuracies, date, torch, sha256."""
    path = WEIGHTS / f"{lookup('shipped model', recipe, SHIPPED)}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TrainingError(f"{path}: the card of the shipped weights cannot be read ({err}); reinstall the course") from err


def load_shipped(recipe: str = "cpu", path: str | Path | None = None) -> nn.Module:
    """The shipped weights of a recipe in a fresh model (float32, eval mode): hash-checked, loaded with weights_only."""
    card = shipped_card(recipe)
    path = Path(path) if path is not None else WEIGHTS / card["file"]
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise TrainingError(f"{path}: the shipped weights cannot be read ({err}); reinstall the course") from err
    digest = hashlib.sha256(blob).hexdigest()
    if digest != card["sha256"]:
        raise TrainingError(f"{path} is not the file its card names (sha256 {digest[:16]}..., the card says "
                            f"{card['sha256'][:16]}...): it is damaged or was replaced; reinstall the course")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(config_from_dict(state["model_config"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["weights"].items()})
    except Exception as err:  # a file with the right hash but the wrong content: another version's format
        raise TrainingError(f"{path} does not hold weights this version of the course can load "
                            f"({type(err).__name__}: {err}); reinstall the course") from err
    return model.eval()


def exact_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, tta: bool = False) -> float:
    """Top-1 accuracy (%) in float64 on the CPU: the same on every x86 machine, unlike bf16 (the shipped weights' card)."""
    from ..data import normalize

    model = model.double().eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 500):
            x = normalize(images[start:start + 500]).double()
            probs = model(x).softmax(1)
            if tta:
                probs = probs + model(x.flip(3)).softmax(1)
            correct += int((probs.argmax(1) == labels[start:start + 500]).sum())
    model.float()
    return 100.0 * correct / len(images)


def course_model(device: torch.device | str = "cpu", data: Cifar10 | None = None) -> CourseModel:
    """Notebook 03's course model if its checkpoint exists (and is a full run), else the shipped one; says which (notebook 04)."""
    path = course_checkpoint()
    if path.is_file():
        state = load_checkpoint(path)
        recipe = recipe_from_dict(state["recipe"])
        if not (recipe.train_limit and not reduced_mode()):
            model = build_model(config_from_dict(state["model_config"]))
            load_checkpoint(path, model)
            last = state["history"][-1]
            print(f"Using your own course model, trained by notebook 03 ({shown_path(path)}).")
            return CourseModel(model.to(device).eval(), recipe, "notebook 03",
                               {"val_acc": last.get("val_acc"), "test_acc": last.get("test_acc")})
        print(f"{shown_path(path)} is a reduced-mode run (a smoke test), so the weights shipped with the course are "
              "used instead.")
    card = shipped_card("cpu")
    mirror = data is None or dataset_label(data.root) == card["data"]
    print(f"Using the course model shipped with the course (the {card['recipe']['name']!r} recipe, seed {card['seed']}, "
          f"trained on {card['data']}; run notebook 03 to use your own)."
          + ("" if mirror else f" Your data is {dataset_label(data.root)}: expect its accuracy here to differ from the "
                               f"card's by about a point."))
    return CourseModel(load_shipped("cpu").to(device), recipe_from_dict(card["recipe"]), "shipped", card)
