"""No file the course reads runs code: CIFAR-10 batches through a restricted unpickler, checkpoints with weights_only."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PER_BATCH, write_batch
from helpers.commands import train_command
from helpers.course import seed_everything
from helpers.data import DeviceLoader, load_cifar10
from helpers.data import cifar10 as D
from helpers.data.cifar10 import CIFAR10Error
from helpers.models import build_model
from helpers.plumbing.checks import TrainingError
from helpers.training import Recipe, fit, load_checkpoint, without_timing
from helpers.training.checkpoint import rng_state, set_rng_state


class Payload:
    """Unpickled by a full unpickler, this calls `call(*args)`: each call below would create the marker file."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    return {"open": Payload(open, str(marker), "w"),
            "os.system": Payload(os.system, f"touch '{marker}'"),
            "exec": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
            "subprocess": Payload(subprocess.call, ["touch", str(marker)]),
            "pickle.loads": Payload(pickle.loads, pickle.dumps(Payload(open, str(marker), "w"), protocol=2))}


def test_the_payloads_do_run_code_under_a_full_unpickler(tmp_path):
    # Without this the tests below could pass with payloads that never ran anything anywhere.
    for name, payload in payloads(tmp_path / "ran").items():
        pickle.loads(pickle.dumps(payload, protocol=2))
        assert (tmp_path / "ran").exists(), name
        (tmp_path / "ran").unlink()


# ---------------------------------------------------------------- CIFAR-10 batch and meta files


@pytest.mark.parametrize("kind", ["open", "os.system", "exec", "subprocess", "pickle.loads"])
@pytest.mark.parametrize("name", ["data_batch_3", "test_batch", D.META_FILE])
def test_a_batch_file_that_would_run_code_is_refused_by_name_and_nothing_runs(cifar_root, name, kind):
    marker = cifar_root.parent / "ran"
    path = cifar_root / D.FOLDER / name
    # Inside an otherwise well-formed file, where a crafted copy would hide it.
    genuine = {"batch_label": "x", "labels": [0] * PER_BATCH, "data": np.zeros((PER_BATCH, 3072), np.uint8),
               "filenames": ["a.png"] * PER_BATCH} if name != D.META_FILE else {"label_names": list(D.CLASSES)}
    path.write_bytes(pickle.dumps({**genuine, "extra": payloads(marker)[kind]}, protocol=2))
    with pytest.raises(CIFAR10Error) as err:
        load_cifar10(cifar_root, download=False)
    text = str(err.value)
    assert str(path) in text and "refused: it asks to call" in text and "nothing in it was run" in text
    assert not marker.exists()
    assert not (cifar_root / D.CACHE_FILE).exists()  # nothing else happened
    if name == "test_batch":  # the benchmarks' data label reads test_batch too
        with pytest.raises(CIFAR10Error, match="refused"):
            D.dataset_label(cifar_root)
        assert not marker.exists()


def test_a_dtype_flagged_to_hold_objects_is_refused(cifar_root):
    # numpy's own dtype.__setstate__ accepts these flags and makes a uint8 dtype claim to hold Python objects.
    class Flagged:
        def __reduce__(self):
            return np.dtype, ("u1", False, True), (3, "|", None, None, None, -1, -1, 0x3F)

    class Array:
        def __reduce__(self):
            return np.ndarray.__reduce__(np.zeros(0, np.uint8))[0:2] + ((1, (2,), Flagged(), False, [1, 2]),)

    path = cifar_root / D.FOLDER / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Array(), "labels": [0, 0]}, protocol=2))
    with pytest.raises(CIFAR10Error, match="data_batch_1: cannot be read as a CIFAR-10 batch.*not a plain number type"):
        D.read_batch(path)


def test_dataset_label_of_missing_or_damaged_data_is_plain_cifar10(tmp_path, cifar_root):
    assert D.dataset_label(tmp_path / "nothing") == "CIFAR-10"
    (cifar_root / D.FOLDER / "test_batch").write_bytes(b"garbage")
    assert D.dataset_label(cifar_root) == "CIFAR-10"


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled as Python 2 and NumPy 1.x pickled the official files (numpy 1.3's array_reduce, by hand)."""
    def s(text: bytes) -> bytes:  # a Python 2 str
        return (b"U" + bytes([len(text)]) + text) if len(text) < 256 else (b"T" + struct.pack("<i", len(text)) + text)

    rows, width = data.shape
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + s(b"b") + b"\x87R"
             + b"(K\x01" + b"M" + struct.pack("<H", rows) + b"M" + struct.pack("<H", width) + b"\x86"
             + b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R"  # dtype('u1', 0, 1), then its state:
             + b"(K\x03" + s(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + b"K\x00tb"  # (3, '|', None*3, -1, -1, 0)
             + b"\x89" + s(data.tobytes()) + b"tb")
    label_ops = b"".join(b"K" + bytes([v]) for v in labels)
    return (b"\x80\x02}(" + s(b"data") + array + s(b"labels") + b"](" + label_ops + b"e" + s(b"batch_label") + s(b"py2")
            + b"u.")


def test_a_batch_pickled_as_the_official_python2_files_are_reads_as_before(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    raw = _py2_batch(data, [1, 2, 3, 9])
    reference = pickle.loads(raw, encoding="latin1")  # what the full unpickler made of it
    assert (reference["data"] == data).all() and reference["labels"] == [1, 2, 3, 9]
    (tmp_path / "data_batch_1").write_bytes(raw)
    images, labels = D.read_batch(tmp_path / "data_batch_1")
    assert np.array_equal(images.reshape(4, -1), data) and labels.tolist() == [1, 2, 3, 9] and images.flags.writeable
    got = D._unpickle(tmp_path / "data_batch_1", "a batch")
    assert got.keys() == reference.keys() and got["batch_label"] == reference["batch_label"] == "py2"


def test_a_fortran_ordered_array_reads_as_numpy_reads_it(tmp_path):
    data = np.asfortranarray(np.random.default_rng(1).integers(0, 256, (3, 3072), dtype=np.uint8))
    write_batch(tmp_path / "data_batch_1", data, [0, 1, 2])
    images, _ = D.read_batch(tmp_path / "data_batch_1")
    assert np.array_equal(images.reshape(3, -1), data)


def test_a_batch_file_far_too_big_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_MAX_FILE_BYTES", 1000)
    write_batch(tmp_path / "data_batch_1", np.zeros((1, 3072), np.uint8), [0])
    with pytest.raises(CIFAR10Error, match=r"data_batch_1: \d+ MB, but a CIFAR-10 batch file is about 31 MB"):
        D.read_batch(tmp_path / "data_batch_1")


# ---------------------------------------------------------------- checkpoints


def _tiny(epochs: int = 4, seed: int | None = 1, **kwargs):
    if seed is not None:
        seed_everything(seed)
    recipe = Recipe(name="tiny", model="cifar_alexnet_small", epochs=epochs, batch_size=32, lr=0.05, amp="off",
                    tta=False, channels_last=False)
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (96,), generator=gen)
    model = build_model(recipe.model)
    train = DeviceLoader(images, labels, 32, seed=1, augment=True)
    val = DeviceLoader(images[:32], labels[:32], 32, shuffle=False)
    return model, fit(model, train, val, recipe, device="cpu", progress=False, seed=1, **kwargs)


@pytest.mark.parametrize("kind", ["open", "os.system", "exec", "subprocess", "pickle.loads"])
def test_a_checkpoint_that_would_run_code_is_refused_by_name_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "checkpoint.pt"
    _tiny(epochs=1, checkpoint=checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "history": [*state["history"], payloads(marker)[kind]]}, checkpoint)  # otherwise well-formed
    with pytest.raises(TrainingError) as err:
        load_checkpoint(checkpoint, build_model("cifar_alexnet_small"))
    text = str(err.value)
    assert text.startswith(f"{checkpoint}: refused: it asks to call ") and "nothing in it was run" in text
    assert "weights_only=False" in text  # the way out, for a file one made oneself
    assert not marker.exists()


def test_a_resume_from_a_checkpoint_that_would_run_code_exits_2_and_runs_nothing(cifar_root, tmp_path, capsys):
    marker, run_dir = tmp_path / "ran", tmp_path / "run"
    args = ["--data-root", str(cifar_root), "--no-download", "--run-dir", str(run_dir), "--batch-size", "16",
            "--eval-limit", "20", "--no-progress", "--amp", "off", "--epochs", "2"]
    assert train_command([*args, "--epochs", "1"]) == 0
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**state, "seed": payloads(marker)["os.system"]}, run_dir / "checkpoint.pt")
    capsys.readouterr()
    assert train_command([*args, "--resume"]) == 2
    assert f"{run_dir / 'checkpoint.pt'}: refused: it asks to call" in capsys.readouterr().out
    assert not marker.exists()


def test_a_numpy_dtype_flagged_to_hold_objects_is_refused_in_a_checkpoint(tmp_path):
    class Flagged:
        def __reduce__(self):
            return np.dtype, ("u4", False, True), (3, "<", None, None, None, -1, -1, 0x3F)

    class Array:
        def __reduce__(self):
            return np.ndarray.__reduce__(np.zeros(0, np.uint32))[0:2] + ((1, (3,), Flagged(), False, [1, 2, 3]),)

    torch.save({"rng": {"numpy": ("MT19937", Array(), 0, 0, 0.0)}}, tmp_path / "c.pt")
    with pytest.raises(TrainingError, match=r"c.pt: refused: .*a numpy dtype state that is not plain uint32's"):
        load_checkpoint(tmp_path / "c.pt")


def test_a_damaged_checkpoint_says_so_and_what_to_do(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"PK\x03\x04 not really a zip file")
    with pytest.raises(TrainingError, match=r"c.pt: cannot be read as a checkpoint .*damaged or not a checkpoint. Resume from"):
        load_checkpoint(tmp_path / "c.pt")


def test_new_checkpoints_need_no_global_beyond_torch_s_own(tmp_path):
    _tiny(epochs=1, checkpoint=tmp_path / "c.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "c.pt") == []
    assert isinstance(torch.load(tmp_path / "c.pt", weights_only=True)["rng"]["numpy"], dict)  # loads with no allowlist


def _as_previous_version(checkpoint: Path) -> None:
    """Rewrite a checkpoint's random states as the previous version wrote them: numpy's own tuple, a pickled array."""
    state = torch.load(checkpoint, weights_only=True)
    for rng in [state["rng"], *state["rng_per_rank"]]:
        n = rng["numpy"]
        if isinstance(n, dict):  # rng_per_rank[0] is state["rng"] itself
            rng["numpy"] = (n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    torch.save(state, checkpoint)


def test_a_checkpoint_of_the_previous_version_still_resumes_bit_for_bit(tmp_path):
    full_model, full = _tiny()
    checkpoint = tmp_path / "checkpoint.pt"
    _tiny(checkpoint=checkpoint, stop_after=2)
    _as_previous_version(checkpoint)
    assert sorted(torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint)) == [
        "numpy._core.multiarray._reconstruct" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core.multiarray._reconstruct",
        "numpy.dtype", "numpy.ndarray"]  # the old format, truly
    seed_everything(99)  # as a fresh process would be: the generators' states must come from the checkpoint alone
    resumed_model, resumed = _tiny(seed=None, checkpoint=checkpoint, resume=True)
    assert without_timing(resumed) == without_timing(full)
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert isinstance(torch.load(checkpoint, weights_only=True)["rng"]["numpy"], dict)  # rewritten in the new format


def test_a_checkpoint_written_with_numpy_1_loads_too(tmp_path):
    import zipfile

    old = np.random.RandomState(5).get_state()
    torch.save({"rng": {"numpy": old}, "weights": torch.arange(5.0)}, tmp_path / "numpy2.pt")
    # NumPy 1 names its _reconstruct numpy.core.multiarray; the rest of the file is the same.
    with zipfile.ZipFile(tmp_path / "numpy2.pt") as src, zipfile.ZipFile(tmp_path / "numpy1.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
            dst.writestr(info.filename, data)
    assert "numpy.core.multiarray._reconstruct" in torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "numpy1.pt")
    state = load_checkpoint(tmp_path / "numpy1.pt")
    assert state["rng"]["numpy"][0] == "MT19937" and np.array_equal(state["rng"]["numpy"][1], old[1])
    assert state["rng"]["numpy"][1].dtype == np.uint32 and torch.equal(state["weights"], torch.arange(5.0))


def test_both_random_state_formats_restore_every_generator():
    import random

    seed_everything(3)
    np.random.normal()  # a cached Gaussian is part of NumPy's state too
    new = rng_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    old = {**new, "numpy": (kind, keys.copy(), pos, has_gauss, gauss)}
    draw = (random.random(), np.random.normal(), np.random.random(3).tolist(), torch.rand(3).tolist())
    for state in (new, old):
        seed_everything(7)
        set_rng_state(state)
        assert (random.random(), np.random.normal(), np.random.random(3).tolist(), torch.rand(3).tolist()) == draw
