"""Offline data: the embedded digits, MNIST IDX files, and the DataLoader (chapter 8)."""
import gzip
import struct

import numpy as np
import pytest

from dlcourse import data

pytestmark = pytest.mark.ch08


def test_load_digits_fixed_stratified_split():
    (x_train, y_train), (x_test, y_test) = data.load_digits()
    assert x_train.shape == (1347, 64) and x_test.shape == (450, 64)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    # stratified: every class holds 25% ± one image of its examples in the test split
    for digit in range(10):
        share = (y_test == digit).sum() / ((y_test == digit).sum() + (y_train == digit).sum())
        assert abs(share - 0.25) < 0.01
    (again, _), _ = data.load_digits()
    np.testing.assert_array_equal(x_train, again)
    (images, _), _ = data.load_digits(flatten=False)
    assert images.shape == (1347, 1, 8, 8)


def write_idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def make_mnist_folder(folder, gz, n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array, gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_reads_idx_files(tmp_path, gz):
    arrays = make_mnist_folder(tmp_path, gz)
    (x_train, y_train), (x_test, y_test) = data.load_mnist(tmp_path)
    assert x_train.shape == (6, 784) and x_test.shape == (4, 784)
    np.testing.assert_allclose(x_train * 255, arrays["train-images-idx3-ubyte"].reshape(6, -1), atol=1e-4)
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    (images, _), _ = data.load_mnist(tmp_path, kind="fashion", flatten=False)
    assert images.shape == (6, 1, 28, 28)


def test_load_mnist_uses_environment_variable(tmp_path, monkeypatch):
    make_mnist_folder(tmp_path, gz=True)
    monkeypatch.setenv("DLCOURSE_FASHION_MNIST", str(tmp_path))
    (x_train, _), _ = data.load_mnist(kind="fashion")
    assert len(x_train) == 6


def test_load_mnist_names_the_missing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("DLCOURSE_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match="set DLCOURSE_MNIST .*train-images-idx3-ubyte"):
        data.load_mnist()
    make_mnist_folder(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="lacks t10k-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)


def test_read_idx_rejects_corrupt_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "junk")
    write_idx(tmp_path / "short", np.zeros((2, 3, 3)), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.read_idx(tmp_path / "short")


def test_dataloader_visits_every_example_once_per_epoch():
    x = np.arange(10.0)[:, None]
    y = np.arange(10)
    loader = data.DataLoader((x, y), batch_size=4, shuffle=True, seed=3)
    assert len(loader) == 3
    for _ in range(2):
        batches = list(loader)
        assert [len(b[0]) for b in batches] == [4, 4, 2]
        seen = np.concatenate([b[1] for b in batches])
        assert sorted(seen) == list(range(10))
        np.testing.assert_array_equal(np.concatenate([b[0][:, 0] for b in batches]), seen)
    assert len(data.DataLoader((x, y), batch_size=4, drop_last=True)) == 2


def test_dataloader_shuffling_is_seeded():
    x = np.arange(20.0)
    first = [b[0] for b in data.DataLoader((x,), batch_size=5, shuffle=True, seed=1)]
    second = [b[0] for b in data.DataLoader((x,), batch_size=5, shuffle=True, seed=1)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))
    assert not np.array_equal(np.concatenate(first), x)


def test_dataloader_rejects_mismatched_arrays_and_bad_batch_size():
    with pytest.raises(ValueError, match="same length"):
        data.DataLoader((np.zeros(3), np.zeros(4)))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        data.DataLoader((np.zeros(3),), batch_size=0)
