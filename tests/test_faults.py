"""Faults a long training run meets: a killed process, a crash while saving, an unwritable or full disk.

The kill tests run the real command line in child processes (SIGKILL cannot be caught,
so nothing in the code gets a chance to clean up); the disk tests run `main` in-process
with the failure injected, and one child process hits a real write limit (RLIMIT_FSIZE).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import helpers.commands as commands_module
import helpers.training.runs as runs_module
from conftest import make_cifar_folder
from helpers.commands import train_command
from helpers.plumbing.checks import TrainingError
from helpers.training import load_checkpoint, without_timing
from helpers.training.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")
CHILD_TIMEOUT = 300  # generous: the checkout's 2 cores are shared; a healthy child needs a few seconds


def child_env(**extra: str) -> dict[str, str]:
    """The same environment for every child: one thread each, full (not reduced) mode, the repo importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ALEXNET_REDUCED")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ALEXNET_REDUCED="0", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])), **extra)
    return env


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- SIGKILL mid-epoch, then --resume

# The real CLI entry point, with one change to the data: on the gated epoch the training loader
# stops before batch GATE_STEP, creates GATE_MARKER and waits there for the test's SIGKILL. The
# kill therefore always lands mid-epoch, after some optimiser steps of that epoch: no timing guess.
GATED_CLI = r"""
import os, signal, sys, time

# A command typed in a terminal starts with Ctrl-C deliverable. This child inherits the test process's signal
# state instead, and a pytest started as a background job of a non-interactive shell (nohup, `cmd &` in a
# script, some CI runners) has SIGINT ignored, which survives exec: start as a terminal would.
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.default_int_handler)
import helpers.training.engine as loader
from helpers.commands import train_command

marker, gate_epoch, gate_step = os.environ["GATE_MARKER"], int(os.environ["GATE_EPOCH"]), int(os.environ["GATE_STEP"])
original_loaders = loader.recipe_loaders

def gated_loaders(*args, **kwargs):
    loaders = original_loaders(*args, **kwargs)
    train = loaders.train
    base = type(train)

    class Gated(base):
        epochs_started = 0

        def __iter__(self):
            Gated.epochs_started += 1
            for step, batch in enumerate(base.__iter__(self)):
                if Gated.epochs_started == gate_epoch and step == gate_step:
                    open(marker, "w").close()
                    # Short sleeps, not one long one: a SIGINT the kernel hands to another thread (torch
                    # has some) does not wake a blocked sleep, but Python raises it between two of these,
                    # as it does between the optimiser steps of a real run.
                    for _ in range(36_000):
                        time.sleep(0.1)  # killed or interrupted here
                yield batch

    train.__class__ = Gated
    return loaders

loader.recipe_loaders = gated_loaders
sys.exit(train_command(sys.argv[1:]))
"""


def cli_args(cifar_root: Path, run_dir: Path, epochs: int) -> list[str]:
    # Dropout, augmentation and momentum are on, so a resume must restore RNG and optimiser state exactly.
    return ["--recipe", "cpu", "--data-root", str(cifar_root), "--no-download", "--run-dir", str(run_dir),
            "--epochs", str(epochs), "--batch-size", "16", "--eval-limit", "20", "--amp", "off", "--seed", "7",
            "--no-progress"]


def run_cli(args: list[str], log: Path) -> subprocess.CompletedProcess:
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "helpers.train", *args], cwd=REPO, env=child_env(),
                              stdout=out, stderr=subprocess.STDOUT, timeout=CHILD_TIMEOUT)
    assert done.returncode == 0, log.read_text()
    return done


def wait_for(path: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the training process ended (exit {proc.returncode}) before {path.name} appeared:\n"
                        f"{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"{path.name} did not appear within {CHILD_TIMEOUT} s:\n{log.read_text()}")
        time.sleep(0.05)


@posix_only
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    epochs, gate_epoch, gate_step = 3, 2, 3
    cifar_root = make_cifar_folder(tmp_path / "cifar")  # 90 of its 100 training images: 5 steps of 16 per epoch
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    marker, log = tmp_path / "inside-epoch-2", tmp_path / "killed.log"
    checkpoint = killed_dir / "checkpoint.pt"

    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", GATED_CLI, *cli_args(cifar_root, killed_dir, epochs)], cwd=REPO,
            env=child_env(GATE_MARKER=str(marker), GATE_EPOCH=str(gate_epoch), GATE_STEP=str(gate_step)),
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(checkpoint, proc, log)  # epoch 1 is saved ...
        wait_for(marker, proc, log)  # ... and epoch 2 has taken gate_step optimiser steps
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # The run did not finish: no metrics, and the checkpoint and history are epoch 1's.
    assert not (killed_dir / "metrics.json").exists()
    assert load_checkpoint(checkpoint)["epoch"] == 1
    assert [r["epoch"] for r in json.loads((killed_dir / "history.json").read_text())] == [1]
    assert "epoch   1:" in log.read_text() and "epoch   2:" not in log.read_text()

    run_cli([*cli_args(cifar_root, killed_dir, epochs), "--resume"], tmp_path / "resumed.log")
    run_cli(cli_args(cifar_root, reference_dir, epochs), tmp_path / "reference.log")

    resumed, reference = load_checkpoint(checkpoint), load_checkpoint(reference_dir / "checkpoint.pt")
    assert resumed["epoch"] == reference["epoch"] == epochs
    assert resumed["model"].keys() == reference["model"].keys()
    for name, tensor in reference["model"].items():
        assert torch.equal(resumed["model"][name], tensor), f"{name} differs after kill + resume"
    for a, b in zip(resumed["optimizer"]["state"].values(), reference["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    histories = [json.loads((d / "history.json").read_text()) for d in (killed_dir, reference_dir)]
    assert [r["epoch"] for r in histories[0]] == list(range(1, epochs + 1))
    assert without_timing(histories[0]) == without_timing(histories[1])  # losses and accuracies, exactly
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (killed_dir, reference_dir)]
    assert metrics[0]["test_acc"] == metrics[1]["test_acc"]


@posix_only
def test_ctrl_c_says_where_the_last_checkpoint_is_and_exits_130(tmp_path):
    cifar_root = make_cifar_folder(tmp_path / "cifar")
    run_dir, marker, log = tmp_path / "run", tmp_path / "inside-epoch-2", tmp_path / "interrupted.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", GATED_CLI, *cli_args(cifar_root, run_dir, 3)], cwd=REPO,
                                env=child_env(GATE_MARKER=str(marker), GATE_EPOCH="2", GATE_STEP="2"),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(marker, proc, log)  # epoch 1 is saved and epoch 2 is under way
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        assert proc.wait(timeout=60) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and f"after epoch 1, is {run_dir / 'checkpoint.pt'}" in text and "--resume" in text
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1


# ---------------------------------------------------------------- a crash while writing a checkpoint

# Replaces torch.save with one that writes half of the real bytes, flushes them to the OS and
# then SIGKILLs its own process: a crash in the middle of a checkpoint write.
DIE_WHILE_SAVING = r"""
import io, os, signal, sys
import torch
from helpers.training.checkpoint import save_checkpoint

real_save = torch.save

def save_half_then_die(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    out = f if hasattr(f, "write") else open(f, "wb")
    out.write(data[: len(data) // 2])
    out.flush()  # in the kernel's hands: a killed process does not lose it
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save_half_then_die
save_checkpoint(sys.argv[1], {"epoch": 2, "weights": torch.ones(50_000)})
"""


def previous_checkpoint(folder: Path) -> tuple[Path, str]:
    path = folder / "checkpoint.pt"
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"epoch": 1, "weights": torch.arange(50_000, dtype=torch.float32)})
    return path, sha256(path)


def assert_previous_intact(path: Path, digest: str) -> None:
    assert sha256(path) == digest  # not a byte changed
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.arange(50_000, dtype=torch.float32))


@posix_only
def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    path, digest = previous_checkpoint(tmp_path / "run")
    done = subprocess.run([sys.executable, "-c", DIE_WHILE_SAVING, str(path)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    # The crash really was mid-write: the temp file holds a torn checkpoint ...
    (tmp,) = path.parent.glob("checkpoint.pt.*.tmp")  # NAME.<pid>.tmp of the killed writer
    assert 0 < tmp.stat().st_size < path.stat().st_size
    with pytest.raises(TrainingError, match="cannot be read as a checkpoint"):
        load_checkpoint(tmp)
    # ... and it never replaced the previous checkpoint.
    assert_previous_intact(path, digest)
    # The next run on that folder drops the torn temp file and can save again.
    runs_module.prepare_run_dir(path.parent)
    assert not tmp.exists()
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 2


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_failed_checkpoint_write_raises_naming_the_path_and_keeps_the_previous(tmp_path, monkeypatch, error):
    path, digest = previous_checkpoint(tmp_path / "run")
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:1000])
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(TrainingError, match=rf"could not write the checkpoint {path}.*{os.strerror(error)}"):
        save_checkpoint(path, {"epoch": 2, "weights": torch.ones(50_000)})
    assert_previous_intact(path, digest)
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]  # the temp file is gone


# A real write limit, no monkeypatching: the kernel refuses bytes past RLIMIT_FSIZE (EFBIG), as a
# full disk refuses them with ENOSPC. RLIMIT_FSIZE binds root too, so this runs in any container.
WRITE_PAST_LIMIT = r"""
import resource, signal, sys
import torch
from helpers.training.checkpoint import save_checkpoint
from helpers.plumbing.checks import TrainingError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead of failing the write
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_checkpoint(sys.argv[1], {"epoch": 2, "weights": torch.ones(4 * limit)})
except TrainingError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics checked on Linux")
def test_real_write_failure_keeps_the_previous_checkpoint(tmp_path):
    path, digest = previous_checkpoint(tmp_path / "run")
    limit = path.stat().st_size + 4096  # room for the previous checkpoint, not for one 4x its size
    done = subprocess.run([sys.executable, "-c", WRITE_PAST_LIMIT, str(path), str(limit)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"could not write the checkpoint {path}" in done.stdout and "File too large" in done.stdout
    assert_previous_intact(path, digest)
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]


# ---------------------------------------------------------------- unwritable run folder, full disk


def cli_main(cifar_root: Path, run_dir: Path, *extra: str) -> int:
    return train_command(["--recipe", "cpu", "--data-root", str(cifar_root), "--no-download", "--run-dir", str(run_dir),
                 "--batch-size", "16", "--train-limit", "32", "--eval-limit", "20", "--amp", "off", "--no-progress",
                 *extra])


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: the errors below must come before any."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started although the run folder cannot hold its results")

    monkeypatch.setattr(commands_module, "train", refuse)


def _under_a_file(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker / "run"


def _a_file(tmp_path: Path) -> Path:
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    return blocker


def _read_only(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    probe = folder / "probe"
    try:
        probe.write_text("x")
    except OSError:
        return folder
    probe.unlink()
    folder.chmod(0o700)
    pytest.skip("permission bits do not stop this user (root): the other cases cover unwritable folders as root")


@pytest.mark.parametrize("where, message", [
    pytest.param(_under_a_file, "cannot create the run folder", id="under-a-file"),
    pytest.param(_a_file, "cannot create the run folder", id="is-a-file"),
    pytest.param(_read_only, "cannot write to the run folder", id="read-only"),
])
def test_unwritable_run_folder_fails_before_training(cifar_root, tmp_path, capsys, no_training, where, message):
    run_dir = where(tmp_path)
    try:
        assert cli_main(cifar_root, run_dir, "--epochs", "1") == 2
    finally:
        if run_dir.is_dir():
            run_dir.chmod(0o700)
    out = capsys.readouterr().out
    assert message in out and str(run_dir) in out and "--run-dir" in out
    assert not list(tmp_path.rglob("checkpoint.pt*")) and not list(tmp_path.rglob("config.json"))


def test_disk_full_during_training_stops_cleanly_and_resumes(cifar_root, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    real_save, saves = torch.save, []

    def full_from_the_second_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "epoch" in obj:  # checkpoints only, not the data cache
            saves.append(obj["epoch"])
        if len(saves) >= 2:
            f.write(b"PK\x03\x04 torn")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_from_the_second_save)
    assert cli_main(cifar_root, run_dir, "--epochs", "3") == 1
    out = capsys.readouterr().out
    assert f"could not write the checkpoint {run_dir / 'checkpoint.pt'}" in out and "No space left on device" in out
    assert saves == [1, 2]
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1  # the last good checkpoint
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / "metrics.json").exists()
    monkeypatch.setattr(torch, "save", real_save)  # space freed
    assert cli_main(cifar_root, run_dir, "--epochs", "3", "--resume") == 0
    assert [r["epoch"] for r in json.loads((run_dir / "history.json").read_text())] == [1, 2, 3]
