"""Atomic writes and folder locks (helpers/plumbing/files.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from helpers.plumbing.files import Busy, atomic_write, atomic_write_json, exclusive_lock, remove_temps, temp_path

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


def test_remove_temps_drops_what_killed_writers_left(tmp_path):
    (tmp_path / "checkpoint.pt.123.tmp").write_text("torn")
    (tmp_path / "checkpoint.pt.456.tmp").write_text("torn")
    (tmp_path / "other.pt.789.tmp").write_text("not ours")
    assert temp_path(tmp_path / "checkpoint.pt").name == f"checkpoint.pt.{os.getpid()}.tmp"
    assert len(remove_temps(tmp_path / "checkpoint.pt")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt.789.tmp"]


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
