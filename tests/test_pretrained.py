"""The course model shipped with the course: it loads without running code, only if its hash is the card's, scores what
its card says on the data it was trained on, and travels in the package's wheel."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import real_cifar_root
from helpers import course
from helpers.data import load_cifar10
from helpers.data.cifar10 import dataset_label
from helpers.plumbing.checks import TrainingError
from helpers.training import pretrained
from helpers.training.pretrained import course_model, exact_accuracy, load_shipped, shipped_card

REPO = Path(__file__).resolve().parent.parent


def test_the_card_names_the_file_its_data_split_and_scores():
    card = shipped_card("cpu")
    path = pretrained.WEIGHTS / card["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["sha256"] and path.stat().st_size == card["bytes"]
    assert card["recipe"]["name"] == "cpu" and isinstance(card["seed"], int) and card["data"] == "CIFAR-10 (JPEG mirror)"
    assert "validation" in card["split"] and 0 < card["val_acc"] < 100 and 0 < card["test_acc"] < 100
    assert card["bytes"] < 5 * 2**20 and card["dtype"] == "float16"


def test_the_shipped_weights_score_exactly_their_recorded_test_accuracy():
    root = real_cifar_root()
    data = load_cifar10(root, download=False)
    if dataset_label(root) != shipped_card("cpu")["data"]:
        pytest.skip("the card's accuracy is the JPEG mirror's; this data is another copy of CIFAR-10")
    assert exact_accuracy(load_shipped("cpu"), data.test_images, data.test_labels) == shipped_card("cpu")["test_acc"]


def test_damaged_or_foreign_weights_are_refused_by_name(tmp_path):
    card = shipped_card("cpu")
    good = (pretrained.WEIGHTS / card["file"]).read_bytes()
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(TrainingError, match="damaged.pt is not the file its card names"):
        load_shipped("cpu", damaged)


def test_a_file_that_would_run_code_is_never_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    torch.save({"model_config": {}, "weights": Payload()}, evil)
    card = {**shipped_card("cpu"), "sha256": hashlib.sha256(evil.read_bytes()).hexdigest()}
    monkeypatch.setattr(pretrained, "shipped_card", lambda recipe="cpu": card)
    with pytest.raises(TrainingError, match="does not hold weights this version of the course can load"):
        load_shipped("cpu", evil)
    assert not marker.exists()


def test_without_a_checkpoint_of_its_own_a_reader_gets_the_shipped_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(course, "CHECKOUT", tmp_path)  # an installed package: no runs/ of a checkout, as on Colab
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(course, "CACHE", tmp_path / "cache")
    got = course_model("cpu")
    assert got.source == "shipped" and not got.model.training and got.card == shipped_card("cpu")
    assert capsys.readouterr().out.startswith("Using the course model shipped with the course")


def test_a_reduced_run_never_replaces_the_readers_full_mode_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(course, "CHECKOUT", tmp_path)
    (tmp_path / "pyproject.toml").write_text("")  # a checkout: runs/ beside it
    monkeypatch.setenv("ALEXNET_REDUCED", "1")
    reduced = course.course_checkpoint()
    monkeypatch.setenv("ALEXNET_REDUCED", "0")
    full = course.course_checkpoint()
    assert reduced.parent == full.parent == tmp_path / "runs" / "course" and reduced != full
    reduced.parent.mkdir(parents=True)
    reduced.write_bytes(b"a smoke test's checkpoint")  # full mode must not even open it
    got = course_model("cpu")
    assert got.source == "shipped" and "reduced-mode run" not in capsys.readouterr().out


@pytest.mark.skipif(os.environ.get("ALEXNET_SKIP_WHEEL") == "1", reason="ALEXNET_SKIP_WHEEL=1")
def test_the_wheel_carries_the_weights(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("alexnet_cifar10-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    card = shipped_card("cpu")
    assert f"helpers/weights/{card['file']}" in names and "helpers/weights/cpu.json" in names
    assert json.loads(zipfile.ZipFile(wheel).read("helpers/weights/cpu.json"))["sha256"] == card["sha256"]
