"""Data sets that work offline, and batching.

- `load_digits()`: scikit-learn's bundled 8×8 handwritten digits (1,797 images), the
  course's default data set; a fixed, stratified train/test split.
- `load_mnist(path)`: MNIST or Fashion-MNIST from IDX files the user already has
  (gzipped or raw).
- `load_cifar10(path)`: CIFAR-10 from the official "python version" pickle batches.
- `load_images()`: the architecture chapters' images, chosen by one switch, the environment
  variable DLCOURSE_DATA (`digits`, the default, `mnist`, `fashion` or `cifar10`), with a
  validation split carved from the training set.
- `DataLoader`: mini-batches of arrays, with reproducible shuffling.

Nothing is ever downloaded: the readers read files the user already has.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
from pathlib import Path

import numpy as np

from dlcourse._random import get_rng

__all__ = ["load_digits", "load_mnist", "read_idx", "load_cifar10", "read_cifar_batch", "cifar10_label_names",
           "load_images", "dataset_choice", "DATASETS", "ArrayDataset", "DataLoader", "MNIST_FILES",
           "CIFAR10_FILES"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",),
                 "meta": "batches.meta"}
_ENV_VARS = {"mnist": "DLCOURSE_MNIST", "fashion": "DLCOURSE_FASHION_MNIST", "cifar10": "DLCOURSE_CIFAR10"}
# The switch of the architecture chapters (9 and 13): which images `load_images()` returns.
DATASETS = ("digits", "mnist", "fashion", "cifar10")
SWITCH = "DLCOURSE_DATA"


def load_digits(test_size: float = 0.25, flatten: bool = True, dtype=np.float32, seed: int = 0):
    """The 8×8 digits, scaled to [0, 1], split once and for all (stratified, `seed`).

    Returns `(x_train, y_train), (x_test, y_test)` with
    x: (N, 64) when `flatten`, else (N, 1, 8, 8); y: (N,) int64 labels 0–9.
    With the defaults: 1,347 training and 450 test images.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(dtype)
    images = images.reshape(len(images), -1) if flatten else images[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, random_state=seed, stratify=labels)
    return (x_train, y_train), (x_test, y_test)


def read_idx(path) -> np.ndarray:
    """Read one IDX file (MNIST's format), gzipped or raw, into an array of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number); expected MNIST's IDX format")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[data[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(data)} bytes, expected {expected} "
                         f"for an array of shape {shape}")
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_mnist(path=None, kind: str = "mnist", flatten: bool = True, dtype=np.float32):
    """MNIST (`kind='mnist'`) or Fashion-MNIST (`kind='fashion'`) from a folder of IDX files.

    `path` defaults to the environment variable DLCOURSE_MNIST (or DLCOURSE_FASHION_MNIST).
    The folder must hold the four standard files, gzipped or not:
    train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte.

    Returns `(x_train, y_train), (x_test, y_test)`; x scaled to [0, 1], (N, 784) when
    `flatten` else (N, 1, 28, 28); y int64.
    """
    if kind not in _ENV_VARS:
        raise ValueError(f"kind must be 'mnist' or 'fashion', got {kind!r}")
    variable = _ENV_VARS[kind]
    if path is None:
        path = os.environ.get(variable)
    if path is None:
        raise FileNotFoundError(
            f"no {kind} folder given: pass load_mnist(path) or set {variable} to a folder holding "
            f"{', '.join(MNIST_FILES.values())} (each may end in .gz); nothing is downloaded. "
            "Without them, use dlcourse.data.load_digits()")
    directory = Path(path)
    found = {key: _find(directory, stem) for key, stem in MNIST_FILES.items()}
    missing = [MNIST_FILES[key] for key, file in found.items() if file is None]
    if missing:
        raise FileNotFoundError(
            f"{directory} lacks {', '.join(missing)} (optionally .gz); a {kind} folder holds "
            f"{', '.join(MNIST_FILES.values())}")
    arrays = {key: read_idx(file) for key, file in found.items()}
    splits = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{directory}: {split} images {images.shape} and labels {labels.shape} "
                             "do not match (expected (N, 28, 28) and (N,))")
        x = (images.astype(dtype) / 255.0).astype(dtype)
        x = x.reshape(len(x), -1) if flatten else x[:, None, :, :]
        splits.append((x, labels.astype(np.int64)))
    return tuple(splits)


# What the official CIFAR-10 pickles are made of: dicts, lists, bytes, ints and NumPy arrays.
# Unpickling anything else could run code, so every other global is refused.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
    ("_codecs", "encode"): __import__("codecs").encode,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refuses {module}.{name}: a CIFAR-10 batch holds only arrays and lists")
        return _PICKLE_GLOBALS[(module, name)]


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = _ArraysOnlyUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as error:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (corrupt or truncated pickle: {error})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch: it holds a {type(batch).__name__}, not a dict")
    return batch


def read_cifar_batch(path):
    """One CIFAR-10 python batch (`data_batch_1` … `data_batch_5`, `test_batch`).

    The file is a pickled dict with b"data", uint8 (N, 3072) rows of 1,024 red, then green,
    then blue pixels, each channel row by row (CHW), and b"labels", N ints 0–9.
    Returns `(images, labels)`: uint8 (N, 3, 32, 32) and int64 (N,).
    """
    path = Path(path)
    batch = _unpickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise ValueError(f"{path} lacks b'data' (an array) or b'labels'; keys: {sorted(map(str, batch))}")
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise ValueError(f"{path}: data {data.dtype} {data.shape} and labels {labels.shape} do not match "
                         "CIFAR-10's uint8 (N, 3072) and (N,)")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0–9, found {labels.min()}–{labels.max()}")
    return data.reshape(len(data), 3, 32, 32), labels.astype(np.int64)


def _cifar_folder(path) -> Path:
    if path is None:
        path = os.environ.get(_ENV_VARS["cifar10"])
    if path is None:
        raise FileNotFoundError(
            f"no CIFAR-10 folder given: pass load_cifar10(path) or set {_ENV_VARS['cifar10']} to the folder "
            f"cifar-10-batches-py of the 'CIFAR-10 python version' (data_batch_1 … data_batch_5, test_batch); "
            "nothing is downloaded")
    directory = Path(path)
    # the official archive unpacks into cifar-10-batches-py/: accept the folder above it too
    if not (directory / "test_batch").is_file() and (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    return directory


def load_cifar10(path=None, flatten: bool = False, dtype=np.float32):
    """CIFAR-10 from the official "python version" batches (32×32 colour images, 10 classes).

    `path` (default: the environment variable DLCOURSE_CIFAR10) is the folder holding
    data_batch_1 … data_batch_5 and test_batch (the archive's cifar-10-batches-py, or the
    folder it was unpacked in).

    Returns `(x_train, y_train), (x_test, y_test)`; x scaled to [0, 1], (N, 3, 32, 32) (NCHW)
    or, when `flatten`, (N, 3072) in the same CHW order; y int64. With the official files:
    50,000 training and 10,000 test images.
    """
    directory = _cifar_folder(path)
    wanted = CIFAR10_FILES["train"] + CIFAR10_FILES["test"]
    missing = [name for name in wanted if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} lacks {', '.join(missing)}; a CIFAR-10 python folder holds "
                                f"{', '.join(wanted)}")
    splits = []
    for names in (CIFAR10_FILES["train"], CIFAR10_FILES["test"]):
        batches = [read_cifar_batch(directory / name) for name in names]
        images = np.concatenate([images for images, _ in batches])
        x = (images.astype(dtype) / 255.0).astype(dtype)
        splits.append((x.reshape(len(x), -1) if flatten else x, np.concatenate([labels for _, labels in batches])))
    return tuple(splits)


def cifar10_label_names(path=None) -> list[str]:
    """The ten class names from batches.meta (b"label_names"): airplane, automobile, …, truck."""
    meta = _cifar_folder(path) / CIFAR10_FILES["meta"]
    if not meta.is_file():
        raise FileNotFoundError(f"{meta.parent} lacks {meta.name}, which holds CIFAR-10's class names")
    names = _unpickle(meta).get(b"label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise ValueError(f"{meta} has no list of ten b'label_names'")
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]


def dataset_choice(name=None) -> str:
    """The data set the architecture chapters use: `name`, else the environment variable
    DLCOURSE_DATA, else "digits" (embedded, so the book builds offline)."""
    choice = (name or os.environ.get(SWITCH) or "digits").strip().lower()
    if choice not in DATASETS:
        raise ValueError(f"{SWITCH}={choice!r} is not a data set: choose one of {', '.join(DATASETS)}")
    return choice


def load_images(name=None, path=None, validation: float = 0.2, max_train: int | None = None,
                flatten: bool = False, seed: int = 0):
    """The images of the architecture chapters, with a validation split carved from training.

    name: "digits" (8×8, 1 channel), "mnist" or "fashion" (28×28, 1 channel) or "cifar10"
    (32×32, 3 channels); default `dataset_choice()`, i.e. the switch DLCOURSE_DATA. path: the
    folder of the files (default: DLCOURSE_MNIST, DLCOURSE_FASHION_MNIST or DLCOURSE_CIFAR10).
    A seeded permutation of the training set puts ⌈validation·N⌉ images into the validation
    split (every choice is made there); `max_train` then keeps at most that many of the rest,
    for a NumPy network to train in minutes. The test split is left whole.

    Returns `(x_train, y_train), (x_val, y_val), (x_test, y_test)`: x float32 in [0, 1],
    (N, C, H, W), or (N, C·H·W) when `flatten`; y int64.
    """
    choice = dataset_choice(name)
    if not 0 <= validation < 1:
        raise ValueError(f"validation must be a fraction in [0, 1), got {validation}")
    if choice == "digits":
        (x_train, y_train), test = load_digits(flatten=False)
    elif choice == "cifar10":
        (x_train, y_train), test = load_cifar10(path)
    else:
        (x_train, y_train), test = load_mnist(path, kind=choice, flatten=False)
    order = np.random.default_rng(seed).permutation(len(x_train))
    held_out = math.ceil(validation * len(x_train))
    kept = order[held_out:] if max_train is None else order[held_out:held_out + int(max_train)]
    splits = [(x_train[kept], y_train[kept]), (x_train[order[:held_out]], y_train[order[:held_out]]), test]
    if flatten:
        splits = [(x.reshape(len(x), -1), y) for x, y in splits]
    return tuple(splits)


class ArrayDataset:
    """Arrays that share their first dimension, indexed together (like torch's TensorDataset)."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        lengths = {len(a) for a in self.arrays}
        if len(lengths) != 1:
            raise ValueError(f"ArrayDataset arrays must have the same length, got "
                             f"{[len(a) for a in self.arrays]}")

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Mini-batches from an `ArrayDataset` (or a tuple of arrays).

    Each iteration is one epoch and yields tuples of arrays with batch_size rows (the last
    may be smaller unless `drop_last`). With `shuffle`, each epoch draws a new permutation
    from a generator seeded once by `seed` (or from dlcourse's global generator), so a run
    is reproducible end to end.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed: int | None = None):
        if isinstance(dataset, (tuple, list)):
            dataset = ArrayDataset(*dataset)
        if not isinstance(dataset, ArrayDataset):
            raise TypeError("DataLoader expects an ArrayDataset or a tuple of arrays, "
                            f"got {type(dataset).__name__}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = (self._rng or get_rng()).permutation(n) if self.shuffle else np.arange(n)
        for batch in range(len(self)):
            yield self.dataset[order[batch * self.batch_size:(batch + 1) * self.batch_size]]
