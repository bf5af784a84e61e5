"""Offline data: the embedded digits, MNIST IDX files, CIFAR-10 python batches, the switch of the
architecture chapters (DLCOURSE_DATA), and the DataLoader."""
import gzip
import os
import pickle
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


# ---------------------------------------------------------------------- CIFAR-10 python batches
def write_cifar_batch(path, data_rows, labels, protocol=2):
    """A batch as the official files hold it: a pickled dict with bytes keys, b"data" uint8
    (N, 3072) in CHW order and b"labels" a list of ints."""
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in labels],
             b"data": np.asarray(data_rows, dtype=np.uint8), b"filenames": [b"x.png"] * len(labels)}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def make_cifar_folder(folder, n_per_batch=3, n_test=4):
    rng = np.random.default_rng(1)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_per_batch
        rows, labels = rng.integers(0, 256, (n, 3072)), rng.integers(0, 10, n)
        write_cifar_batch(folder / name, rows, labels)
        written[name] = (rows, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {b"label_names": names, b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}, protocol=2))
    return written


def test_read_cifar_batch_puts_red_green_blue_rows_into_nchw(tmp_path):
    # one image: red 255 on row 0 only, green 128 on column 31 only, blue 7 at the last pixel
    row = np.zeros(3072, dtype=np.uint8)
    row[0:32] = 255
    row[1024 + 31:2048:32] = 128
    row[3071] = 7
    write_cifar_batch(tmp_path / "test_batch", [row, np.full(3072, 9)], [3, 9])
    images, labels = data.read_cifar_batch(tmp_path / "test_batch")
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [3, 9])
    assert (images[0, 0, 0] == 255).all() and images[0, 0, 1:].sum() == 0
    assert (images[0, 1, :, 31] == 128).all() and images[0, 1, :, :31].sum() == 0
    assert images[0, 2, 31, 31] == 7 and images[0, 2].sum() == 7


@pytest.mark.parametrize("protocol", [2, 4])
def test_load_cifar10_concatenates_the_five_batches(tmp_path, protocol):
    written = make_cifar_folder(tmp_path)
    if protocol != 2:
        rows, labels = written["data_batch_2"]
        write_cifar_batch(tmp_path / "data_batch_2", rows, labels, protocol=protocol)
    (x_train, y_train), (x_test, y_test) = data.load_cifar10(tmp_path)
    assert x_train.shape == (15, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_allclose(x_train.reshape(15, -1) * 255, expected, atol=1e-4)
    np.testing.assert_array_equal(y_test, written["test_batch"][1])
    (flat, _), _ = data.load_cifar10(tmp_path, flatten=True)
    assert flat.shape == (15, 3072)
    assert data.cifar10_label_names(tmp_path)[:3] == ["airplane", "automobile", "bird"]


def test_load_cifar10_uses_environment_variable_and_the_archive_folder(tmp_path, monkeypatch):
    (tmp_path / "cifar-10-batches-py").mkdir()
    make_cifar_folder(tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv("DLCOURSE_CIFAR10", str(tmp_path))     # the folder the archive was unpacked in
    (x_train, _), (x_test, _) = data.load_cifar10()
    assert len(x_train) == 15 and len(x_test) == 4


def test_load_cifar10_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("DLCOURSE_CIFAR10", raising=False)
    with pytest.raises(FileNotFoundError, match="set DLCOURSE_CIFAR10 .*data_batch_1"):
        data.load_cifar10()
    make_cifar_folder(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_3;"):
        data.load_cifar10(tmp_path)
    (tmp_path / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match="lacks batches.meta"):
        data.cifar10_label_names(tmp_path)


def test_read_cifar_batch_rejects_corrupt_and_foreign_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="junk is not a CIFAR-10 python batch"):
        data.read_cifar_batch(tmp_path / "junk")
    write_cifar_batch(tmp_path / "cut", np.zeros((2, 3072)), [0, 1])
    (tmp_path / "cut").write_bytes((tmp_path / "cut").read_bytes()[:-40])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        data.read_cifar_batch(tmp_path / "cut")
    write_cifar_batch(tmp_path / "small", np.zeros((2, 1024)), [0, 1])
    with pytest.raises(ValueError, match=r"do not match CIFAR-10's uint8 \(N, 3072\)"):
        data.read_cifar_batch(tmp_path / "small")
    write_cifar_batch(tmp_path / "labels", np.zeros((2, 3072)), [0, 10])
    with pytest.raises(ValueError, match="labels must lie in 0–9"):
        data.read_cifar_batch(tmp_path / "labels")
    (tmp_path / "list").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="holds a list, not a dict"):
        data.read_cifar_batch(tmp_path / "list")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


def test_read_cifar_batch_refuses_a_pickle_that_would_run_code(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _RunsCode(), b"labels": [0]}))
    with pytest.raises(ValueError, match="refuses (posix|os).system"):
        data.read_cifar_batch(tmp_path / "data_batch_1")


# ---------------------------------------------------------------------- the switch DLCOURSE_DATA
@pytest.fixture
def data_files(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "cifar").mkdir()
    make_mnist_folder(tmp_path / "mnist", gz=True, n_train=10, n_test=4)
    make_cifar_folder(tmp_path / "cifar", n_per_batch=2)
    monkeypatch.setenv("DLCOURSE_MNIST", str(tmp_path / "mnist"))
    monkeypatch.setenv("DLCOURSE_FASHION_MNIST", str(tmp_path / "mnist"))
    monkeypatch.setenv("DLCOURSE_CIFAR10", str(tmp_path / "cifar"))
    monkeypatch.delenv("DLCOURSE_DATA", raising=False)
    return tmp_path


@pytest.mark.parametrize("setting,image,train,val,test", [
    (None, (1, 8, 8), 1077, 270, 450),
    ("digits", (1, 8, 8), 1077, 270, 450),
    ("mnist", (1, 28, 28), 8, 2, 4),
    ("fashion", (1, 28, 28), 8, 2, 4),
    ("cifar10", (3, 32, 32), 8, 2, 4),
])
def test_the_switch_picks_the_images_of_the_architecture_chapters(data_files, monkeypatch, setting, image,
                                                                   train, val, test):
    if setting is not None:
        monkeypatch.setenv("DLCOURSE_DATA", setting)
    assert data.dataset_choice() == (setting or "digits")
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data.load_images()
    assert x_train.shape == (train, *image) and x_val.shape == (val, *image) and x_test.shape == (test, *image)
    assert len(y_train) == train and len(y_val) == val and len(y_test) == test
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0 <= x_train.min() and x_train.max() <= 1
    (flat, _), (flat_val, _), _ = data.load_images(flatten=True)
    assert flat.shape == (train, int(np.prod(image))) and flat_val.shape == (val, int(np.prod(image)))


def test_the_validation_split_is_carved_from_training_and_never_from_test(data_files):
    (x_train, y_train), (x_test, y_test) = data.load_digits(flatten=False)
    (x_fit, _), (x_val, _), (x_test_again, _) = data.load_images("digits")
    np.testing.assert_array_equal(x_test_again, x_test)
    order = np.random.default_rng(0).permutation(len(x_train))     # the chapters' own split
    np.testing.assert_array_equal(x_val, x_train[order[:270]])
    np.testing.assert_array_equal(x_fit, x_train[order[270:]])
    (few, _), (same_val, _), _ = data.load_images("cifar10", max_train=3)
    assert len(few) == 3 and len(same_val) == 2


def test_the_switch_rejects_an_unknown_data_set_in_one_line(data_files, monkeypatch):
    monkeypatch.setenv("DLCOURSE_DATA", "imagenet")
    with pytest.raises(ValueError, match="DLCOURSE_DATA='imagenet' is not a data set: choose one of digits, "
                                         "mnist, fashion, cifar10"):
        data.load_images()
    monkeypatch.setenv("DLCOURSE_DATA", "cifar10")
    monkeypatch.delenv("DLCOURSE_CIFAR10")
    with pytest.raises(FileNotFoundError, match="set DLCOURSE_CIFAR10"):
        data.load_images()
    with pytest.raises(ValueError, match="validation must be a fraction"):
        data.load_images("digits", validation=1.5)
