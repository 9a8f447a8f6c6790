"""Writing files so that a crash, a kill or a full disk never leaves half a file where a whole one was, and nothing is
written through a symlink, into a device or a FIFO, or into a folder that was deleted meanwhile."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# Absent on Windows: there only the lstat check before opening guards against a symlink.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Opening a FIFO for writing would block until a reader comes: with O_NONBLOCK it opens (or fails) at once and is refused.
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_PRIVATE = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_TEMP = re.compile(r"(?P<name>.+)\.(?P<pid>\d+)\.tmp")


class NotARegularFile(ValueError):
    """A path that must be a regular file is a symlink, a folder, a device, a FIFO or a socket; the message names it."""


def check_output_file(path: str | os.PathLike, what: str = "the output file") -> Path:
    """Refuse `path` if it exists and is not a regular file (a symlink, folder, device, FIFO, socket); returns it (--out).

    Raises NotARegularFile (a ValueError) naming the path, what it is and what to give instead; a missing path is fine.
    """
    return _check_regular(Path(path), what, None)


def open_regular_file(path: str | os.PathLike, flags: int, what: str, fix: str | None = None, mode: int = 0o666) -> int:
    """os.open `path` without following a symlink and refuse anything but a regular file; returns the fd (the downloader).

    `flags` are os.open's (O_CREAT, O_EXCL, O_APPEND...); a refused path raises NotARegularFile, ending with `fix` if
    given, and is left as it was: nothing it points to is opened.
    """
    path = _check_regular(Path(path), what, fix)  # before opening: opening a device or a FIFO can itself have effects
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _PRIVATE, mode)
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOENT):  # ELOOP (EMLINK, EFTYPE on BSD): a symlink put there meanwhile
            _check_regular(path, what, fix)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO or a device between the check and the open
            raise _refused(path, st, what, fix)
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(f)` on a temp file beside `path`, fsync it, then rename it over `path` (atomic_write_text, atomic_torch_save).

    The folder must exist (a vanished folder raises FileNotFoundError, it is never recreated) and `path`, if there, must be
    a regular file (else NotARegularFile). On any failure, Ctrl-C included, the temp file is removed and the exception goes on.
    """
    path = Path(path)
    _check_folder(path)
    check_output_file(path, "the file")
    tmp = temp_path(path)
    try:
        fd = _create_temp(tmp)
    except FileNotFoundError as err:
        raise _gone(path) from err
    try:
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # Checked again just before the rename: os.replace would put a file in place of a device node or a symlink.
        check_output_file(path, "the file")
        try:
            os.replace(tmp, path)
        except FileNotFoundError as err:
            raise _gone(path) from err
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
    """Delete the NAME.<pid>.tmp files of writers that are no longer running; returns what was removed (the command line).

    `path` is a folder (every such file in it) or a file (only its own temp files); a live process's temp file stays.
    """
    path = Path(path)
    folder, only = (path, None) if path.is_dir() else (path.parent, path.name)
    pattern = f"{glob.escape(only)}.*.tmp" if only is not None else "*.tmp"
    removed = []
    for tmp in sorted(folder.glob(pattern)):
        m = _TEMP.fullmatch(tmp.name)
        if m is None or (only is not None and m["name"] != only) or tmp.is_dir() or _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()  # a symlink is removed itself, never what it points to
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
        # The same for Ctrl-C or SIGTERM during the write: torch turns them into that RuntimeError too.
        failures: list[BaseException] = []

        class Sink:
            def write(self, data) -> int:
                try:
                    return f.write(data)
                except BaseException as err:
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


def _check_folder(path: Path) -> None:
    """The folder of `path` must be there: a run whose folder was deleted stops instead of recreating it."""
    try:
        st = os.stat(path.parent)
    except FileNotFoundError:
        raise _gone(path) from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write {path.name}: {path.parent} is not a folder; "
                                                f"give a path inside a folder")


def _gone(path: Path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"the folder {path.parent} is gone (deleted or moved while in use?), so "
                                           f"{path.name} was not written and the folder is not recreated; if it was "
                                           f"deleted on purpose, start again, else create it (or choose another) and rerun")


def _create_temp(tmp: Path) -> int:
    """A new temp file, never one that is there already: O_EXCL does not follow a symlink planted under its name."""
    try:
        return open_regular_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, "the temp file")
    except (FileExistsError, NotARegularFile):
        # The name carries this process's PID: what is there is a dead writer's leftover (PIDs are reused) or planted.
        # unlink removes a symlink itself, never its target.
        tmp.unlink()
        return open_regular_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, "the temp file")


def _check_regular(path: Path, what: str, fix: str | None) -> Path:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return path
    if not stat.S_ISREG(st.st_mode):
        raise _refused(path, st, what, fix)
    return path


def _refused(path: Path, st: os.stat_result, what: str, fix: str | None) -> NotARegularFile:
    fix = fix or "remove it or give the path of a regular file (or of a new one) instead" + _hint(path, st)
    return NotARegularFile(f"{what} {path} is {_kind(path, st)}, not a regular file, so it was not written; {fix}")


def _kind(path: Path, st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        try:
            return f"a symbolic link (to {os.readlink(path)})"
        except OSError:
            return "a symbolic link"
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _hint(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return " (to write the file it points to, give that path itself)"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return " (to throw the output away, write it to a temporary file and delete that)"
    return ""


def _pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs now (a temp file of a live writer must stay)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # access denied: it exists, as another user's
        try:
            code = ctypes.c_ulong()
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # not a PID this system can have
        return False
    return True


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


class Lock:
    """A held `exclusive_lock`; `check()` says whether its file (and so its folder) is still the one that was locked."""

    def __init__(self, path: Path, what: str, fd: int) -> None:
        self.path, self.what = path, what
        st = os.fstat(fd)
        self._id = (st.st_dev, st.st_ino)

    def check(self) -> None:
        """Raise FileNotFoundError if the lock file was deleted or replaced (its folder removed, moved or made anew)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._id:
            raise FileNotFoundError(errno.ENOENT, f"{self.what} was deleted, moved or replaced while this process held its "
                                                  f"lock {self.path}; stopping so as not to write where another process "
                                                  f"may now be writing. Start again in a folder nobody removes meanwhile")


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, wait: bool = False):
    """Hold an exclusive lock on the file `path` for a `with` block, yielding a Lock; it dies with its process (the command line).

    Another holder means a `Busy` error naming its PID, or, with `wait`, waiting for it; a killed holder's lock is gone.
    A lock path that is a symlink, hard link, FIFO, device or folder raises NotARegularFile and is left untouched.
    """
    path = Path(path)
    fix = "nothing it points to was opened or changed. Remove it (removing a link leaves its target alone) and try again"
    fd = open_regular_file(path, os.O_RDWR | os.O_CREAT, f"the lock of {what}:", fix)
    try:
        links = os.fstat(fd).st_nlink
        if links > 1:  # a hard link to a file elsewhere: the PID written below would land in that file
            raise NotARegularFile(f"the lock of {what}: {path} is a hard link (one of {links} names of one file), so it "
                                  f"was not written; remove it (the other names stay) and try again")
        f = open(fd, "r+", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    with f:
        if not _try_lock(f, wait):
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise Busy(f"{what} is in use by process {holder} (lock {path}); wait for it to finish or use another folder")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield Lock(path, what, f.fileno())
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
