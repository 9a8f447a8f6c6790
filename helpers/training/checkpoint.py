"""Checkpoints: everything a run needs to continue bit for bit, written so that a crash never leaves half a file."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.alexnet import model_config_dict
from ..plumbing.checks import TrainingError
from ..plumbing.files import atomic_torch_save


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write a checkpoint atomically: a temp file renamed into place, so a crash never leaves half a file (notebook 03's engine).
    """
    path = Path(path)
    try:
        atomic_torch_save(path, state)
    except OSError as err:
        raise TrainingError(f"could not write the checkpoint {path} ({err}); the previous checkpoint there, if any, is intact. "
                            f"Free some disk space or write to another disk (--run-dir); a run can resume from the previous "
                            f"checkpoint") from err


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, map_location="cpu") -> dict:
    """Read a checkpoint; with `model`, check the architecture matches and load the weights (notebook 04)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (notebook 03 or `python -m helpers.train`)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise TrainingError(f"{path}: cannot be read as a checkpoint ({type(err).__name__}: {err})") from err
    if model is not None:
        if not isinstance(state, dict) or "model" not in state:
            raise TrainingError(f"{path} is not a checkpoint of this course's engine (a bare state_dict?); load it with "
                                f"model.load_state_dict(torch.load(path)) instead")
        _check_same_architecture(state.get("model_config"), model_config(model), path)
        model.load_state_dict(state["model"])
    return state


def model_config(model: nn.Module) -> dict | None:
    """The config dict of a course model, or None for any other module (notebook 03's engine)."""
    try:
        return model_config_dict(model)
    except (AttributeError, TypeError):
        return None


def _check_same_architecture(saved: dict | None, current: dict | None, where: str | os.PathLike = "checkpoint") -> None:
    """Raise a TrainingError naming both configs when a checkpoint belongs to another architecture (notebook 04's loader)."""
    if saved is not None and current is not None and saved != current:
        diff = {k: (saved.get(k), current.get(k)) for k in sorted(set(saved) | set(current))
                if saved.get(k) != current.get(k)}
        raise TrainingError(f"{where} holds a different architecture.\n  checkpoint: {saved}\n  this model: {current}\n"
                            f"  differing fields (checkpoint, model): {diff}\nBuild the model with the checkpoint's config "
                            f"(helpers.models.config_from_dict) or use a new run folder.")


def rng_state() -> dict:
    """Every random generator's state (Python, NumPy, torch, CUDA), for an exact resume (notebook 03's engine)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved (notebook 03's engine)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
