"""The resilient downloader (helpers/plumbing/download.py) against a real, scriptable HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import make_cifar_folder
from helpers.data import cifar10 as D
from helpers.plumbing.download import DownloadError, backoff_delay, download_file, extract_tar, file_md5, mirror_urls

# Fast, deterministic retries for every test: no real sleeping, no jitter unless a test asks for it.
FAST = {"retries": 2, "backoff": 0.5, "jitter": 0.0, "timeout": 5.0, "progress": False}
# An "endless" body gives up after this many bytes, so a client without a cap fails its test instead of hanging it.
ENDLESS_LIMIT = 64 << 20
HUGE = 10**12


@dataclass
class Served:
    """What one request asked for and got: path, Range header, status, body bytes actually sent."""

    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class Script:
    """Files by path, and per path a queue of behaviours used one per request ('ok' once it is empty)."""

    files: dict[str, bytes] = field(default_factory=dict)
    plan: dict[str, list] = field(default_factory=dict)
    log: list[Served] = field(default_factory=list)

    def sent(self, path: str) -> int:
        return sum(s.sent for s in self.log if s.path == path)


class Handler(BaseHTTPRequestHandler):
    script: Script  # set per server by the fixture

    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:
        script = self.server.script
        queue = script.plan.get(self.path, [])
        action = queue.pop(0) if queue else "ok"
        rng = self.headers.get("Range")
        body = script.files.get(self.path)
        if body is None or isinstance(action, int):
            code = 404 if body is None else action
            self._reply(code, b"", {"Content-Length": "0"}, rng)
            return
        if action == "corrupt":
            bad = bytes([body[0] ^ 0xFF]) + body[1:]
            self._reply(200, bad, {"Content-Length": str(len(bad))}, rng)
        elif action == "drop":
            # Promise the whole file, send half, hang up: a truncated body.
            self._reply(200, body[: len(body) // 2], {"Content-Length": str(len(body))}, rng)
        elif action == "ignore_range":
            self._reply(200, body, {"Content-Length": str(len(body))}, rng)
        elif action == "no_length":
            self._reply(200, body, {}, rng)
        elif action == "announce_huge":
            self._reply(200, body, {"Content-Length": str(HUGE)}, rng)
        elif action == "endless":
            self._endless(body, rng)
        elif action == "stall":
            script.log.append(Served(self.path, rng, 200, 0))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            threading.Event().wait(1.0)
        elif rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}", "Content-Length": "0"}, rng)
            else:
                chunk = body[start:]
                self._reply(206, chunk, {"Content-Length": str(len(chunk)),
                                         "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}, rng)
        else:
            self._reply(200, body, {"Content-Length": str(len(body))}, rng)

    def _endless(self, body: bytes, rng: str | None) -> None:
        """The file's bytes, then more and more, with no Content-Length: until the client hangs up."""
        served = Served(self.path, rng, 200, 0)
        self.server.script.log.append(served)
        self.send_response(200)
        self.end_headers()
        block = body + b"\0" * (1 << 16)
        try:
            while served.sent < ENDLESS_LIMIT:
                self.wfile.write(block)
                served.sent += len(block)
        except OSError:  # the client closed the connection: what it is meant to do
            pass

    def _reply(self, code: int, body: bytes, headers: dict[str, str], rng: str | None) -> None:
        # Logged before anything goes out: the client may finish reading (and the test check the log)
        # before this thread gets to run again.
        self.server.script.log.append(Served(self.path, rng, code, len(body)))
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


@pytest.fixture
def server():
    """A ThreadingHTTPServer on a free port; yields (base_url, script)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.script = Script()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.script
    finally:
        httpd.shutdown()
        httpd.server_close()


def make_archive(tmp: Path) -> bytes:
    """A tiny valid cifar-10-python.tar.gz: cifar-10-batches-py/ with 4 images per batch."""
    src = make_cifar_folder(tmp / "src", per_batch=4, seed=3)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / D.FOLDER, arcname=D.FOLDER)
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    return make_archive(tmp_path_factory.mktemp("archive"))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def fetch(urls, dest, digest, sleeps, **kw):
    return download_file(urls, dest, digest, sleep=sleeps.append, **{**FAST, **kw})


def record_part_sizes(monkeypatch) -> list[int]:
    """Sizes of every .part file at the moment it is deleted: a file only grows, so that is its largest."""
    sizes: list[int] = []
    unlink = Path.unlink

    def recording(self, *args, **kwargs):
        if self.name.endswith(".part") and self.is_file():
            sizes.append(self.stat().st_size)
        return unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", recording)
    return sizes


def test_plain_download_verifies_and_renames(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    out = fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert out == tmp_path / "a.tgz" and out.read_bytes() == archive
    assert not (tmp_path / "a.tgz.part").exists()
    assert [(s.status, s.sent) for s in script.log] == [(200, len(archive))] and sleeps == []
    # Already there and verified: no request at all.
    fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert len(script.log) == 1


def test_resume_after_dropped_connection_sends_range(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = ["drop"]
    half = len(archive) // 2
    out = fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert file_md5(out) == md5(archive)
    assert [(s.range, s.status, s.sent) for s in script.log] == [
        (None, 200, half),
        (f"bytes={half}-", 206, len(archive) - half),
    ]
    # The first half crossed the wire once: resumed, not re-downloaded.
    assert script.sent("/a.tgz") == len(archive)
    assert sleeps == [0.5]


def test_partial_file_from_an_earlier_run_is_resumed(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    (tmp_path / "a.tgz.part").write_bytes(archive[:1000])
    fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert [(s.range, s.status, s.sent) for s in script.log] == [("bytes=1000-", 206, len(archive) - 1000)]
    assert (tmp_path / "a.tgz").read_bytes() == archive


def test_complete_part_file_answered_416_is_verified(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    (tmp_path / "a.tgz.part").write_bytes(archive)
    fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert [(s.range, s.status) for s in script.log] == [(f"bytes={len(archive)}-", 416)]
    assert (tmp_path / "a.tgz").read_bytes() == archive


def test_oversized_part_file_answered_416_restarts_from_zero(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    (tmp_path / "a.tgz.part").write_bytes(archive + b"junk")
    fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert [(s.range, s.status) for s in script.log] == [(f"bytes={len(archive) + 4}-", 416), (None, 200)]
    assert (tmp_path / "a.tgz").read_bytes() == archive


def test_server_ignoring_range_restarts_and_ends_correct(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = ["drop", "ignore_range"]
    out = fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert out.read_bytes() == archive
    half = len(archive) // 2
    assert [(s.range, s.status, s.sent) for s in script.log] == [(None, 200, half), (f"bytes={half}-", 200, len(archive))]


def test_corrupt_body_rejected_then_good_one_accepted(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = ["corrupt"]
    out = fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert out.read_bytes() == archive
    # The bad file was deleted, so the retry starts from zero rather than resuming it.
    assert [(s.range, s.status, s.sent) for s in script.log] == [(None, 200, len(archive)), (None, 200, len(archive))]
    assert sleeps == [0.5]


def test_body_without_content_length_is_accepted_by_its_md5(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = ["no_length"]
    out = fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert out.read_bytes() == archive and len(script.log) == 1


def test_always_corrupt_fails_and_leaves_no_file(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = ["corrupt"] * 3
    with pytest.raises(DownloadError, match=r"md5 mismatch \(got [0-9a-f]{32}, expected " + md5(archive)):
        fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert not (tmp_path / "a.tgz").exists() and not (tmp_path / "a.tgz.part").exists()
    assert len(script.log) == 3


def test_mirrors_tried_in_order_dead_first_then_second(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/good.tgz"] = archive
    out = fetch([f"{base}/missing.tgz", f"{base}/good.tgz"], tmp_path / "a.tgz", md5(archive), sleeps)
    assert out.read_bytes() == archive
    # 404 is permanent: one request, no backoff, then the next mirror.
    assert [(s.path, s.status) for s in script.log] == [("/missing.tgz", 404), ("/good.tgz", 200)]
    assert sleeps == []


def test_5xx_retried_with_exponential_backoff(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = [503, 500, 502]
    out = fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps, retries=3, backoff=0.25)
    assert out.read_bytes() == archive
    assert [s.status for s in script.log] == [503, 500, 502, 200]
    assert sleeps == [0.25, 0.5, 1.0]


def test_backoff_jitter_stays_within_bounds(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = [503, 503]
    fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps, jitter=0.1, backoff=1.0)
    assert len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 1.1 and 2.0 <= sleeps[1] <= 2.2
    assert backoff_delay(20, 1.0, jitter=0.0) == 60.0


def test_timeout_on_stalled_server_is_retried(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = ["stall"]
    out = fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps, timeout=0.2)
    assert out.read_bytes() == archive and sleeps == [0.5]


def test_final_error_lists_every_url_with_its_reason(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/busy.tgz"] = archive
    script.plan["/busy.tgz"] = [503] * 3
    dead = "http://127.0.0.1:9/nothing.tgz"  # port 9 (discard): nothing listens, connection refused
    urls = [f"{base}/missing.tgz", f"{base}/busy.tgz", dead]
    with pytest.raises(DownloadError) as err:
        fetch(urls, tmp_path / "a.tgz", md5(archive), sleeps)
    assert [u for u, _ in err.value.failures] == urls
    text = str(err.value)
    assert f"1. {base}/missing.tgz: HTTP 404 Not Found [1 attempt]" in text
    assert f"2. {base}/busy.tgz: HTTP 503 Service Unavailable [3 attempts]" in text
    assert re.search(r"3\. http://127\.0\.0\.1:9/nothing\.tgz: connection failed: .*refused.* \[3 attempts\]", text)
    assert "CIFAR10_MIRRORS" in text and "internet" in text
    assert sleeps == [0.5, 1.0, 0.5, 1.0]


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="at least one URL"):
        download_file([], tmp_path / "x", "0" * 32)
    with pytest.raises(ValueError, match="not an http"):
        download_file(["ftp://example.org/x"], tmp_path / "x", "0" * 32)
    with pytest.raises(ValueError, match="32 hex digits"):
        download_file("http://example.org/x", tmp_path / "x", "abc")
    with pytest.raises(ValueError, match="retries >= 0"):
        download_file("http://example.org/x", tmp_path / "x", "0" * 32, retries=-1)


def test_mirror_urls_env_first_without_repeats(monkeypatch):
    monkeypatch.setenv("CIFAR10_MIRRORS", " http://m1/a  http://m2/a\thttp://official/a ")
    assert mirror_urls(["http://official/a", "http://m3/a"]) == ["http://m1/a", "http://m2/a", "http://official/a", "http://m3/a"]
    monkeypatch.delenv("CIFAR10_MIRRORS")
    assert mirror_urls(["http://official/a"]) == ["http://official/a"]


def _tar_with(tmp_path: Path, info: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info.size = len(data) if info.isfile() else 0
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


@pytest.mark.parametrize("name, kind, why", [
    ("../escape.txt", tarfile.REGTYPE, "'..'"),
    ("/tmp/abs.txt", tarfile.REGTYPE, "absolute"),
    ("ok/link", tarfile.SYMTYPE, "not a regular file"),
])
def test_extract_rejects_unsafe_members(tmp_path, name, kind, why):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
    with pytest.raises(ValueError, match=why):
        extract_tar(_tar_with(tmp_path, info), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_extract_unpacks_into_place(tmp_path, archive):
    (tmp_path / "a.tgz").write_bytes(archive)
    assert extract_tar(tmp_path / "a.tgz", tmp_path / "out") == [tmp_path / "out" / D.FOLDER]
    assert sorted(p.name for p in (tmp_path / "out" / D.FOLDER).iterdir()) == sorted(
        [*D.TRAIN_FILES, *D.TEST_FILES, D.META_FILE])
    assert [p.name for p in (tmp_path / "out").iterdir()] == [D.FOLDER]  # no temporary folder left behind


def test_load_cifar10_downloads_from_env_mirror(server, archive, tmp_path, monkeypatch):
    base, script = server
    script.files["/cifar.tgz"] = archive
    script.plan["/cifar.tgz"] = ["drop"]
    # The official URL is replaced by a local 404 so nothing here can reach the internet.
    monkeypatch.setattr(D, "URL", f"{base}/official.tgz")
    monkeypatch.setattr(D, "ARCHIVE_MD5", md5(archive))
    monkeypatch.setenv("CIFAR10_MIRRORS", f"{base}/gone.tgz {base}/cifar.tgz")
    monkeypatch.setattr("helpers.plumbing.download._sleep", lambda seconds: None)
    data = D.load_cifar10(root=tmp_path / "root", download=True, cache=False)
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    assert data.classes == D.CLASSES
    assert [(s.path, s.status) for s in script.log] == [("/gone.tgz", 404), ("/cifar.tgz", 200), ("/cifar.tgz", 206)]
    assert file_md5(tmp_path / "root" / D.ARCHIVE) == md5(archive)
    # Same images as the folder the archive was built from.
    ref = D.load_cifar10(make_cifar_folder(tmp_path / "ref", per_batch=4, seed=3), download=False, cache=False)
    assert (data.train_images == ref.train_images).all() and (data.test_labels == ref.test_labels).all()


def test_download_cifar10_with_urls_and_failure_message(server, archive, tmp_path, monkeypatch):
    base, script = server
    script.files["/cifar.tgz"] = archive
    monkeypatch.delenv("CIFAR10_MIRRORS", raising=False)
    D.download_cifar10(tmp_path / "root", urls=[f"{base}/cifar.tgz"], md5=md5(archive))
    assert (tmp_path / "root" / D.FOLDER / "test_batch").is_file()
    assert [s.path for s in script.log] == ["/cifar.tgz"]
    with pytest.raises(D.CIFAR10Error) as err:
        D.download_cifar10(tmp_path / "other", urls=[f"{base}/nope.tgz"], md5=md5(archive))
    text = str(err.value)
    assert str(tmp_path / "other" / D.FOLDER) in text and "the download failed" in text
    assert f"{base}/nope.tgz: HTTP 404 Not Found [1 attempt]" in text and "CIFAR10_ROOT" in text


def test_progress_bar_can_be_switched_on_and_off(server, archive, tmp_path, sleeps, capsys):
    base, script = server
    script.files["/a.tgz"] = archive
    fetch(f"{base}/a.tgz", tmp_path / "quiet.tgz", md5(archive), sleeps, progress=False)
    assert capsys.readouterr().err == ""
    fetch(f"{base}/a.tgz", tmp_path / "loud.tgz", md5(archive), sleeps, progress=True)
    err = capsys.readouterr().err
    assert "loud.tgz" in err and "100%" in err


def test_error_mentions_kept_partial_file(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = ["drop", 503, 503]
    with pytest.raises(DownloadError, match=rf"{len(archive) // 2} bytes are kept in a.tgz.part and will be resumed"):
        fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert (tmp_path / "a.tgz.part").read_bytes() == archive[: len(archive) // 2]


def test_a_mirror_with_another_scheme_is_skipped_with_a_warning_not_fatal(monkeypatch):
    monkeypatch.setenv("CIFAR10_MIRRORS", "ftp://lab/cifar.tgz file:///srv/cifar.tgz https://lab.example/cifar.tgz")
    with pytest.warns(UserWarning, match="skipping 'ftp://lab/cifar.tgz'"):
        urls = mirror_urls(["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"])
    assert urls == ["https://lab.example/cifar.tgz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]


def test_an_endless_stream_is_stopped_at_the_cap_and_the_next_mirror_used(server, archive, tmp_path, sleeps, monkeypatch):
    base, script = server
    script.files["/endless.tgz"] = archive
    script.files["/good.tgz"] = archive
    script.plan["/endless.tgz"] = ["endless"]
    largest = record_part_sizes(monkeypatch)
    out = fetch([f"{base}/endless.tgz", f"{base}/good.tgz"], tmp_path / "a.tgz", md5(archive), sleeps,
                max_bytes=len(archive))
    assert out.read_bytes() == archive
    assert [(s.path, s.status) for s in script.log] == [("/endless.tgz", 200), ("/good.tgz", 200)] and sleeps == []
    # The mirror kept sending (more than the cap went out) but the partial file never held more than the cap. The server
    # thread counts what it sent on its own time: on a loaded machine it may lag behind the client for a moment.
    deadline = time.monotonic() + 10
    while script.sent("/endless.tgz") <= len(archive) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(archive) < script.sent("/endless.tgz") < ENDLESS_LIMIT
    assert largest and max(largest) <= len(archive)


def test_an_endless_stream_alone_fails_naming_the_url_and_leaves_nothing(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/endless.tgz"] = archive
    script.plan["/endless.tgz"] = ["endless"] * 3
    with pytest.raises(DownloadError) as err:
        fetch(f"{base}/endless.tgz", tmp_path / "a.tgz", md5(archive), sleeps, max_bytes=len(archive))
    assert (f"1. {base}/endless.tgz: the server sent more than the {len(archive)} bytes the file has (a stream without "
            f"end?); stopped there and deleted the partial file [1 attempt]") in str(err.value)
    assert len(script.log) == 1 and sleeps == []  # a mirror that sends another file is not asked again
    assert os.listdir(tmp_path) == []


def test_a_body_announced_larger_than_the_cap_is_not_downloaded(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/big.tgz"] = archive
    script.plan["/big.tgz"] = ["announce_huge"]
    with pytest.raises(DownloadError) as err:
        fetch(f"{base}/big.tgz", tmp_path / "a.tgz", md5(archive), sleeps, max_bytes=len(archive))
    assert (f"{base}/big.tgz: the server announces {HUGE} bytes, more than the {len(archive)} the file has: it serves "
            f"something else, so nothing more was downloaded from it [1 attempt]") in str(err.value)
    assert os.listdir(tmp_path) == []


def test_a_resume_announcing_a_larger_file_keeps_the_partial_file(server, archive, tmp_path, sleeps):
    base, script = server
    bigger = archive + b"x" * 100
    script.files["/a.tgz"] = bigger  # this mirror serves another, longer file
    (tmp_path / "a.tgz.part").write_bytes(archive[:1000])
    with pytest.raises(DownloadError, match=rf"announces {len(bigger)} bytes, more than the {len(archive)}"):
        fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps, max_bytes=len(archive))
    assert [(s.range, s.status) for s in script.log] == [("bytes=1000-", 206)]
    assert (tmp_path / "a.tgz.part").read_bytes() == archive[:1000]


def test_the_cap_is_the_size_itself_not_one_byte_less(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    script.plan["/a.tgz"] = ["no_length"]  # no Content-Length: only counting the body can stop it
    out = fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps, max_bytes=len(archive))
    assert out.read_bytes() == archive
    script.plan["/a.tgz"] = ["no_length"]
    with pytest.raises(DownloadError, match=f"sent more than the {len(archive) - 1} bytes"):
        fetch(f"{base}/a.tgz", tmp_path / "b.tgz", md5(archive), sleeps, max_bytes=len(archive) - 1)
    assert not (tmp_path / "b.tgz.part").exists()


def test_a_partial_file_longer_than_the_cap_is_discarded_and_the_download_restarts(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    (tmp_path / "a.tgz.part").write_bytes(archive + b"\0" * 5000)  # left by a download that had no cap
    fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps, max_bytes=len(archive))
    assert [(s.range, s.status) for s in script.log] == [(None, 200)]
    assert (tmp_path / "a.tgz").read_bytes() == archive


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "170498071"])
def test_a_cap_that_is_not_a_positive_whole_number_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="max_bytes is the file's size in bytes"):
        download_file("http://127.0.0.1:9/x", tmp_path / "x", "0" * 32, max_bytes=bad)


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="needs symlinks and O_NOFOLLOW")
@pytest.mark.parametrize("name", ["a.tgz", "a.tgz.part"])
def test_a_download_target_or_partial_file_that_is_a_symlink_is_refused_before_any_request(
        server, archive, tmp_path, sleeps, name):
    base, script = server
    script.files["/a.tgz"] = archive
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"precious")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / name).symlink_to(outside)
    with pytest.raises(ValueError, match=f"{tmp_path / 'data' / name} is a symbolic link"):
        fetch(f"{base}/a.tgz", tmp_path / "data" / "a.tgz", md5(archive), sleeps)
    assert outside.read_bytes() == b"precious" and script.log == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_partial_file_that_is_a_fifo_is_refused_without_hanging(server, archive, tmp_path, sleeps):
    base, script = server
    script.files["/a.tgz"] = archive
    os.mkfifo(tmp_path / "a.tgz.part")
    with pytest.raises(ValueError, match=r"a.tgz.part is a named pipe \(FIFO\)"):
        fetch(f"{base}/a.tgz", tmp_path / "a.tgz", md5(archive), sleeps)
    assert script.log == []
