"""A small, resilient HTTP downloader: mirrors, retries with backoff, resume, md5 check, safe unpacking."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import re
import shutil
import ssl
import tarfile
import tempfile
import time
import urllib.error
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

from .files import check_output_file, open_regular_file

_MIRRORS_ENV = "CIFAR10_MIRRORS"
_CHUNK = 1 << 16
_MAX_DELAY = 60.0
# 408/425/429 mean "not now" rather than "never": worth the same retries as a 5xx.
_RETRY_STATUS = frozenset({408, 425, 429})
_USER_AGENT = "alexnet-cifar10-downloader/1.0 (+urllib)"

_Opener = Callable[..., Any]


class DownloadError(RuntimeError):
    """Every URL failed; `failures` holds (url, reason) in the order they were tried (notebook 01's load_cifar10)."""

    def __init__(self, dest: Path, failures: Sequence[tuple[str, str]]) -> None:
        self.dest = dest
        self.failures = list(failures)
        lines = [f"could not download {dest.name}; tried {len(self.failures)} URL(s):"]
        lines += [f"  {i}. {url}: {reason}" for i, (url, reason) in enumerate(self.failures, 1)]
        part = dest.with_name(dest.name + ".part")
        kept = f" ({part.stat().st_size} bytes are kept in {part.name} and will be resumed)" if part.is_file() else ""
        lines.append(f"Check the internet connection (a proxy is read from HTTPS_PROXY / HTTP_PROXY) and try again{kept}, "
                     f"or list other mirrors of the same file in ${_MIRRORS_ENV} (space-separated URLs, tried first).")
        super().__init__("\n".join(lines))


class _Retry(Exception):
    """A failure worth another attempt at the same URL (network trouble, 5xx, truncation, bad md5)."""


class _Skip(Exception):
    """A failure that retrying the same URL cannot fix (404, 403, TLS certificate): go to the next mirror."""


def mirror_urls(defaults: Iterable[str]) -> list[str]:
    """URLs to try, in order: $CIFAR10_MIRRORS (space-separated), then `defaults`, no repeats (notebook 01's load_cifar10)."""
    # Mirrors from the environment go first: whoever sets it points at a nearer copy (a lab cache) or the only one
    # reachable, and the md5 check makes any mirror as safe as the official URL.
    seen: dict[str, None] = {}
    for url in os.environ.get(_MIRRORS_ENV, "").split():
        if re.match(r"https?://[^/\s]+", url):
            seen.setdefault(url, None)
        else:  # a bad mirror must not keep the official URL from being tried
            warnings.warn(f"{_MIRRORS_ENV}: skipping {url!r}, which is not an http(s) URL", stacklevel=2)
    for url in defaults:
        seen.setdefault(url.strip(), None)
    return [url for url in seen if url]


def file_md5(path: str | os.PathLike) -> str:
    """The hex md5 digest of a file, read in 1 MiB blocks (notebook 01's load_cifar10 and official_md5_matches)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backoff_delay(attempt: int, backoff: float, jitter: float = 0.1) -> float:
    """Pause before retry `attempt` (1, 2, ...): backoff * 2**(attempt-1) s, at most 60, plus 0..jitter x that (download_file)."""
    if attempt < 1:
        raise ValueError(f"attempt counts retries from 1, got {attempt}")
    base = min(backoff * 2 ** (attempt - 1), _MAX_DELAY)
    # Jitter keeps many clients that failed together (a class on one network) from retrying in lockstep.
    return base + random.uniform(0.0, jitter * base)


def download_file(urls: str | Sequence[str], dest: str | os.PathLike, md5: str, *, retries: int = 4, backoff: float = 1.0,
                  jitter: float = 0.1, timeout: float = 30.0, progress: bool = True, opener: _Opener | None = None,
                  sleep: Callable[[float], None] | None = None, max_bytes: int | None = None) -> Path:
    """Download `dest` from the first URL whose file has this md5, retrying and resuming; returns it (notebook 01's load_cifar10).

    Each URL gets 1 + `retries` attempts (a 4xx other than 408/416/425/429 skips to the next); `dest.part` is resumed.
    With `max_bytes` (the file's known size) a server that announces or sends more is left for the next URL, and the
    partial file never grows past it: a mirror streaming without end cannot fill the disk.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    md5 = _check_download_args(urls, md5, retries, backoff, jitter, timeout, max_bytes)
    opener = opener or urlopen
    sleep = sleep or _sleep
    dest = Path(dest)
    if dest.is_file() and file_md5(dest) == md5:
        return dest
    part = dest.with_name(dest.name + ".part")
    # A symlink, FIFO or device under either name would be written through or replaced: refused before any traffic.
    check_output_file(dest, "the download target")
    check_output_file(part, "the partial download")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if max_bytes is not None and part.is_file() and part.stat().st_size > max_bytes:
        part.unlink()  # longer than the file can be (left by a download without a cap): it cannot be resumed
    failures: list[tuple[str, str]] = []
    for url in urls:
        reason = "not tried"
        for attempt in range(retries + 1):
            if attempt:
                sleep(backoff_delay(attempt, backoff, jitter))
            try:
                _fetch(url, part, timeout, opener, progress, max_bytes)
            except _Skip as err:
                reason = str(err)
                break
            except _Retry as err:
                reason = str(err)
                continue
            got = file_md5(part)
            if got == md5:
                os.replace(part, dest)  # only a verified file ever carries the final name: no bad `dest` after a crash
                return dest
            part.unlink()
            reason = f"md5 mismatch (got {got}, expected {md5}); the bad file was deleted"
        failures.append((url, f"{reason} [{attempt + 1} attempt{'s' if attempt else ''}]"))
    raise DownloadError(dest, failures)


def _check_download_args(urls: list, md5: str, retries: int, backoff: float, jitter: float, timeout: float,
                         max_bytes: int | None) -> str:
    """Every argument error before any network traffic; returns the md5 in lower case."""
    if not urls:
        raise ValueError("download_file needs at least one URL")
    for url in urls:
        if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
            raise ValueError(f"not an http(s) URL: {url!r}")
    md5 = md5.lower()
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise ValueError(f"md5 must be 32 hex digits, got {md5!r}")
    if retries < 0 or backoff < 0 or jitter < 0 or timeout <= 0:
        raise ValueError(f"need retries >= 0, backoff >= 0, jitter >= 0 and timeout > 0; got "
                         f"retries={retries}, backoff={backoff}, jitter={jitter}, timeout={timeout}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise ValueError(f"max_bytes is the file's size in bytes, a whole number of at least 1 (or None); got {max_bytes!r}")
    return md5


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # a module-level indirection so tests of callers that cannot pass `sleep` can patch it out


def _fetch(url: str, part: Path, timeout: float, opener: _Opener, progress: bool, max_bytes: int | None) -> None:
    """One attempt: append the rest of `url` to `part`; raises _Retry or _Skip on failure."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = opener(Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        try:
            _raise_for_status(err, part, offset)
        finally:
            err.close()
        return  # a 416 that says `part` is already whole: the caller verifies its md5
    except urllib.error.URLError as err:
        if isinstance(err.reason, ssl.SSLCertVerificationError):
            raise _Skip(f"TLS certificate rejected: {err.reason}") from err
        raise _Retry(f"connection failed: {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:
        raise _Retry(f"connection failed: {type(err).__name__}: {err}") from err

    with response:
        status = getattr(response, "status", None) or response.getcode()
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206 and offset:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink()
                raise _Retry(f"asked to resume at byte {offset} but the server sent from byte {start}; restarting")
            mode = "ab"
        elif status in (200, 206):
            # A 200 to a Range request means the server ignores Range: the body is the whole file again.
            offset, total, mode = 0, length, "wb"
        else:
            raise _Retry(f"unexpected HTTP status {status}")
        expected = offset + length if length is not None else total
        announced = max(n for n in (expected, total, 0) if n is not None)
        if max_bytes is not None and announced > max_bytes:
            raise _Skip(f"the server announces {announced} bytes, more than the {max_bytes} the file has: it serves "
                        f"something else, so nothing more was downloaded from it")
        received = _stream(response, part, mode, offset, expected, progress, max_bytes)
    if expected is not None and offset + received < expected:
        raise _Retry(f"connection closed after {offset + received} of {expected} bytes (kept for resuming)")


def _stream(response: Any, part: Path, mode: str, offset: int, total: int | None, progress: bool, max_bytes: int | None) -> int:
    """Copy the body into `part`, never past `max_bytes`; network errors become _Retry, disk errors propagate unchanged."""
    from tqdm.auto import tqdm

    received = 0
    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
               desc=part.name.removesuffix(".part"), disable=not progress)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
    room = None if max_bytes is None else max_bytes - offset
    try:
        with open(open_regular_file(part, flags, "the partial download"), mode) as f:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    # IncompleteRead/reset/timeout mid-body: what was written so far stays for the resume.
                    raise _Retry(f"connection broke after {offset + received} bytes: {type(err).__name__}: {err}") from err
                if not chunk:
                    break
                if room is not None and received + len(chunk) > room:
                    f.close()
                    part.unlink()
                    raise _Skip(f"the server sent more than the {max_bytes} bytes the file has (a stream without end?); "
                                f"stopped there and deleted the partial file")
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    finally:
        bar.close()
    return received


def _raise_for_status(err: urllib.error.HTTPError, part: Path, offset: int) -> None:
    """Turn an HTTP error into _Retry or _Skip; returns only for a 416 that says `part` is complete."""
    if err.code == 416 and offset:
        _start, total = _content_range((err.headers or {}).get("Content-Range", ""))
        if total == offset:  # the partial file is already whole (a run died before the md5 check): verify it
            return
        part.unlink()
        raise _Retry(f"HTTP 416: the server cannot resume at byte {offset} (file size {total}); restarting") from err
    reason = f"HTTP {err.code} {err.reason}"
    if err.code >= 500 or err.code in _RETRY_STATUS:
        raise _Retry(reason) from err
    raise _Skip(reason) from err


def _content_range(value: str) -> tuple[int | None, int | None]:
    """(first byte, total size) from 'bytes 100-199/200' or 'bytes */200'; None where absent."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Unpack a tar archive into `dest`, refusing members outside it; returns top-level paths (notebook 01's load_cifar10)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            _check_member(m)
        # Unpack next to the target and move into place afterwards, so a failure never leaves a half-written folder.
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        try:
            if hasattr(tarfile, "data_filter"):
                # Python's own checks on top of ours (also strips setuid bits and odd permissions).
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.10.12 without the backported filters
                tar.extractall(tmp, members=members)
            tops = sorted(p.name for p in tmp.iterdir())
            for name in tops:
                src, dst = tmp / name, dest / name
                if src.is_dir() and dst.is_dir():
                    shutil.copytree(src, dst, dirs_exist_ok=True, copy_function=os.replace)
                else:
                    os.replace(src, dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [dest / name for name in tops]


def _check_member(m: tarfile.TarInfo) -> None:
    parts = Path(m.name).parts
    if m.name.startswith(("/", "\\")) or Path(m.name).is_absolute() or re.match(r"[A-Za-z]:", m.name):
        raise ValueError(f"unsafe archive member {m.name!r}: absolute path")
    if ".." in parts:
        raise ValueError(f"unsafe archive member {m.name!r}: '..' in the path")
    if not (m.isfile() or m.isdir()):
        # CIFAR-10 holds only files and folders; links and devices could point anywhere.
        raise ValueError(f"unsafe archive member {m.name!r}: not a regular file or folder")
