"""The command line against bad input, signals and faults: every refusal exits 2 and changes nothing on disk, every stop
says where the last checkpoint is with the conventional exit code (130 for Ctrl-C, 143 for SIGTERM)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import GATED_CLI, REPO, child_env, cli_args, posix_only, wait_for

import helpers.commands as commands
from conftest import make_cifar_folder
from helpers.commands import ablation_command, train_command
from helpers.course import reduced_mode
from helpers.training.checkpoint import load_checkpoint, save_checkpoint


def tiny(cifar_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["--recipe", "cpu", "--data-root", str(cifar_root), "--no-download", "--run-dir", str(run_dir), "--epochs", "1",
            "--batch-size", "16", "--eval-limit", "20", "--amp", "off", "--no-progress", *extra]


def folder_state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.exists() else {}


@pytest.mark.parametrize("extra, says", [
    (["--set", "validation=0.00001"], "rounds to no held-out image"),
    (["--set", "validation=0.99999"], "holds out all"),
    (["--lr", "0.1", "--set", "lr=0.3"], "--lr 0.1 and --set lr=0.3 ask for two values"),
    (["--dropout", "0.1", "--set", "model.dropout=0.2"], "--dropout 0.1 and --set model.dropout=0.2"),
    (["--set", "model.width=1e-9"], "width=1e-09 leaves conv layers with no channel"),
    (["--seed", "99999999999999999999999"], "--seed must be a whole number from 0 to 2**63 - 1"),
])
def test_bad_settings_are_refused_by_name_before_anything_is_written(cifar_root, tmp_path, capsys, extra, says):
    run_dir = tmp_path / "run"
    assert train_command(tiny(cifar_root, run_dir, *extra)) == 2
    out = capsys.readouterr().out
    assert says in out and "Traceback" not in out
    assert not run_dir.exists()  # no folder, no lock, no config.json


def test_set_name_labels_the_run(cifar_root, tmp_path):
    run_dir = tmp_path / "run"
    assert train_command(tiny(cifar_root, run_dir, "--set", "name=my-try")) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["recipe"]["name"] == "my-try" and config["data"]["name"] == "CIFAR-10"


@pytest.fixture
def finished_run(cifar_root, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    assert train_command(tiny(cifar_root, run_dir, "--epochs", "2", "--stop-after", "1")) == 0
    return run_dir


@pytest.mark.parametrize("damage, says", [
    (lambda state: state.update(seed="seven"), "not a whole number"),
    (lambda state: state.update(model_config={**state["model_config"], "fc_size": 7}), "another architecture"),
    (lambda state: state.pop("optimizer"), "it lacks optimizer"),
    (lambda state: state["recipe"].update(momentum_schedule="cosine"), "momentum_schedule"),
])
def test_a_refused_resume_changes_nothing_in_the_run_folder(finished_run, cifar_root, capsys, damage, says):
    checkpoint = finished_run / "checkpoint.pt"
    state = load_checkpoint(checkpoint)
    damage(state)
    save_checkpoint(checkpoint, state)
    before = folder_state(finished_run)
    assert train_command(tiny(cifar_root, finished_run, "--epochs", "2", "--resume")) == 2
    out = capsys.readouterr().out
    assert says in out and "Traceback" not in out
    assert folder_state(finished_run) == before  # config.json included


def test_a_resume_on_other_data_is_refused_with_both_fingerprints(finished_run, cifar_root, tmp_path, capsys):
    fingerprint = json.loads((finished_run / "config.json").read_text())["data"]["fingerprint"]
    assert fingerprint == commands.load_cifar10(cifar_root, download=False).fingerprint
    other = make_cifar_folder(tmp_path / "other", seed=1)
    before = folder_state(finished_run)
    assert train_command(tiny(other, finished_run, "--epochs", "2", "--resume")) == 2
    out = capsys.readouterr().out
    assert "trained on other data" in out and fingerprint in out
    assert folder_state(finished_run) == before


def test_a_reduced_run_resumed_in_full_mode_says_it_is_a_smoke_test(cifar_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALEXNET_REDUCED", "1")
    run_dir = tmp_path / "run"
    args = ["--recipe", "cpu", "--data-root", str(cifar_root), "--no-download", "--run-dir", str(run_dir), "--amp", "off",
            "--no-progress"]
    assert train_command([*args, "--stop-after", "1"]) == 0
    monkeypatch.setenv("ALEXNET_REDUCED", "0")
    capsys.readouterr()
    assert train_command(["--data-root", str(cifar_root), "--no-download", "--run-dir", str(run_dir), "--resume",
                          "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "continuing a REDUCED-MODE run" in out and "full mode" not in out


def test_a_full_disk_while_writing_the_history_says_the_checkpoint_is_intact(cifar_root, tmp_path, capsys, monkeypatch):
    def full(run_dir, history):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(commands.runs, "write_history", full)
    run_dir = tmp_path / "run"
    assert train_command(tiny(cifar_root, run_dir)) == 1
    out = capsys.readouterr().out
    assert "No space left on device" in out and "the checkpoint after epoch 1 is intact" in out and "--resume" in out
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1


def test_temp_files_of_killed_writes_are_cleared_when_a_run_folder_is_used_again(finished_run, cifar_root):
    stale = [finished_run / f"{name}.424242.tmp" for name in ("history.csv", "history.json", "config.json")]
    for path in stale:
        path.write_text("half a file")
    assert train_command(tiny(cifar_root, finished_run, "--epochs", "2", "--resume")) == 0
    assert not [p for p in stale if p.exists()]


@pytest.mark.parametrize("value, reduced", [("true", True), ("1", True), ("jenkins", True), ("woodpecker", True),
                                            ("false", False), ("0", False), ("", False)])
def test_any_ci_value_but_an_explicit_no_means_in_ci(monkeypatch, value, reduced):
    monkeypatch.delenv("ALEXNET_REDUCED", raising=False)
    monkeypatch.setenv("CI", value)
    assert reduced_mode() is reduced


@posix_only
@pytest.mark.parametrize("sig, code, says", [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_mid_epoch_says_where_the_last_checkpoint_is(tmp_path, sig, code, says):
    cifar_root = make_cifar_folder(tmp_path / "cifar")
    run_dir, marker, log = tmp_path / "run", tmp_path / "inside-epoch-2", tmp_path / "stopped.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", GATED_CLI, *cli_args(cifar_root, run_dir, 3)], cwd=REPO,
                                env=child_env(GATE_MARKER=str(marker), GATE_EPOCH="2", GATE_STEP="2"),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(marker, proc, log)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and says in text and f"after epoch 1, is {run_dir / 'checkpoint.pt'}" in text


# Blocks inside the data loading, before any epoch: where Ctrl-C once gave a traceback.
SLOW_DATA = r"""
import os, signal, sys, time
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.default_int_handler)
import helpers.commands as commands
real = commands.load_cifar10

def slow(*args, **kwargs):
    open(os.environ["GATE_MARKER"], "w").close()
    for _ in range(36_000):
        time.sleep(0.1)
    return real(*args, **kwargs)

commands.load_cifar10 = slow
sys.exit(commands.train_command(sys.argv[1:]))
"""


@posix_only
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_training_starts_ends_quietly(tmp_path, sig, code):
    cifar_root = make_cifar_folder(tmp_path / "cifar")
    marker, log = tmp_path / "loading", tmp_path / "early.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", SLOW_DATA, *tiny(cifar_root, tmp_path / "run")], cwd=REPO,
                                env=child_env(GATE_MARKER=str(marker)), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(marker, proc, log)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and "Nothing was written" in text and not (tmp_path / "run").exists()


def test_ctrl_c_in_the_sweep_ends_with_what_is_kept(monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "run_sweep", interrupted)
    monkeypatch.setattr(commands, "load_cifar10", lambda *a, **k: None)
    assert ablation_command(["--reduced", "--groups", "loss", "--seeds", "0", "--out", str(tmp_path / "s.json")]) == 130
    out = capsys.readouterr().out
    assert "interrupted. Every finished run is recorded" in out and "Traceback" not in out


@posix_only
def test_sigterm_to_a_parallel_sweep_stops_its_jobs_too(tmp_path):
    cifar_root = make_cifar_folder(tmp_path / "cifar", per_batch=52)
    out, log = tmp_path / "sweep.json", tmp_path / "sweep.log"
    with open(log, "w") as stream:
        proc = subprocess.Popen([sys.executable, "-m", "helpers.ablation", "--reduced", "--jobs", "2", "--groups", "augment",
                                 "--seeds", *map(str, range(10)), "--out", str(out), "--data-root", str(cifar_root), "--device",
                                 "cpu"], cwd=REPO, env=child_env(), stdout=stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count("job ") < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        jobs = [int(line.split()[0]) for line in subprocess.run(["pgrep", "-P", str(proc.pid), "-a"], capture_output=True,
                                                                   text=True).stdout.splitlines() if "helpers.ablation" in line]
        assert len(jobs) == 2, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143, log.read_text()
        for pid in jobs:  # each job got SIGTERM and has ended: no orphans
            with pytest.raises(ProcessLookupError):
                for _ in range(600):
                    os.kill(pid, 0)
                    time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_run_whose_folder_is_replaced_stops_before_writing_into_the_new_one(cifar_root, tmp_path, capsys, monkeypatch):
    import shutil

    real = commands.runs.write_history
    run_dir = tmp_path / "run"

    def then_replaced(folder, history):
        real(folder, history)
        shutil.rmtree(run_dir)  # deleted while the run trains, and made anew (by another run, say)
        run_dir.mkdir()
        (run_dir / "theirs.txt").write_text("another run's file")

    monkeypatch.setattr(commands.runs, "write_history", then_replaced)
    assert train_command(tiny(cifar_root, run_dir, "--epochs", "2")) == 1
    out = capsys.readouterr().out
    assert "was deleted, moved or replaced" in out and "this run stops" in out
    assert sorted(p.name for p in run_dir.iterdir()) == ["theirs.txt"]  # nothing of this run written into it
