"""Shared fixtures: tiny CIFAR-10 folders in the official pickle layout, written to a temp folder."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.data import CLASSES
from helpers.data.cifar10 import FOLDER, META_FILE, TEST_FILES, TRAIN_FILES

PER_BATCH = 20


def write_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    """One batch file as the official archive pickles it (protocol 2, latin1 strings)."""
    with open(path, "wb") as f:
        pickle.dump({"batch_label": "fixture", "labels": labels, "data": data,
                     "filenames": [f"img_{i}.png" for i in range(len(labels))]}, f, protocol=2)


def make_cifar_folder(root: Path, per_batch: int = PER_BATCH, seed: int = 0) -> Path:
    """Write a complete tiny cifar-10-batches-py/ under root; returns root."""
    rng = np.random.default_rng(seed)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_FILES, *TEST_FILES):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        write_batch(folder / name, data, labels)
    with open(folder / META_FILE, "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": list(CLASSES), "num_vis": 3072}, f, protocol=2)
    return root


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A tiny synthetic CIFAR-10 root (6 x 20 random images)."""
    return make_cifar_folder(tmp_path / "cifar")


@pytest.fixture
def no_reduced_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear the reduced-mode variables so a test sets them itself."""
    for name in ("CI", "ALEXNET_REDUCED"):
        monkeypatch.delenv(name, raising=False)


def real_cifar_root() -> Path | None:
    """The prepared real CIFAR-10 copy from $CIFAR10_ROOT, if present (CI prepares it)."""
    root = os.environ.get("CIFAR10_ROOT")
    if root and (Path(root) / FOLDER / "test_batch").is_file():
        return Path(root)
    return None


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Unit tests use tiny tensors: one thread is as fast and leaves the other core to whatever else runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
