"""Atomic writes and folder locks (helpers/plumbing/files.py)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time

import pytest

from helpers.plumbing.files import (
    Busy,
    NotARegularFile,
    atomic_write,
    atomic_write_json,
    check_output_file,
    exclusive_lock,
    remove_temps,
    temp_path,
)

HOLD = """
import sys, time
from helpers.plumbing.files import exclusive_lock
with exclusive_lock(sys.argv[1], "the test folder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = atomic_write_json(tmp_path / "a.json", {"v": 1})

    def half_then_fail(f):
        f.write(b'{"v": 2')
        raise KeyboardInterrupt  # even Ctrl-C in the middle

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == '{\n "v": 1\n}' and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.skipif(sys.platform == "win32", reason="the holder is killed with a POSIX signal")
def test_a_held_lock_names_its_holder_and_dies_with_it(tmp_path):
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(Busy, match=f"in use by process {holder.pid}"), exclusive_lock(lock, "the test folder"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(lock, "the test folder"):  # killed: the lock went with the process
        assert lock.read_text() == str(os.getpid())


def test_waiting_for_a_lock_takes_it_once_the_holder_lets_go(tmp_path):
    lock, order = tmp_path / ".lock", []

    def second():
        with exclusive_lock(lock, "the data folder", wait=True):
            order.append("second")

    with exclusive_lock(lock, "the data folder"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join(timeout=10)
    assert order == ["first done", "second"]


def dead_pid() -> int:
    """The PID of a process that has just ended (PIDs are reused only after the system wraps around)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_remove_temps_drops_what_killed_writers_left(tmp_path):
    gone, also_gone = dead_pid(), dead_pid()
    (tmp_path / f"checkpoint.pt.{gone}.tmp").write_text("torn")
    (tmp_path / f"checkpoint.pt.{also_gone}.tmp").write_text("torn")
    (tmp_path / f"other.pt.{gone}.tmp").write_text("not ours")
    (tmp_path / f"checkpoint.pt.x.{gone}.tmp").write_text("another file's")
    assert temp_path(tmp_path / "checkpoint.pt").name == f"checkpoint.pt.{os.getpid()}.tmp"
    removed = remove_temps(tmp_path / "checkpoint.pt")
    assert sorted(p.name for p in removed) == sorted([f"checkpoint.pt.{gone}.tmp", f"checkpoint.pt.{also_gone}.tmp"])
    assert f"other.pt.{gone}.tmp" in os.listdir(tmp_path) and f"checkpoint.pt.x.{gone}.tmp" in os.listdir(tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="a live writer is a POSIX child process here")
def test_remove_temps_of_a_folder_takes_every_dead_writers_temp_file_and_keeps_live_ones(tmp_path):
    gone = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        dead_names = [f"{name}.{gone}.tmp" for name in ("history.csv", "history.json", "config.json", "checkpoint.pt",
                                                         ".write-test")]
        live_names = [f"checkpoint.pt.{live.pid}.tmp", f"history.csv.{os.getpid()}.tmp"]
        other_names = ["notes.tmp", "history.csv", f"history.csv.{gone}.tmp.bak"]
        for name in dead_names + live_names + other_names:
            (tmp_path / name).write_text("x")
        (tmp_path / f"folder.{gone}.tmp").mkdir()  # never a folder, whatever its name
        outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
        outside.write_text("keep me")
        (tmp_path / f"metrics.json.{gone}.tmp").symlink_to(outside)
        removed = remove_temps(tmp_path)
        assert sorted(p.name for p in removed) == sorted([*dead_names, f"metrics.json.{gone}.tmp"])
        assert sorted(os.listdir(tmp_path)) == sorted([*live_names, *other_names, f"folder.{gone}.tmp"])
        assert outside.read_text() == "keep me"  # the link went, not what it pointed to
    finally:
        live.communicate(b"")
    assert remove_temps(tmp_path / "missing-folder" / "x.json") == []


@pytest.fixture
def outside(tmp_path):
    """A file outside the folder the tests write in, with bytes that must survive."""
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(b"precious bytes\n")
    (tmp_path / "run").mkdir()
    return path


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="needs symlinks and O_NOFOLLOW")
@pytest.mark.parametrize("dangling", [False, True])
def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, outside, dangling):
    target = outside.with_name("not-there-yet") if dangling else outside
    lock = tmp_path / "run" / ".lock"
    lock.symlink_to(target)
    with pytest.raises(NotARegularFile) as err, exclusive_lock(lock, f"the run folder {lock.parent}"):
        pytest.fail("the lock was taken through a symlink")
    text = str(err.value)
    assert str(lock) in text and "symbolic link" in text and str(target) in text and "Remove it" in text
    assert outside.read_bytes() == b"precious bytes\n" and not outside.with_name("not-there-yet").exists()
    assert lock.is_symlink()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("through_link", [False, True])
def test_a_lock_that_is_a_fifo_is_refused_without_hanging(tmp_path, outside, through_link):
    fifo = outside.with_name("pipe")
    os.mkfifo(fifo)
    lock = tmp_path / "run" / ".lock"
    if through_link:
        lock.symlink_to(fifo)
    else:
        lock = fifo
    with pytest.raises(NotARegularFile, match="symbolic link" if through_link else r"named pipe \(FIFO\)"), \
            exclusive_lock(lock, "the data folder", wait=True):
        pytest.fail("the lock was taken on a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_lock_that_is_a_folder_or_a_hard_link_is_refused(tmp_path, outside):
    (tmp_path / "run" / ".lock").mkdir()
    with pytest.raises(NotARegularFile, match="is a folder"), exclusive_lock(tmp_path / "run" / ".lock", "the run folder"):
        pytest.fail("the lock was taken on a folder")
    hard = tmp_path / "run" / ".other-lock"
    os.link(outside, hard)
    with pytest.raises(NotARegularFile, match="hard link"), exclusive_lock(hard, "the run folder"):
        pytest.fail("the lock was taken on a hard link")
    assert outside.read_bytes() == b"precious bytes\n"


def test_a_lock_notices_its_folder_was_deleted_or_replaced(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with exclusive_lock(run / ".lock", f"the run folder {run}") as lock:
        lock.check()  # still there: nothing raised
        shutil.rmtree(run)
        with pytest.raises(FileNotFoundError, match=f"the run folder {run} was deleted, moved or replaced"):
            lock.check()
        run.mkdir()  # a second run made the folder anew and took its own lock
        with exclusive_lock(run / ".lock", "the second run"):
            with pytest.raises(FileNotFoundError, match="replaced"):
                lock.check()


def special_files(tmp_path):
    """(label, path, check that it is unchanged) for each kind of non-regular file this machine lets a test make."""
    target = tmp_path / "shared.json"
    target.write_text('{"shared": true}')
    made = []
    link = tmp_path / "link.json"
    link.symlink_to(target)
    made.append(("symbolic link", link, lambda: link.is_symlink() and target.read_text() == '{"shared": true}'))
    folder = tmp_path / "folder.json"
    folder.mkdir()
    made.append(("folder", folder, folder.is_dir))
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.json"
        os.mkfifo(fifo)
        made.append(("named pipe", fifo, lambda: stat.S_ISFIFO(os.lstat(fifo).st_mode)))
    return made


def device_node(tmp_path):
    """A character device like /dev/null (1, 3), or a skip where this user may not make one (only root may)."""
    path = tmp_path / "null.json"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (AttributeError, PermissionError, OSError) as err:
        pytest.skip(f"cannot make a device node here ({err})")
    return path


def test_check_output_file_refuses_what_is_not_a_regular_file(tmp_path):
    for label, path, unchanged in special_files(tmp_path):
        with pytest.raises(ValueError) as err:
            check_output_file(path, "--out")
        text = str(err.value)
        assert text.startswith(f"--out {path} is a") and label in text and "give the path of a regular file" in text
        assert unchanged()
    assert "give that path itself" in str(pytest.raises(NotARegularFile, check_output_file, tmp_path / "link.json").value)
    regular = tmp_path / "ok.json"
    regular.write_text("[]")
    assert check_output_file(regular) == regular and check_output_file(tmp_path / "new.json") == tmp_path / "new.json"


def test_check_output_file_refuses_a_device_node(tmp_path):
    node = device_node(tmp_path)
    with pytest.raises(NotARegularFile, match=f"--out {node} is a character device.*temporary file"):
        check_output_file(node, "--out")
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_atomic_write_never_replaces_a_special_file(tmp_path):
    for label, path, unchanged in special_files(tmp_path):
        with pytest.raises(NotARegularFile, match=label):
            atomic_write_json(path, {"new": 1})
        assert unchanged()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.json", "folder.json", "link.json", "shared.json"][
        (0 if hasattr(os, "mkfifo") else 1):]  # and no temp file left


def test_atomic_write_never_replaces_a_device_node(tmp_path):
    node = device_node(tmp_path)
    with pytest.raises(NotARegularFile, match="character device"):
        atomic_write_json(node, {"new": 1})
    assert stat.S_ISCHR(os.lstat(node).st_mode) and os.listdir(tmp_path) == ["null.json"]


def test_atomic_write_does_not_follow_a_symlink_planted_as_its_temp_file(tmp_path, outside):
    path = tmp_path / "run" / "history.json"
    temp_path(path).symlink_to(outside)
    atomic_write_json(path, [1])
    assert path.read_text() == "[\n 1\n]" and not path.is_symlink()
    assert outside.read_bytes() == b"precious bytes\n" and sorted(os.listdir(path.parent)) == ["history.json"]


def test_atomic_write_into_a_vanished_folder_raises_and_does_not_recreate_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    atomic_write_json(run / "history.json", [1])
    shutil.rmtree(run)  # deleted while the run trains
    with pytest.raises(FileNotFoundError, match=f"the folder {run} is gone") as err:
        atomic_write_json(run / "history.json", [1, 2])
    assert "history.json was not written" in str(err.value) and not run.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        atomic_write_json(tmp_path / "file" / "a.json", [])


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="needs symlinks and O_NOFOLLOW")
def test_a_symlink_or_fifo_that_appears_between_the_check_and_the_open_is_still_refused(tmp_path, outside, monkeypatch):
    import helpers.plumbing.files as files

    check, calls = files._check_regular, []

    def late(path, what, fix):  # the first check runs before the swap: only the open itself can catch it
        calls.append(path)
        return path if len(calls) == 1 else check(path, what, fix)

    lock = tmp_path / "run" / ".lock"
    lock.symlink_to(outside)
    monkeypatch.setattr(files, "_check_regular", late)
    with pytest.raises(NotARegularFile, match="symbolic link"), exclusive_lock(lock, "the run folder"):
        pytest.fail("the lock was taken through a symlink")
    assert outside.read_bytes() == b"precious bytes\n"
    lock.unlink()
    os.mkfifo(lock)
    calls.clear()
    with pytest.raises(NotARegularFile, match="named pipe"), exclusive_lock(lock, "the run folder"):
        pytest.fail("the lock was taken on a FIFO")


def test_atomic_write_refuses_a_target_turned_into_a_symlink_while_it_wrote(tmp_path, outside):
    path = tmp_path / "run" / "results.json"
    path.write_text("[]")

    def swap_then_write(f):  # another process puts a symlink in its place meanwhile
        path.unlink()
        path.symlink_to(outside)
        f.write(b"[1]")

    with pytest.raises(NotARegularFile, match="symbolic link"):
        atomic_write(path, swap_then_write)
    assert path.is_symlink() and outside.read_bytes() == b"precious bytes\n" and os.listdir(path.parent) == ["results.json"]
