"""CIFAR-10 itself: loading it (the official download or an existing copy), checking and caching it, the validation split."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..course import project_folder
from ..plumbing.download import DownloadError, download_file, extract_tar, mirror_urls
from ..plumbing.files import atomic_torch_save, exclusive_lock

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Channel statistics of the 50,000 training images (notebook 01 recomputes them).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
CACHE_FILE = "cifar10-uint8.pt"
# The official archive (torchvision's); a copy from $CIFAR10_MIRRORS is accepted only with this md5.
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"


# The validation split: a fixed share of every class of the 50,000 training images, drawn with this random seed
# by NumPy's legacy generator, whose stream is frozen: the same 5,000 images on every machine and NumPy version.
_VALIDATION = 0.1
_SPLIT_SEED = 0


class CIFAR10Error(RuntimeError):
    """CIFAR-10 data is missing, unreadable or malformed; the message says how to fix it."""


@dataclass
class Cifar10:
    """Both splits of CIFAR-10 as uint8 (N, 3, 32, 32) images and int64 labels (notebook 01's load_cifar10)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    root: Path


def default_root() -> Path:
    """Where CIFAR-10 lives when no folder is given: $CIFAR10_ROOT, else `data/` of a checkout or ~/.cache (notebook 01)."""
    env = os.environ.get("CIFAR10_ROOT")
    return Path(env).expanduser() if env else project_folder("data")


def load_cifar10(root: str | os.PathLike | None = None, download: bool = True, cache: bool = True) -> Cifar10:
    """Load both CIFAR-10 splits from `root/cifar-10-batches-py`, downloading it if allowed (notebook 01)."""
    root = _check_root(Path(root).expanduser() if root is not None else default_root())
    folder = root / FOLDER
    files = [folder / name for name in (*TRAIN_FILES, *TEST_FILES, META_FILE)]
    if _missing(files):
        if not download:
            raise CIFAR10Error(_missing_message(folder, "download=False was given"))
        root.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(root / ".download.lock", f"the data folder {root}", wait=True):
            if _missing(files):  # another process may have fetched it while this one waited
                download_cifar10(root)

    cache_path = root / CACHE_FILE
    stamp = _stamp(files)
    if cache:
        cached = _read_cache(cache_path, stamp)
        if cached is not None:
            return Cifar10(**cached, classes=CLASSES, root=root)

    classes = read_meta(folder / META_FILE)
    train_images, train_labels = _read_split([folder / n for n in TRAIN_FILES])
    test_images, test_labels = _read_split([folder / n for n in TEST_FILES])
    tensors = {"train_images": train_images, "train_labels": train_labels, "test_images": test_images, "test_labels": test_labels}
    if cache:
        _write_cache(cache_path, stamp, tensors)
    return Cifar10(**tensors, classes=classes, root=root)


def _check_root(root: Path) -> Path:
    """A data root that can hold cifar-10-batches-py/, or a CIFAR10Error saying what to point at instead."""
    if root.name == FOLDER:
        raise CIFAR10Error(f"{root} is the {FOLDER}/ folder itself; give the folder that holds it: {root.parent}")
    if root.exists() and not root.is_dir():
        raise CIFAR10Error(f"{root} is a file, not a folder; point CIFAR10_ROOT (or root=) at the folder that holds "
                           f"{FOLDER}/, or at an empty folder to download into")
    return root


def _missing(files: list[Path]) -> list[str]:
    """Names of the batch files that are not there; a half-present folder is an error naming them."""
    missing = [p.name for p in files if not p.is_file()]
    if missing and len(missing) < len(files) and files[0].parent.is_dir():
        raise CIFAR10Error(f"{files[0].parent} is incomplete: missing {', '.join(missing)}. Delete the folder and load "
                           f"again to download a fresh copy, or point CIFAR10_ROOT at a complete one.")
    return missing


def dataset_label(root: str | os.PathLike | None = None) -> str:
    """'CIFAR-10 (JPEG mirror)' for the offline copy, else 'CIFAR-10': the data name every benchmark records (benchmarks)."""
    root = Path(root).expanduser() if root is not None else default_root()
    try:
        with open(root / FOLDER / TEST_FILES[0], "rb") as f:
            names = pickle.load(f, encoding="latin1").get("filenames", [])
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError):
        return "CIFAR-10"
    # prepare_cifar10.py names images <class>_<NNNN>.png; the official files use WordNet-style names.
    mirror = bool(names) and re.fullmatch("(" + "|".join(CLASSES) + r")_\d{4}\.png", str(names[0])) is not None
    return "CIFAR-10 (JPEG mirror)" if mirror else "CIFAR-10"


def download_cifar10(root: str | os.PathLike, urls: list[str] | None = None, md5: str | None = None) -> None:
    """Download the archive (mirrors, retries, resume, md5 check) and unpack it safely into `root` (notebook 01's load_cifar10).
    """
    import tarfile

    root = Path(root)
    try:
        archive = download_file(mirror_urls([URL] if urls is None else urls), root / ARCHIVE, md5 or ARCHIVE_MD5)
    except DownloadError as err:
        raise CIFAR10Error(_missing_message(root / FOLDER, f"the download failed.\n{str(err).rstrip('.')}")) from err
    try:
        extract_tar(archive, root)
    except (OSError, EOFError, ValueError, tarfile.TarError) as err:
        raise CIFAR10Error(f"{archive}: cannot unpack ({type(err).__name__}: {err}). Delete it and load again.") from err
    if not (root / FOLDER).is_dir():
        raise CIFAR10Error(f"{archive} holds no {FOLDER}/ folder; it is not the CIFAR-10 python archive.")


def _missing_message(folder: Path, why: str) -> str:
    return (f"CIFAR-10 was not found in {folder} and {why}.\nFix it in one of two ways:\n"
            f"  1. with internet access: call load_cifar10(download=True) (the default) to fetch the official archive "
            f"(163 MB) into {folder.parent};\n  2. without it: set CIFAR10_ROOT (or pass root=) to a folder that already "
            f"holds cifar-10-batches-py/ (the official batches, or a copy made by prepare_cifar10.py).")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled CIFAR-10 batch file and check it; returns (N,3,32,32) uint8 and labels (notebook 01's load_cifar10)."""
    batch, repair = _unpickle(path, "a CIFAR-10 batch"), _repair(path)
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        keys = sorted(map(str, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise CIFAR10Error(f"{path}: not a CIFAR-10 batch: expected a dict with 'data' and 'labels', found {keys}. {repair}")
    data, labels = _as_array(path, "data", batch["data"]), _as_array(path, "labels", batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) == 0:
        raise CIFAR10Error(f"{path}: 'data' has shape {data.shape} and dtype {data.dtype}; expected (N, 3072) uint8 with "
                           f"N >= 1 (one 32x32 RGB image per row). {repair}")
    if labels.shape != (data.shape[0],):
        raise CIFAR10Error(f"{path}: {data.shape[0]} images but {labels.size} labels (shape {labels.shape}); the file is "
                           f"inconsistent. {repair}")
    if labels.dtype.kind not in "iu":
        raise CIFAR10Error(f"{path}: labels must be whole numbers, found dtype {labels.dtype}. {repair}")
    if labels.min() < 0 or labels.max() > 9:
        bad = sorted({int(v) for v in labels if not 0 <= v <= 9})[:5]
        raise CIFAR10Error(f"{path}: labels must lie in 0..9, found {bad}. {repair}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _repair(path: Path) -> str:
    return f"Delete {path.parent} and load again (or rerun prepare_cifar10.py)."


def _unpickle(path: Path, what: str):
    """The object pickled in `path`, or a CIFAR10Error naming the file whatever its bytes are."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except OSError as err:
        raise CIFAR10Error(f"{path}: cannot be read ({err}).") from err
    except Exception as err:  # pickle raises almost anything on arbitrary bytes (MemoryError, OverflowError, ...)
        raise CIFAR10Error(f"{path}: cannot be read as {what} ({type(err).__name__}: {str(err)[:200]}); the file is "
                           f"truncated or corrupt. {_repair(path)}") from err


def _as_array(path: Path, key: str, value) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as err:  # ragged lists, objects numpy cannot hold
        raise CIFAR10Error(f"{path}: '{key}' is not an array ({type(err).__name__}). {_repair(path)}") from err
    if array.dtype == object:
        raise CIFAR10Error(f"{path}: '{key}' holds Python objects, not numbers. {_repair(path)}")
    return array


def read_meta(path: Path) -> tuple[str, ...]:
    """Read the class names from batches.meta and check they are CIFAR-10's ten (notebook 01's load_cifar10)."""
    meta = _unpickle(path, "the CIFAR-10 class names")
    try:
        names = tuple(meta["label_names"])
    except Exception as err:
        raise CIFAR10Error(f"{path}: cannot read the class names ({type(err).__name__}); the file is corrupt. "
                           f"{_repair(path)}") from err
    if names != CLASSES:
        raise CIFAR10Error(f"{path}: expected the 10 CIFAR-10 classes {CLASSES}, found {names[:12]}. {_repair(path)}")
    return names


def _read_split(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(read_batch(p) for p in paths))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _stamp(files: list[Path]) -> list[tuple[str, int, int]]:
    # Size and modification time identify the batch files the cache was made from.
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


CACHE_VERSION = 2  # bump when the cache's layout changes: older caches are rebuilt
_SPLITS = ("train", "test")


def _read_cache(path: Path, stamp: list) -> dict | None:
    """The cached tensors, if the cache is this version, made from these files, and holds CIFAR-10; else None."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        fresh = saved.get("version") == CACHE_VERSION and saved.get("stamp") == [list(s) for s in stamp]
        tensors = {f"{split}_{kind}": saved[f"{split}_{kind}"] for split in _SPLITS for kind in ("images", "labels")}
    except Exception:  # a broken or foreign cache is rebuilt from the batches, never fatal
        return None
    return tensors if fresh and _looks_like_cifar10(tensors) else None


def _looks_like_cifar10(tensors: dict) -> bool:
    """Shapes, dtypes, matching counts and labels in 0..9: what a cache must hold to be served as CIFAR-10."""
    for split in _SPLITS:
        images, labels = tensors[f"{split}_images"], tensors[f"{split}_labels"]
        if (not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor))
                or images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, 32, 32)
                or labels.dtype != torch.int64 or labels.shape != (len(images),) or len(images) == 0
                or labels.min() < 0 or labels.max() > 9):
            return False
    return True


def _write_cache(path: Path, stamp: list, tensors: dict) -> None:
    try:
        atomic_torch_save(path, {"version": CACHE_VERSION, "stamp": [list(s) for s in stamp], **tensors})
    except OSError as err:  # a read-only or full data folder just means no cache (atomic_torch_save left no temp file)
        warnings.warn(f"could not write the CIFAR-10 cache {path} ({err}); loading works, only slower next time",
                      stacklevel=3)


def split_sizes(validation: float, train_limit: int | None = None, eval_limit: int | None = None,
                train_labels: torch.Tensor | None = None, test_count: int = 10_000) -> dict[str, int]:
    """Images a recipe trains on, chooses on (validation) and reports on (test) after the split and its limits.

    With `train_labels` the split is counted exactly; without, CIFAR-10's 50,000 balanced training images are assumed
    (describe_run, the command line and the sweep all count this way).
    """
    total = 50_000 if train_labels is None else len(train_labels)
    held_out = round(total * validation) if train_labels is None else len(validation_indices(train_labels, validation))
    train = total - held_out
    return {"train_images": min(train_limit or train, train), "val_images": min(eval_limit or held_out, held_out),
            "test_images": min(eval_limit or test_count, test_count)}


def validation_indices(labels: torch.Tensor, share: float = _VALIDATION, seed: int = _SPLIT_SEED) -> torch.Tensor:
    """Sorted indices of a fixed, class-stratified validation split: `share` of every class's images (split_validation)."""
    if not 0 <= share < 1:
        raise ValueError(f"the validation share must lie in [0, 1), got {share!r}")
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    picked = []
    for c in range(int(labels.max()) + 1 if labels.size else 0):
        members = np.flatnonzero(labels == c)
        picked.append(rng.permutation(members)[: round(len(members) * share)])
    return torch.from_numpy(np.sort(np.concatenate(picked))) if picked else torch.zeros(0, dtype=torch.long)


def split_validation(data: Cifar10, share: float = _VALIDATION, train_limit: int | None = None,
                     val_limit: int | None = None) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, validation images, validation labels): the training set cut in two, disjoint (notebook 03).

    The limits keep the first images of each part; only what is kept is copied (Binder has 2 GB).
    """
    val = validation_indices(data.train_labels, share)
    keep = torch.ones(len(data.train_labels), dtype=torch.bool)
    keep[val] = False
    if share and not keep.any():
        raise CIFAR10Error("the validation split would leave no training images; use a smaller share")
    train = keep.nonzero().squeeze(1)[:train_limit]
    val = val[:val_limit]
    return data.train_images[train], data.train_labels[train], data.train_images[val], data.train_labels[val]
