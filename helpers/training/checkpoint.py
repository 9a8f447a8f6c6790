"""Checkpoints: everything a run needs to continue bit for bit, written so that a crash never leaves half a file."""

from __future__ import annotations

import os
import pickle
import random
import re
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
    except FileNotFoundError as err:  # the run's folder was deleted or moved while it trained
        raise TrainingError(f"could not write the checkpoint {path} ({err})") from err
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
        with torch.serialization.safe_globals(_LEGACY_NUMPY):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused something: what a file crafted to run code does
        named = re.search(r"GLOBAL ([\w.]+)", str(err))  # torch names the refused global in a few wordings
        reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
        what = (f"it asks to call {named.group(1)}" if named else
                f"it holds more than tensors and plain values ({(reason.group(1) if reason else str(err))[:200]})")
        raise TrainingError(f"{path}: refused: {what}, which no checkpoint of this course does (a file crafted to run code "
                            f"looks like this); nothing in it was run. Resume from a checkpoint this course wrote, or train "
                            f"again; if you made the file yourself and trust it, load it with torch.load(path, "
                            f"weights_only=False) and save only its tensors and plain values.") from err
    except Exception as err:
        raise TrainingError(f"{path}: cannot be read as a checkpoint ({type(err).__name__}: {str(err)[:300]}); it is "
                            f"damaged or not a checkpoint. Resume from an intact one or train again.") from err
    _restore_legacy_rng(state, path)
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
    # NumPy's state as plain numbers: a checkpoint then loads with weights_only=True and no numpy globals at all.
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached_gaussian)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved, in this version's format or the previous one's (notebook 03's engine)."""
    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved it to the GPU; the CPU generator's state
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], np.array(numpy_state["keys"], dtype=np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # the previous format: numpy's own tuple (its array rebuilt by _LegacyArray)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Checkpoints of the previous version pickled NumPy's random state: ('MT19937', a uint32 array of 624 keys, ...). They
# name four numpy globals, allowed under their names but answered by the stand-ins below, which accept exactly a
# uint32 array pickled by numpy and build it with np.frombuffer: numpy's own dtype.__setstate__, reached through
# torch's allowlist, accepts flags that make a uint32 dtype claim to hold Python objects.
class _LegacyDtype:
    """numpy.dtype as an old checkpoint calls it: dtype('u4', False, True), then a BUILD with a plain dtype's state."""

    order = "<"

    def __init__(self, spec, align=False, copy=True):
        if spec != "u4" or align is not False or copy is not True:
            raise pickle.UnpicklingError(f"numpy.dtype{(spec, align, copy)!r} in a checkpoint: only uint32 is expected")

    def __setstate__(self, state) -> None:
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">")
                and state[2:] == (None, None, None, -1, -1, 0)):
            raise pickle.UnpicklingError("a numpy dtype state that is not plain uint32's")
        self.order = state[1]


class _LegacyNdarray:
    """numpy.ndarray as an old checkpoint names it: only ever an argument of _reconstruct, never built."""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray called directly in a checkpoint")


class _LegacyArray:
    """A uint32 NumPy array of an old checkpoint, built from numpy's pickled state (1, shape, dtype, fortran, bytes)."""

    array = None

    def __setstate__(self, state) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and self.array is None):
            raise pickle.UnpicklingError("a numpy array state that is not numpy's")
        _, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and len(shape) == 1 and type(shape[0]) is int and 0 <= shape[0] <= 1024  # noqa: E721
                and isinstance(dtype, _LegacyDtype) and fortran is False and isinstance(data, bytes)
                and len(data) == 4 * shape[0]):
            raise pickle.UnpicklingError("a numpy array in a checkpoint that is not the 624 uint32 keys of NumPy's state")
        self.array = np.frombuffer(data, dtype=dtype.order + "u4").astype(np.uint32)


def _legacy_reconstruct(subtype, shape, code) -> _LegacyArray:
    """numpy's _reconstruct as numpy pickles an array: _reconstruct(ndarray, (0,), b'b'), an empty array given state next."""
    if subtype is not _LegacyNdarray or shape != (0,) or code != b"b":
        raise pickle.UnpicklingError("numpy's _reconstruct called in a checkpoint with other arguments than numpy's own")
    return _LegacyArray()


_LEGACY_NUMPY = [(_legacy_reconstruct, "numpy._core.multiarray._reconstruct"),  # written with NumPy 2
                 (_legacy_reconstruct, "numpy.core.multiarray._reconstruct"),   # written with NumPy 1
                 (_LegacyNdarray, "numpy.ndarray"), (_LegacyDtype, "numpy.dtype"), _LegacyArray]


def _restore_legacy_rng(state, path: Path) -> None:
    """Put real NumPy arrays where an old checkpoint's random states hold _LegacyArray stand-ins, in place."""
    if not isinstance(state, dict):
        return
    per_rank = state.get("rng_per_rank")
    for rng in [state.get("rng"), *(per_rank if isinstance(per_rank, list) else [])]:
        numpy_state = rng.get("numpy") if isinstance(rng, dict) else None
        if isinstance(numpy_state, tuple) and len(numpy_state) == 5 and isinstance(numpy_state[1], _LegacyArray):
            if numpy_state[1].array is None:
                raise TrainingError(f"{path}: its NumPy random state has no data; the checkpoint is damaged. Resume "
                                    f"from an intact one or train again.")
            rng["numpy"] = (numpy_state[0], numpy_state[1].array, *numpy_state[2:])
