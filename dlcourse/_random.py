"""Seeded randomness and the default floating dtype, shared by every module.

Like torch, parameters are created as float32 unless `set_default_dtype(np.float64)` is
called; `manual_seed` makes initialisation, dropout masks and shuffling reproducible.
"""
import numpy as np

_state = {"rng": np.random.default_rng(0), "dtype": np.dtype(np.float32)}


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the generator behind initialisation, dropout and shuffling."""
    _state["rng"] = np.random.default_rng(seed)
    return _state["rng"]


def get_rng() -> np.random.Generator:
    return _state["rng"]


def set_default_dtype(dtype) -> None:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"default dtype must be float32 or float64, got {dtype}")
    _state["dtype"] = dtype


def default_dtype() -> np.dtype:
    return _state["dtype"]


class using_generator:
    """Context manager: draw from `generator` (anything with numpy Generator's methods)
    instead of the global one, e.g. to replay a known dropout mask."""

    def __init__(self, generator):
        self.generator = generator

    def __enter__(self):
        self.saved = _state["rng"]
        _state["rng"] = self.generator
        return self.generator

    def __exit__(self, *exc):
        _state["rng"] = self.saved
        return False
