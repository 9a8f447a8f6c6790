"""CIFAR-10 itself: loading it (the official download or an existing copy), checking and caching it, the validation split."""

from __future__ import annotations

import hashlib
import io
import math
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
# The official archive's size (the toronto.edu server's Content-Length): a download is stopped beyond it.
ARCHIVE_SIZE = 170_498_071


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
    fingerprint: str  # data_fingerprint of the seven files these tensors were read from


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
    if cache:
        fingerprint = _fingerprint(files)
        cached = _read_cache(cache_path, fingerprint)
        if cached is not None:
            return Cifar10(**cached, classes=CLASSES, root=root, fingerprint=fingerprint)

    # Each file is read once: the bytes hashed are the bytes parsed, even if a file changes meanwhile.
    digest, raw = _new_digest(), {}
    for path in files:
        raw[path.name] = _read_file(path)
        _add_to_digest(digest, path.name, raw[path.name])
    fingerprint = digest.hexdigest()[:FINGERPRINT_LENGTH]
    classes = read_meta(folder / META_FILE, raw.pop(META_FILE))
    train_images, train_labels = _read_split([folder / n for n in TRAIN_FILES], raw)
    test_images, test_labels = _read_split([folder / n for n in TEST_FILES], raw)
    _check_test_is_unseen(train_images, test_images, folder / TEST_FILES[0])
    tensors = {"train_images": train_images, "train_labels": train_labels, "test_images": test_images, "test_labels": test_labels}
    if cache:
        _write_cache(cache_path, fingerprint, tensors)
    return Cifar10(**tensors, classes=classes, root=root, fingerprint=fingerprint)


FINGERPRINT_LENGTH = 16  # hex digits of sha256: 64 bits, ample to tell copies of CIFAR-10 apart
_CHUNK = 1 << 20


def data_fingerprint(root: str | os.PathLike | None = None) -> str:
    """A short hash of the bytes of the seven CIFAR-10 files under `root`: which data a run used (run folders, checkpoints)."""
    root = _check_root(Path(root).expanduser() if root is not None else default_root())
    files = [root / FOLDER / name for name in (*TRAIN_FILES, *TEST_FILES, META_FILE)]
    if _missing(files):
        raise CIFAR10Error(_missing_message(root / FOLDER, "a fingerprint needs all seven files"))
    return _fingerprint(files)


def _new_digest():
    return hashlib.sha256(b"CIFAR-10 batches v1\0")


def _add_to_digest(digest, name: str, data: bytes) -> None:
    # Name and size first (as _fingerprint does), so that bytes moved from one file to the next change the fingerprint.
    digest.update(f"{name}\0{len(data)}\0".encode())
    digest.update(data)


def _fingerprint(files: list[Path]) -> str:
    """sha256 over the files in the given (fixed) order, read in 1 MiB chunks; about 0.1 s for CIFAR-10's 180 MB."""
    digest, buffer = _new_digest(), bytearray(_CHUNK)
    view = memoryview(buffer)
    for path in files:
        try:
            with open(path, "rb", buffering=0) as f:
                digest.update(f"{path.name}\0{os.fstat(f.fileno()).st_size}\0".encode())
                while n := f.readinto(buffer):
                    digest.update(view[:n])
        except OSError as err:
            raise CIFAR10Error(f"{path}: cannot be read ({err}). {_repair(path)}") from err
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


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
    path = root / FOLDER / TEST_FILES[0]
    try:
        batch = _unpickle(path, "a CIFAR-10 batch")
    except CIFAR10Error as err:
        if isinstance(err.__cause__, _Forbidden):  # a file crafted to run code is an error wherever it is met
            raise
        return "CIFAR-10"  # missing or damaged: loading the data says so, with the fix
    names = batch.get("filenames", []) if isinstance(batch, dict) else []
    # prepare_cifar10.py names images <class>_<NNNN>.png; the official files use WordNet-style names.
    mirror = bool(names) and re.fullmatch("(" + "|".join(CLASSES) + r")_\d{4}\.png", str(names[0])) is not None
    return "CIFAR-10 (JPEG mirror)" if mirror else "CIFAR-10"


def download_cifar10(root: str | os.PathLike, urls: list[str] | None = None, md5: str | None = None) -> None:
    """Download the archive (mirrors, retries, resume, md5 check) and unpack it safely into `root` (notebook 01's load_cifar10).
    """
    import tarfile

    root = Path(root)
    try:
        archive = download_file(mirror_urls([URL] if urls is None else urls), root / ARCHIVE, md5 or ARCHIVE_MD5,
                                max_bytes=None if md5 else ARCHIVE_SIZE)
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


def read_batch(path: Path, raw: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file (or `raw`, its bytes) and check it: (N,3,32,32) uint8, labels (notebook 01's load_cifar10)."""
    batch, repair = _unpickle(path, "a CIFAR-10 batch", raw), _repair(path)
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


# A batch file is at most this big: the official ones are 31 MB; a bigger file is not read into memory at all.
_MAX_FILE_BYTES = 128 * 2**20


def _read_file(path: Path) -> bytes:
    """The bytes of one CIFAR-10 file, or a CIFAR10Error naming it (unreadable, or far too big to be CIFAR-10)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > _MAX_FILE_BYTES:
                raise CIFAR10Error(f"{path}: {size / 2**20:.0f} MB, but a CIFAR-10 batch file is about 31 MB; it is not one. "
                                   f"{_repair(path)}")
            return f.read(_MAX_FILE_BYTES + 1)
    except OSError as err:
        raise CIFAR10Error(f"{path}: cannot be read ({err}). {_repair(path)}") from err


def _unpickle(path: Path, what: str, raw: bytes | None = None):
    """The object pickled in `path` (or in `raw`, its bytes), read without running code; else a CIFAR10Error naming it."""
    raw = _read_file(path) if raw is None else raw
    try:
        return _resolve(_BatchUnpickler(io.BytesIO(raw), encoding="latin1").load())
    except _Forbidden as err:
        raise CIFAR10Error(f"{path}: refused: it asks to call {err}, which no CIFAR-10 file does (a file crafted to run "
                           f"code looks like this); nothing in it was run. Do not use this copy: {_repair(path)}") from err
    except Exception as err:  # pickle raises almost anything on arbitrary bytes (MemoryError, OverflowError, ...)
        raise CIFAR10Error(f"{path}: cannot be read as {what} ({type(err).__name__}: {str(err)[:200]}); the file is "
                           f"truncated or corrupt. {_repair(path)}") from err


# Reading a batch file without running code. The official batches (and prepare_cifar10.py's copy) pickle a dict of
# str keys, str, ints, lists and uint8 arrays. numpy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by
# a BUILD with (1, shape, dtype, fortran_order, raw bytes), a dtype as dtype('u1', False, True) with a BUILD of its
# state, and Python 3 writes bytes at protocol 2 as _codecs.encode(text, 'latin1'). Those four globals are the only ones
# a genuine file names; each is answered by a stand-in that checks its arguments and builds the array itself with
# np.frombuffer, so no numpy constructor or __setstate__ ever sees a hostile file's values (numpy's dtype.__setstate__
# accepts flags that make a uint8 dtype claim to hold Python objects).
class _Forbidden(pickle.UnpicklingError):
    """A pickle names a global that no CIFAR-10 file names; the message is the global's full name."""


class _StandIn:
    """Base of the stand-ins: not hashable (no dict key or set member) and never modified by a BUILD it did not expect."""

    __slots__ = ()
    __hash__ = None

    def __setstate__(self, state) -> None:
        raise pickle.UnpicklingError(f"{type(self).__name__} takes no state")


class _Marker(_StandIn):
    """numpy.ndarray as a batch file names it: only ever an argument of _reconstruct, never called."""

    __slots__ = ()


class _PendingDtype(_StandIn):
    """A dtype named by a batch file: a plain number type, its byte order from the pickled state."""

    __slots__ = ("dtype",)
    _NUMBERS = re.compile(r"[biuf][1248]")  # bool, integers, floats: what a batch's arrays may hold

    def __init__(self, spec, align=False, copy=True):
        spec = spec.decode("latin1") if isinstance(spec, bytes) else spec
        if not (isinstance(spec, str) and self._NUMBERS.fullmatch(spec)) or align not in (False, 0) or copy not in (True, 1):
            raise pickle.UnpicklingError(f"dtype{(spec, align, copy)!r} is not a plain number type")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state) -> None:
        # numpy's state of a plain dtype: (3, byte order, None, None, None, -1, -1, 0); anything else is refused.
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")
                and state[2:] == (None, None, None, -1, -1, 0)):
            raise pickle.UnpicklingError("a dtype state that is not a plain number type's")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _PendingArray(_StandIn):
    """An array named by a batch file, built from its pickled state by np.frombuffer."""

    __slots__ = ("array",)

    def __setstate__(self, state) -> None:
        if hasattr(self, "array"):
            raise pickle.UnpicklingError("an array given state twice")
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise pickle.UnpicklingError("an array state that is not numpy's (1, shape, dtype, fortran, bytes)")
        _, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and len(shape) <= 8
                and all(type(n) is int and n >= 0 for n in shape)):  # noqa: E721 (bool is not a size)
            raise pickle.UnpicklingError(f"an array shape {str(shape)[:60]} that is not a few sizes")
        if not isinstance(dtype, _PendingDtype) or fortran not in (True, False) or not isinstance(data, (bytes, str)):
            raise pickle.UnpicklingError("an array state with an unexpected dtype, order or data")
        data = data.encode("latin1") if isinstance(data, str) else data  # Python 2's str, decoded as latin1
        if len(data) != math.prod(shape) * dtype.dtype.itemsize:
            raise pickle.UnpicklingError(f"an array of shape {shape} and dtype {dtype.dtype} with {len(data)} bytes of data")
        self.array = np.frombuffer(data, dtype.dtype).reshape(shape, order="F" if fortran else "C").copy()


class _Reconstruct(_StandIn):
    """numpy's _reconstruct as a batch file calls it: _reconstruct(ndarray, (0,), b'b'), an empty array to be given state."""

    __slots__ = ()

    def __call__(self, subtype, shape, code) -> _PendingArray:
        if subtype is not _NDARRAY or shape != (0,) or code not in (b"b", "b"):
            raise pickle.UnpicklingError("numpy's _reconstruct called with other arguments than numpy's own")
        return _PendingArray()


class _Latin1(_StandIn):
    """_codecs.encode as Python 3 pickles bytes at protocol 2: encode(text, 'latin1'), no other codec."""

    __slots__ = ()

    def __call__(self, text, encoding) -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError(f"_codecs.encode with encoding {str(encoding)[:20]!r}, not latin1")
        return text.encode("latin1")


_NDARRAY = _Marker()
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _Reconstruct(),  # written by NumPy 1 (and Python 2)
            ("numpy._core.multiarray", "_reconstruct"): _Reconstruct(),  # written by NumPy 2
            ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _PendingDtype, ("_codecs", "encode"): _Latin1()}


class _BatchUnpickler(pickle.Unpickler):
    """pickle's unpickler that resolves only the globals of _ALLOWED (to stand-ins) and refuses every other one."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Forbidden(f"{module}.{name}"[:120]) from None


_PLAIN = frozenset({int, str, bytes, float, bool, type(None)})


def _resolve(obj):
    """`obj` with every array stand-in replaced by its array, in place; any other stand-in left over is refused."""
    holder = [obj]
    seen, todo = set(), [holder]
    while todo:  # a loop, not recursion: nesting depth is the file's choice; `seen` makes shared parts cost once
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (dict, list)):
            if _PLAIN.issuperset(map(type, item.values() if isinstance(item, dict) else item)):
                continue  # the common case, a list of 10,000 labels or file names, checked at C speed
            for key, value in (item.items() if isinstance(item, dict) else enumerate(item)):
                if isinstance(value, _PendingArray) and hasattr(value, "array"):
                    item[key] = value.array
                elif isinstance(value, _StandIn) or value is _PendingDtype:
                    raise pickle.UnpicklingError("numpy's pickling helpers where data was expected")
                elif isinstance(value, (dict, list, tuple)):
                    todo.append(value)
        elif isinstance(item, tuple):
            todo.extend(v for v in item if isinstance(v, (dict, list, tuple, _StandIn)) or v is _PendingDtype)
        elif isinstance(item, _StandIn) or item is _PendingDtype:
            raise pickle.UnpicklingError("numpy's pickling helpers where data was expected")
    return holder[0]


def _as_array(path: Path, key: str, value) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as err:  # ragged lists, objects numpy cannot hold
        raise CIFAR10Error(f"{path}: '{key}' is not an array ({type(err).__name__}). {_repair(path)}") from err
    if array.dtype == object:
        raise CIFAR10Error(f"{path}: '{key}' holds Python objects, not numbers. {_repair(path)}")
    return array


def read_meta(path: Path, raw: bytes | None = None) -> tuple[str, ...]:
    """The class names in batches.meta (or `raw`, its bytes), checked to be CIFAR-10's ten (notebook 01's load_cifar10)."""
    meta = _unpickle(path, "the CIFAR-10 class names", raw)
    try:
        names = tuple(meta["label_names"])
    except Exception as err:
        raise CIFAR10Error(f"{path}: cannot read the class names ({type(err).__name__}); the file is corrupt. "
                           f"{_repair(path)}") from err
    if names != CLASSES:
        raise CIFAR10Error(f"{path}: expected the 10 CIFAR-10 classes {CLASSES}, found {names[:12]}. {_repair(path)}")
    return names


def _read_split(paths: list[Path], raw: dict[str, bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(read_batch(p, raw.pop(p.name)) for p in paths))  # pop: each file's bytes freed once parsed
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


# Test images byte-identical to a training image. The offline JPEG copy in data/ has none (measured: 0 of 10,000); the
# official batches hold near-duplicates of training images (Barz & Denzler 2020, "Do we train on test data?") but
# byte-identical ones, if any, are few. More than a handful means the test batch is (partly) training images, and
# every test accuracy would be inflated.
DUPLICATES_ALLOWED = 10
# Odd 64-bit multipliers of a linear hash of each image's 384 eight-byte words: 60,000 images hash in about 0.05 s.
_IMAGE_HASH = np.random.default_rng(2024).integers(0, 2**63, size=3 * 32 * 32 // 8, dtype=np.uint64) * 2 + 1


def _image_hashes(images: np.ndarray) -> np.ndarray:
    words = np.ascontiguousarray(images).reshape(len(images), -1).view(np.uint64)
    return (words * _IMAGE_HASH).sum(axis=1, dtype=np.uint64)  # wraps modulo 2**64, as it should


def duplicate_count(train_images: torch.Tensor, test_images: torch.Tensor) -> int:
    """How many test images (CPU, uint8) are byte-identical to some training image (load_cifar10 refuses over a handful)."""
    train, test = train_images.numpy(), test_images.numpy()
    train_hash, test_hash = _image_hashes(train), _image_hashes(test)
    candidates = np.flatnonzero(np.isin(test_hash, train_hash))
    if not len(candidates):
        return 0
    by_hash: dict[int, list[int]] = {}
    for i in np.flatnonzero(np.isin(train_hash, test_hash[candidates])):
        by_hash.setdefault(int(train_hash[i]), []).append(int(i))
    # Equal hashes are checked byte for byte, so the count is exact whatever the hash's collisions.
    return sum(any(np.array_equal(test[t], train[i]) for i in by_hash[int(test_hash[t])]) for t in candidates)


def _check_test_is_unseen(train_images: torch.Tensor, test_images: torch.Tensor, test_path: Path) -> None:
    """A CIFAR10Error with the count when more than DUPLICATES_ALLOWED test images are training images."""
    count = duplicate_count(train_images, test_images)
    if count > DUPLICATES_ALLOWED:
        raise CIFAR10Error(f"{test_path}: {count} of its {len(test_images)} test images are byte-identical to training "
                           f"images (CIFAR-10 has at most a handful, {DUPLICATES_ALLOWED} allowed): the test batch is (a "
                           f"copy of) training data, so test accuracy would measure memory, not generalisation. "
                           f"{_repair(test_path)}")


CACHE_VERSION = 3  # bump when the cache's layout changes: older caches are rebuilt (3: keyed on the content fingerprint)
_SPLITS = ("train", "test")


def _read_cache(path: Path, fingerprint: str) -> dict | None:
    """The cached tensors, if the cache is this version, made from files with this fingerprint, and holds CIFAR-10."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        fresh = saved.get("version") == CACHE_VERSION and saved.get("fingerprint") == fingerprint
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


def _write_cache(path: Path, fingerprint: str, tensors: dict) -> None:
    try:
        atomic_torch_save(path, {"version": CACHE_VERSION, "fingerprint": fingerprint, **tensors})
    except (OSError, ValueError) as err:  # a read-only or full data folder, or a cache path that is no regular file,
        # just means no cache (atomic_torch_save left no temp file)
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
