"""Every malformed batch or meta file ends in a CIFAR10Error naming the file, and nothing else escapes (Hypothesis)."""

from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_cifar_folder
from helpers.data import load_cifar10
from helpers.data.cifar10 import FOLDER, META_FILE, TRAIN_FILES, CIFAR10Error, read_batch, read_meta

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
