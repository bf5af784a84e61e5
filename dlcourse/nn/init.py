"""Weight initialisation, as `torch.nn.init` defines it. Every function fills its array
in place and returns it.

For a weight of shape (fan_out, fan_in, *kernel): fan_in = shape[1]·prod(kernel),
fan_out = shape[0]·prod(kernel).
"""
import math

import numpy as np

from dlcourse._random import get_rng

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
]


def calculate_gain(nonlinearity: str, param=None) -> float:
    """Recommended gain for a nonlinearity (torch's table)."""
    linear_like = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                   "conv_transpose2d", "conv_transpose3d", "sigmoid"}
    if nonlinearity in linear_like:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _fan_in_and_fan_out(array: np.ndarray) -> tuple[int, int]:
    if array.ndim < 2:
        raise ValueError(
            f"fan in and fan out need an array of at least 2 dimensions, got shape {array.shape}"
        )
    receptive_field = int(np.prod(array.shape[2:])) if array.ndim > 2 else 1
    return array.shape[1] * receptive_field, array.shape[0] * receptive_field


def _fan(array: np.ndarray, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fan_in_and_fan_out(array)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(array: np.ndarray, a: float = 0.0, b: float = 1.0, generator=None) -> np.ndarray:
    rng = generator or get_rng()
    array[...] = rng.uniform(a, b, size=array.shape)
    return array


def normal_(array: np.ndarray, mean: float = 0.0, std: float = 1.0, generator=None) -> np.ndarray:
    rng = generator or get_rng()
    array[...] = rng.normal(mean, std, size=array.shape)
    return array


def constant_(array: np.ndarray, val: float) -> np.ndarray:
    array[...] = val
    return array


def zeros_(array: np.ndarray) -> np.ndarray:
    return constant_(array, 0.0)


def ones_(array: np.ndarray) -> np.ndarray:
    return constant_(array, 1.0)


def xavier_uniform_(array: np.ndarray, gain: float = 1.0, generator=None) -> np.ndarray:
    """U(−a, a) with a = gain·√(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    fan_in, fan_out = _fan_in_and_fan_out(array)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(array, -bound, bound, generator)


def xavier_normal_(array: np.ndarray, gain: float = 1.0, generator=None) -> np.ndarray:
    """N(0, std²) with std = gain·√(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fan_in_and_fan_out(array)
    return normal_(array, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(array: np.ndarray, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None) -> np.ndarray:
    """U(−b, b) with b = gain·√(3 / fan) (He et al., 2015)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(array, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(array, -bound, bound, generator)


def kaiming_normal_(array: np.ndarray, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None) -> np.ndarray:
    """N(0, std²) with std = gain / √fan."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(array, mode))
    return normal_(array, 0.0, std, generator)
