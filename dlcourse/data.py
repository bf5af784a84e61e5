"""Data sets that work offline, and batching.

- `load_digits()`: scikit-learn's bundled 8×8 handwritten digits (1,797 images), the
  course's default data set; a fixed, stratified train/test split.
- `load_mnist(path)`: MNIST or Fashion-MNIST from IDX files the user already has
  (gzipped or raw). Nothing is ever downloaded.
- `DataLoader`: mini-batches of arrays, with reproducible shuffling.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from dlcourse._random import get_rng

__all__ = ["load_digits", "load_mnist", "read_idx", "ArrayDataset", "DataLoader", "MNIST_FILES"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_ENV_VARS = {"mnist": "DLCOURSE_MNIST", "fashion": "DLCOURSE_FASHION_MNIST"}


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
