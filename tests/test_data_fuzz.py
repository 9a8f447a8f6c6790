"""Every malformed or hostile batch or meta file ends in a CIFAR10Error naming the file; nothing else escapes, nothing runs."""

from __future__ import annotations

import codecs
import os
import pickle
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import make_cifar_folder
from helpers.data import load_cifar10
from helpers.data.cifar10 import FOLDER, META_FILE, TRAIN_FILES, CIFAR10Error, dataset_label, read_batch, read_meta

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=5), st.binary(max_size=5))
labels_values = st.one_of(
    st.lists(scalars, max_size=30),
    st.lists(st.integers(-3, 12), max_size=30),
    st.builds(lambda n, k: np.full(n, k), st.integers(0, 30), st.sampled_from([0, 3, 10, -1, 2.5])),
    scalars,
    st.lists(st.lists(st.integers(0, 9), max_size=3), max_size=5),
)
data_values = st.one_of(
    st.builds(lambda n, w, dtype: np.zeros((n, w), dtype=dtype), st.integers(0, 4), st.sampled_from([3072, 3071, 1, 0]),
              st.sampled_from([np.uint8, np.int64, np.float32, np.bool_])),
    st.builds(lambda shape: np.zeros(shape, np.uint8), st.lists(st.integers(0, 3), max_size=4).map(tuple)),
    st.lists(scalars, max_size=5),
    scalars,
)
batches = st.one_of(
    st.fixed_dictionaries({"data": data_values, "labels": labels_values}),
    st.dictionaries(st.text(max_size=6), scalars, max_size=4),
    st.lists(scalars, max_size=4),
    scalars,
)


def _write(folder: Path, name: str, payload, raw: bool) -> Path:
    path = folder / name
    path.write_bytes(payload if raw else pickle.dumps(payload, protocol=2))
    return path


@FUZZ
@given(payload=st.one_of(st.binary(max_size=4000), batches), raw=st.booleans())
def test_any_batch_file_is_read_or_refused_with_a_cifar10_error(payload, raw):
    if raw and not isinstance(payload, bytes):
        raw = False
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "data_batch_1", payload, raw)
        try:
            images, labels = read_batch(path)
        except CIFAR10Error as err:
            assert str(path) in str(err) and ("Delete" in str(err) or "cannot be read" in str(err))
            return
    # Accepted: then it really is a batch of images with labels in 0..9.
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32) and len(images) == len(labels) >= 1
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() <= 9


@FUZZ
@given(payload=st.one_of(st.binary(max_size=2000), st.dictionaries(st.text(max_size=12), scalars, max_size=3),
                         st.fixed_dictionaries({"label_names": st.lists(st.text(max_size=10), max_size=12)})))
def test_any_meta_file_is_read_or_refused_with_a_cifar10_error(payload):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), META_FILE, payload, isinstance(payload, bytes))
        with pytest.raises(CIFAR10Error, match=META_FILE):
            read_meta(path)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_cifar_folder(tmp_path_factory.mktemp("pristine") / "cifar")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from([*TRAIN_FILES, "test_batch", META_FILE]), payload=st.binary(max_size=300))
def test_load_cifar10_refuses_a_damaged_folder_before_any_training(pristine, which, payload):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cifar"
        shutil.copytree(pristine, root)
        (root / FOLDER / which).write_bytes(payload)
        with pytest.raises(CIFAR10Error, match=which):
            load_cifar10(root, download=False, cache=False)


# ---------------------------------------------------------------- hostile pickles: nothing runs, only CIFAR10Error escapes

FIRED: list = []


def _fire(*args, **kwargs):
    """The sentinel: a global any hostile stream below may name; a full unpickler would call it."""
    FIRED.append(args)


class _Call:
    """Pickles as a call of `func(*args)`: what a file crafted to run code holds."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _text(value: str) -> bytes:
    raw = value.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


# Globals a stream may name: the sentinel, and every global a genuine file names, used in any order with any arguments.
# (Real code-running callables appear only in `hostile_objects` below, with arguments that merely create a marker file,
# so that a broken unpickler under test could not do harm with random arguments.)
_NAMES = [(__name__, "_fire"), ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
_PUSH = [_text("data"), _text("labels"), _text("b"), _text("u1"), _text("O"), _text("latin1"), _text("zlib"),
         pickle.BININT1 + b"\x00", pickle.BININT1 + b"\x03", pickle.BININT + struct.pack("<i", -1), pickle.NONE,
         pickle.NEWTRUE, pickle.NEWFALSE, pickle.EMPTY_TUPLE, pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.MARK,
         pickle.SHORT_BINBYTES + b"\x03abc", pickle.SHORT_BINSTRING + b"\x04\x00\x01\x02\x03"]
_STRUCTURE = [pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.REDUCE, pickle.BUILD, pickle.SETITEMS,
              pickle.SETITEM, pickle.APPENDS, pickle.APPEND, pickle.DICT, pickle.LIST, pickle.NEWOBJ, pickle.OBJ, pickle.POP,
              pickle.DUP, pickle.STOP, pickle.BINPUT + b"\x00", pickle.BINGET + b"\x00", pickle.STACK_GLOBAL,
              pickle.EXT1 + b"\x01", pickle.BINPERSID]
# One numpy array exactly as numpy pickles it at protocol 2 (a fragment to splice into other streams).
_ARRAY = pickle.dumps(np.arange(6, dtype=np.uint8).reshape(2, 3), protocol=2)[2:-1]


def _opcode_with_argument():
    """Any of pickle's opcodes with an argument of about the right shape (or random bytes in its place)."""
    import pickletools

    def argument(op):
        arg = op.arg
        if arg is None:
            return st.just(b"")
        if arg.n > 0:
            return st.binary(min_size=arg.n, max_size=arg.n)
        if arg.n == pickletools.UP_TO_NEWLINE:
            if arg.name == "stringnl_noescape_pair":
                return st.sampled_from(_NAMES).map(lambda mn: f"{mn[0]}\n{mn[1]}\n".encode())
            return st.sampled_from([b"0\n", b"1\n", b"-7\n", b"1.5\n", b"'ab'\n", b"abc\n", b"\n", b"99999999999999\n"])
        width = {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
                 pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}[arg.n]
        counted = st.binary(max_size=24).map(lambda b: len(b).to_bytes(width, "little") + b)
        return st.one_of(counted, st.binary(min_size=width, max_size=width + 8))  # a length that lies, too

    return st.sampled_from(pickletools.opcodes).flatmap(lambda op: argument(op).map(lambda a: op.code.encode("latin1") + a))


opcode_streams = st.lists(st.one_of(_opcode_with_argument(), st.sampled_from(_PUSH), st.sampled_from(_STRUCTURE),
                                    st.sampled_from(_NAMES).map(lambda mn: _global(*mn)), st.just(_ARRAY)),
                          max_size=40).flatmap(
    lambda ops: st.sampled_from([b"", pickle.PROTO + b"\x02"]).map(lambda head: head + b"".join(ops) + pickle.STOP))


def hostile_objects(marker: Path):
    """Objects whose pickles call code that would create `marker`, alone or hidden inside a well-formed batch."""
    calls = st.sampled_from([
        _Call(os.system, f"touch '{marker}'"), _Call(exec, f"open({str(marker)!r}, 'w').close()"),
        _Call(eval, f"open({str(marker)!r}, 'w')"), _Call(open, str(marker), "w"), _Call(_fire, "reduce"),
        _Call(subprocess.call, ["touch", str(marker)]), _Call(shutil.copyfile, __file__, str(marker)),
        _Call(pickle.loads, pickle.dumps(_Call(open, str(marker), "w"), protocol=2)),
        _Call(np.dtype, "O"), _Call(codecs.encode, "x", "rot13"),  # globals a genuine file names, other arguments
    ])
    genuine = {"batch_label": "x", "labels": [1, 2], "data": np.zeros((2, 3072), np.uint8), "filenames": ["a", "b"]}
    return calls.flatmap(lambda call: st.sampled_from([
        call, [call], {"data": call, "labels": [0]}, {**genuine, "labels": call}, {**genuine, "filenames": [call]},
        {**genuine, "extra": (1, call)}, {call: 1} if _hashable(call) else [[call]],
    ]))


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _read_everything(folder: Path) -> None:
    """Every reader of a batch file on the file in test_batch (and as batches.meta); CIFAR10Error is the only way out."""
    for read in (lambda: read_batch(folder / FOLDER / "test_batch"), lambda: read_meta(folder / FOLDER / "test_batch"),
                 lambda: dataset_label(folder)):
        try:
            result = read()
        except CIFAR10Error as err:
            assert str(folder / FOLDER / "test_batch") in str(err)
            event("refused: asks to call a global" if "refused" in str(err) else
                  f"refused: {type(err.__cause__).__name__ if err.__cause__ else 'checked content'}")
            continue
        event(f"read: {type(result).__name__}")
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], np.ndarray):
            images, labels = result
            assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32) and len(images) == len(labels) >= 1


HOSTILE = settings(max_examples=500, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@HOSTILE
@given(stream=st.one_of(opcode_streams, st.binary(max_size=200)))
def test_no_opcode_stream_runs_code_and_only_cifar10_errors_escape(hostile_folder, stream):
    (hostile_folder / FOLDER / "test_batch").write_bytes(stream)
    _read_everything(hostile_folder)
    assert not FIRED, f"the sentinel ran: {FIRED}"


@settings(HOSTILE, max_examples=200)
@given(data=st.data(), protocol=st.sampled_from([0, 1, 2, 4, 5]))
def test_no_pickled_object_runs_code_and_only_cifar10_errors_escape(hostile_folder, data, protocol):
    marker = hostile_folder / "ran"
    payload = data.draw(hostile_objects(marker))
    (hostile_folder / FOLDER / "test_batch").write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(CIFAR10Error, match="test_batch"):
        read_batch(hostile_folder / FOLDER / "test_batch")
    _read_everything(hostile_folder)
    assert not FIRED and not marker.exists()


def test_the_hostile_payloads_fire_under_a_full_unpickler(tmp_path):
    # Without this the two tests above could pass with a sentinel that never fires or payloads that never run.
    pickle.loads(pickle.dumps(_Call(_fire, "check"), protocol=2))
    assert FIRED == [("check",)]
    FIRED.clear()
    stream = pickle.PROTO + b"\x02" + _global(__name__, "_fire") + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.STOP
    pickle.loads(stream)
    assert FIRED == [()]
    FIRED.clear()
    assert pickle.loads(pickle.PROTO + b"\x02" + _ARRAY + pickle.STOP).tolist() == [[0, 1, 2], [3, 4, 5]]
    os.system(f"touch '{tmp_path / 'ran'}'")  # the marker a payload would make is visible to the tests
    assert (tmp_path / "ran").exists()


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory) -> Path:
    FIRED.clear()
    root = make_cifar_folder(tmp_path_factory.mktemp("hostile") / "cifar")
    yield root
    assert not FIRED
