"""The aligned arrays and the unbuffered broadcasting that the hot layers use (dlcourse/nn/_elementwise.py)."""
import numpy as np
import pytest

from dlcourse.nn._elementwise import ALIGNMENT, aligned_buffers, aligned_empty, row_broadcasting


@pytest.mark.parametrize("shape", [(256, 512), (3, 5, 4096), 65536, (0, 8192)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint32])
@pytest.mark.parametrize("offset", [0, 1024, 2048])
def test_aligned_empty_starts_offset_bytes_past_a_cache_line(shape, dtype, offset):
    array = aligned_empty(shape, dtype, offset=offset)
    expected_shape = (shape,) if isinstance(shape, int) else shape
    assert array.shape == expected_shape and array.dtype == dtype
    assert array.flags.c_contiguous and array.flags.writeable
    if array.nbytes >= 16384:
        assert array.ctypes.data % ALIGNMENT == offset % ALIGNMENT
    array[...] = 7  # the whole extent is ours to write
    assert np.all(array == 7)


def test_small_arrays_skip_the_alignment_work():
    array = aligned_empty((4, 4), np.float32, offset=1024)
    assert array.shape == (4, 4) and array.flags.owndata


def test_aligned_buffers_are_aligned_disjoint_and_staggered_within_a_page():
    buffers = aligned_buffers(4, 65536, np.float32)
    starts = [b.ctypes.data for b in buffers]
    assert all(b.shape == (65536,) and b.dtype == np.float32 for b in buffers)
    assert all(start % ALIGNMENT == starts[0] % ALIGNMENT for start in starts)
    assert sorted({(start - starts[0]) % 4096 for start in starts}) == [0, 1024, 2048, 3072]
    for k, buffer in enumerate(buffers):
        buffer[...] = k
    assert [int(b[0]) for b in buffers] == [0, 1, 2, 3] and [int(b[-1]) for b in buffers] == [0, 1, 2, 3]


def test_row_broadcasting_sets_the_buffer_for_its_block_and_restores_it():
    before = np.getbufsize()
    with row_broadcasting(512):
        assert np.getbufsize() == 512
        with row_broadcasting(100_000):
            assert np.getbufsize() == 8192
        assert np.getbufsize() == 512
    assert np.getbufsize() == before
    with pytest.raises(ZeroDivisionError):
        with row_broadcasting(7):
            assert np.getbufsize() == 16
            1 / 0
    assert np.getbufsize() == before


def test_broadcasts_inside_row_broadcasting_compute_the_same_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 512)).astype(np.float32)
    column, row = rng.standard_normal(512).astype(np.float32), rng.standard_normal((256, 1)).astype(np.float32)
    expected = (x - row) * column
    with row_broadcasting(512):
        out = np.subtract(x, row, aligned_empty(x.shape, x.dtype))
        out *= column
    np.testing.assert_array_equal(out, expected)
