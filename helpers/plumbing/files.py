"""Writing files so that a crash, a kill or a full disk never leaves half a file where a whole one was."""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(f)` on a temp file beside `path`, fsync it, then rename it over `path` (atomic_write_text, atomic_torch_save).

    On any failure, Ctrl-C included, the temp file is removed and the exception goes on unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def temp_path(path: str | os.PathLike) -> Path:
    """The temp file `atomic_write` writes before the rename: NAME.<pid>.tmp, one per process (atomic_write)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def remove_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temp files that killed writers of `path` left beside it; returns what was removed (the command line)."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (atomic_write_json, the command line)."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, data) -> Path:
    """Write JSON atomically, indented one space per level (notebook 05's run_sweep, the command line, benchmarks)."""
    return atomic_write_text(path, json.dumps(data, indent=1))


def atomic_torch_save(path: str | os.PathLike, obj) -> Path:
    """torch.save atomically; a failed write raises the OSError behind it (ENOSPC, EIO) (save_checkpoint, the data cache)."""
    import torch

    def write(f: BinaryIO) -> None:
        # torch.save reports a failed write as a vague RuntimeError ("unexpected pos ..."): keep the
        # OSError that caused it, so the message can say what went wrong.
        failures: list[OSError] = []

        class Sink:
            def write(self, data) -> int:
                try:
                    return f.write(data)
                except OSError as err:
                    failures.append(err)
                    raise

            def flush(self) -> None:
                f.flush()

        try:
            torch.save(obj, Sink())
        except RuntimeError:
            if not failures:
                raise
        if failures:
            raise failures[0]

    return atomic_write(path, write)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself survive a power cut; some platforms cannot open a folder, which is fine.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class Busy(ValueError):
    """Another process holds the lock on a folder; the message names it."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, wait: bool = False):
    """Hold an exclusive lock on the file `path` for a `with` block; it dies with its process (the command line).

    Another holder means a `Busy` error naming its PID, or, with `wait`, waiting for it; a killed holder's lock is gone.
    """
    path = Path(path)
    with open(path, "a+") as f:
        if not _try_lock(f, wait):
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise Busy(f"{what} is in use by process {holder} (lock {path}); wait for it to finish or use another folder")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            _unlock(f)


def _try_lock(f, wait: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        import time

        while True:
            try:
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not wait:
                    return False
                time.sleep(0.5)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


def _unlock(f) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
