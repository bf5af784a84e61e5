"""How the hot layers make NumPy's elementwise passes fast: aligned arrays, unbuffered broadcasts.

Two measured properties of NumPy 2.4 on x86-64 (`benchmarks/README.md` has the numbers):

- Its allocator aligns data to 16 bytes, so a large float32 array typically starts 16 bytes
  past a cache line. The SIMD loops then split every 64-byte vector load and store across
  two cache lines: a product of two such arrays into a third runs about 1.6× slower than on
  arrays that start on a cache line (torch aligns its tensors to 64 bytes).
  `aligned_empty` gives the layers' outputs and work buffers that alignment.
- A ufunc that broadcasts a per-row or per-column factor (x − μ, x ⊙ γ) over rows shorter
  than half of NumPy's ufunc buffer (8192 elements) copies its operands through that buffer
  to make longer inner loops, which costs more than the loops it saves: on 256 × 512 float32
  it takes ~1.5× as long as with a buffer no longer than a row. `row_broadcasting` sets
  that buffer size for the passes inside it (restored on exit, as `np.errstate` restores it).
"""
import ctypes
import math

import numpy as np

ALIGNMENT = 64  # bytes: one cache line, the width of one AVX-512 register
# Below this size an array's passes are too short for the split lines to matter, and
# finding an array's address would cost more than it saves.
_SMALL = 16384
_DEFAULT_BUFSIZE = 8192  # elements: NumPy's default ufunc buffer


def aligned_empty(shape, dtype, offset: int = 0) -> np.ndarray:
    """An uninitialised array of `shape` whose data starts `offset` bytes past a cache line.

    `offset` (a multiple of the itemsize) lets arrays that are used together start at
    different places within a 4 KiB page, so that a store to one is not taken for a store
    to another at the same page offset.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _SMALL:
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + ALIGNMENT + offset, np.uint8)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(raw)) % ALIGNMENT + offset  # 3× faster than raw.ctypes.data
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_buffers(count: int, size: int, dtype) -> "list[np.ndarray]":
    """`count` aligned 1-D work buffers of `size` elements, staggered by 1 KiB within a page."""
    dtype = np.dtype(dtype)
    stride = -(-size * dtype.itemsize // 4096) * 4096 + 1024  # whole pages, plus the stagger
    raw = aligned_empty(count * stride, np.uint8)
    return [raw[k * stride:k * stride + size * dtype.itemsize].view(dtype) for k in range(count)]


class row_broadcasting:
    """Run the ufuncs inside with a buffer no longer than one contiguous row of `row_length`.

    row_length: the number of contiguous elements over which the broadcast factor is constant
    or varies along with the data (the last axis of a (rows, features) array).
    A class rather than a generator-based context manager: the layers enter one on every
    forward and backward, and this form costs about half as much (~2.5 µs).
    """

    __slots__ = ("_size", "_state")

    def __init__(self, row_length: int):
        self._size = min(max(row_length // 16 * 16, 16), _DEFAULT_BUFSIZE)
        self._state = np.errstate()  # restores the buffer size on exit, as it restores the error state

    def __enter__(self):
        self._state.__enter__()
        np.setbufsize(self._size)

    def __exit__(self, *exc_info):
        return self._state.__exit__(*exc_info)
