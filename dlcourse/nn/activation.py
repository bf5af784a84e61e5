"""Activation functions (chapter 4): ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax, LogSoftmax.

Each layer computes y = f(x) in `forward` and returns grad_output · f'(x) in `backward`
(for Softmax and LogSoftmax the Jacobian couples the entries along `dim`). Every layer
accepts any input shape and computes in the input's dtype.
"""
import math
import warnings

import numpy as np

from dlcourse.nn._elementwise import aligned_buffers, aligned_empty, row_broadcasting
from dlcourse.nn.module import Module, check_float_input

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax"]

_GELU_KAPPA = 0.044715  # the cubic coefficient of GELU's tanh approximation


class _Activation(Module):
    """Shared plumbing: check the input, cache what backward needs, check grad_output."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def _grad_output(self, grad_output, cached: np.ndarray) -> np.ndarray:
        """grad_output as an array of the cached array's shape, in the input's float dtype."""
        shape = cached.shape
        grad_output = np.asarray(grad_output)
        if grad_output.shape != shape:
            raise ValueError(f"{type(self).__name__}.backward expects grad_output of shape {shape} "
                             f"(the output's shape), got {grad_output.shape}")
        return grad_output.astype(cached.dtype, copy=False)


class ReLU(_Activation):
    r"""f(x) = max(0, x);  f'(x) = 1 if x > 0 else 0 (torch takes 0 at x = 0).

    Shape:
        input: (*) — any shape
        output: (*), same shape as the input

    `inplace` is accepted for torch compatibility; the input array is never modified.
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        x = check_float_input(self, x)
        y = np.maximum(x, 0)  # propagates NaN, as torch does
        self._cache = y
        return y

    def backward(self, grad_output):
        # y > 0 exactly where x > 0, so the output is all backward needs (as in torch).
        y = self._saved(self._cache)
        # Multiplying by the 0/1 mask is ~10x faster than np.where with a scalar here.
        return self._grad_output(grad_output, y) * (y > 0)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(_Activation):
    r"""f(x) = x if x > 0 else negative_slope · x;  f'(x) = 1 if x > 0 else negative_slope.

    Shape:
        input: (*) — any shape
        output: (*), same shape as the input

    `inplace` is accepted for torch compatibility; the input array is never modified.
    """

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False):
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, x):
        x = check_float_input(self, x)
        # The local slope, 1 or negative_slope, serves both passes: y = slope · x, dx = slope · dy.
        # Built arithmetically: np.where and boolean assignment are several times slower.
        slope = (x > 0).astype(x.dtype)
        slope *= 1 - self.negative_slope
        slope += self.negative_slope
        self._cache = slope
        return x * slope

    def backward(self, grad_output):
        slope = self._saved(self._cache)
        return self._grad_output(grad_output, slope) * slope

    def extra_repr(self):
        inplace = ", inplace=True" if self.inplace else ""
        return f"negative_slope={self.negative_slope}{inplace}"


class Sigmoid(_Activation):
    r"""f(x) = σ(x) = 1 / (1 + e^{−x});  f'(x) = σ(x) (1 − σ(x)).

    Shape:
        input: (*) — any shape
        output: (*), values in [0, 1]
    """

    def forward(self, x):
        x = check_float_input(self, x)
        y = _sigmoid(x)
        self._cache = y
        return y

    def backward(self, grad_output):
        y = self._saved(self._cache)
        grad = 1 - y  # then in place: each pass over the array costs as much as the arithmetic
        grad *= y
        grad *= self._grad_output(grad_output, y)
        return grad


class Tanh(_Activation):
    r"""f(x) = tanh(x) = (e^x − e^{−x}) / (e^x + e^{−x});  f'(x) = 1 − tanh²(x).

    Shape:
        input: (*) — any shape
        output: (*), values in [−1, 1]
    """

    def forward(self, x):
        x = check_float_input(self, x)
        flat = x.reshape(-1)  # 1-D, so that a 0-d input also gives a writable array
        out = np.tanh(flat)
        if x.dtype == np.float32:
            # NumPy's float32 tanh is off by up to ~2 ulp, which 1 − y² (the derivative)
            # magnifies by 1/(1 − |y|): harmless for |y| ≤ 0.99, up to 10⁴-fold near
            # saturation. There (|x| > 2.6, few entries) the rounded float64 value is torch's y.
            tail = np.flatnonzero(np.abs(flat) > 2.6)
            if tail.size:
                out[tail] = np.tanh(flat[tail].astype(np.float64))
        y = out.reshape(x.shape)
        self._cache = y
        return y

    def backward(self, grad_output):
        y = self._saved(self._cache)
        # (1 − y)(1 + y) rather than 1 − y²: 1 − y is exact near saturation, so no cancellation.
        grad = 1 - y  # then in place: each pass over the array costs as much as the arithmetic
        grad *= 1 + y
        grad *= self._grad_output(grad_output, y)
        return grad


class GELU(_Activation):
    r"""Gaussian error linear unit, f(x) = x · Φ(x), Φ the standard normal CDF.

    approximate='none' (exact):
        f(x) = ½ x (1 + erf(x / √2));   f'(x) = Φ(x) + x φ(x),  φ(x) = e^{−x²/2} / √(2π)
    approximate='tanh':
        f(x) = ½ x (1 + tanh u),  u = √(2/π) (x + 0.044715 x³)
        f'(x) = ½ (1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3 · 0.044715 x²)

    Shape:
        input: (*) — any shape
        output: (*), same shape as the input
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self._derivative = None  # float32, exact: f'(x) of the last forward, until backward

    def forward(self, x):
        x = check_float_input(self, x)
        if self.approximate == "tanh":
            t = np.tanh(_gelu_tanh_argument(x))
            self._cache = (x, t)  # tanh u serves the backward too
            return 0.5 * x * (1 + t)
        if x.dtype == np.float32:
            y, self._derivative = _gelu_exact_float32(x)
            self._cache = (x, None)
            return y
        cdf = 0.5 * (1 + _erf(x * (1 / math.sqrt(2))))
        self._cache = (x, cdf)  # Φ(x) serves the backward too
        return x * cdf

    def backward(self, grad_output):
        x, saved = self._saved(self._cache)
        if saved is None:  # float32, exact: forward computed f'(x) itself
            # Its buffer becomes the gradient (in place: ~5% of forward + backward); a second
            # backward after one forward computes f'(x) again.
            derivative, self._derivative = self._derivative, None
            if derivative is None:
                derivative = _gelu_exact_float32(x)[1]
            return np.multiply(self._grad_output(grad_output, derivative), derivative, out=derivative)
        grad_output = self._grad_output(grad_output, x)
        if self.approximate == "tanh":
            t = saved
            du_dx = math.sqrt(2 / math.pi) * (1 + 3 * _GELU_KAPPA * x * x)
            return grad_output * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du_dx)
        pdf = np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return grad_output * (saved + x * pdf)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(_Activation):
    r"""softmax(x)_i = e^{x_i} / Σ_j e^{x_j}, taken along `dim`.

    Jacobian: ∂y_i/∂x_j = y_i (δ_ij − y_j), so backward gives y ⊙ (g − Σ_j g_j y_j).
    Computed as e^{x − max x} so that large logits do not overflow.

    dim=None follows torch's deprecated implicit rule (`_get_softmax_dim`): dim = 0 for
    inputs of 0, 1 or 3 dimensions, else 1, with the same warning torch gives.

    Shape:
        input: (*) — any shape
        output: (*), same shape; entries along `dim` are positive and sum to 1
    """

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        x = check_float_input(self, x)
        dim = _softmax_dim(self, x.ndim)
        if _along_contiguous_rows(x, dim):
            # The same arithmetic in fewer, faster passes: in place in one aligned array, the
            # sum as a BLAS product with ones, one reciprocal per row (see _elementwise).
            with row_broadcasting(x.shape[-1]):
                y = np.subtract(x, x.max(axis=dim, keepdims=True), aligned_empty(x.shape, x.dtype))
                np.exp(y, y)
                total = y @ np.ones(x.shape[-1], x.dtype)
                y *= (1 / total)[..., None]
        else:
            exp = np.exp(x - x.max(axis=dim, keepdims=True))
            y = exp / exp.sum(axis=dim, keepdims=True)
        self._cache = (y, dim)
        return y

    def backward(self, grad_output):
        y, dim = self._saved(self._cache)
        grad_output = self._grad_output(grad_output, y)
        if _along_contiguous_rows(y, dim):
            with row_broadcasting(y.shape[-1]):
                # Σ g y as NumPy sums it (pairwise), not as vecdot does: on rows where
                # g − Σ g y cancels, vecdot's float32 rounding moves the result up to 1.5·10⁻⁴
                # from torch's (an attention case of torch's module tests).
                grad = np.multiply(grad_output, y, aligned_empty(y.shape, y.dtype, offset=1024))
                np.subtract(grad_output, grad.sum(axis=-1, keepdims=True), grad)
                grad *= y
                return grad
        return y * (grad_output - (grad_output * y).sum(axis=dim, keepdims=True))

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(_Activation):
    r"""log_softmax(x)_i = x_i − log Σ_j e^{x_j}, taken along `dim`.

    Jacobian: ∂y_i/∂x_j = δ_ij − softmax(x)_j, so backward gives g − softmax(x) Σ_j g_j.
    The log-sum-exp is shifted by max x so that ±1000 logits stay finite.

    dim=None follows torch's deprecated implicit rule (`_get_softmax_dim`): dim = 0 for
    inputs of 0, 1 or 3 dimensions, else 1, with the same warning torch gives.

    Shape:
        input: (*) — any shape
        output: (*), same shape as the input
    """

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        x = check_float_input(self, x)
        dim = _softmax_dim(self, x.ndim)
        y = _log_softmax(x, dim)
        self._cache = (y, dim)
        return y

    def backward(self, grad_output):
        y, dim = self._saved(self._cache)
        grad_output = self._grad_output(grad_output, y)
        return grad_output - np.exp(y) * grad_output.sum(axis=dim, keepdims=True)

    def extra_repr(self):
        return f"dim={self.dim}"


# Abramowitz & Stegun 7.1.26 (Hastings, 1955): for z ≥ 0,
#   erf(z) = 1 − (a₁t + a₂t² + a₃t³ + a₄t⁴ + a₅t⁵) e^{−z²} + ε(z),  t = 1 / (1 + p z),
# with |ε(z)| ≤ 1.5·10⁻⁷ for every z ≥ 0. torch's vectorized float32 erf has the same form.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
# Elements per block of the float32 exact GELU: the ~23 passes over its five 256 KiB arrays (x, y,
# f'(x) and two work buffers) then stay in the core's 2 MiB L2 cache.
_GELU_BLOCK = 65536


def _float32_constant(value) -> np.ndarray:
    # A 0-d array: NumPy converts a Python float anew on every call (~0.2 µs of the ~23 calls
    # per block).
    return np.array(value, np.float32)


_AS_SHIFT = _float32_constant(math.sqrt(2) / _AS_P)
# bₖ = ½√(2π) aₖ (√2/p)ᵏ, the A&S coefficients for s = 1/(|x| + √2/p) (see below).
_AS_B = [0.5 * math.sqrt(2 * math.pi) * a * (math.sqrt(2) / _AS_P) ** k for k, a in enumerate(_AS_A, 1)]
# The same polynomial in u = β s, β = b₅^(1/5), is monic: Σ bₖ sᵏ = Σ cₖ uᵏ with cₖ = bₖ / βᵏ, c₅ = 1.
_AS_BETA = _float32_constant(_AS_B[-1] ** (1 / 5))
_AS_C = [_float32_constant(b / _AS_B[-1] ** (k / 5)) for k, b in enumerate(_AS_B[:-1], 1)]
_MINUS_HALF_LOG2_E = _float32_constant(-0.5 * math.log2(math.e))
_LOG2_SQRT_2PI = _float32_constant(0.5 * math.log2(2 * math.pi))
_HALF = _float32_constant(0.5)
_SIGN_BIT = np.array(0x80000000, np.uint32)


def _gelu_exact_float32(x: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
    r"""y = x Φ(x) and f'(x) = Φ(x) + x φ(x) for a float32 x, in x's shape.

    Φ(x) = ½ + sign(x) (½ − Q) with Q = ½ erfc(|x|/√2) from A&S 7.1.26. With z = |x|/√2,
    e^{−z²} = √(2π) φ(x) and t = 1/(1 + p z) = (√2/p) / (|x| + √2/p), so
    Q = [Σ bₖ sᵏ] φ(x) with s = 1 / (|x| + √2/p) and bₖ = ½√(2π) aₖ (√2/p)ᵏ, evaluated as
    the monic Σ cₖ uᵏ in u = β s (β⁵ = b₅), which saves Horner's first product.
    The absolute error of Φ is ≤ 0.75·10⁻⁷ from the formula plus float32 rounding
    (tests/test_activation.py measures ≤ 4·10⁻⁷ against SciPy; torch's own float32 kernel,
    the same formula, measures 3.7·10⁻⁷ on that grid).

    Chosen for speed: SciPy's erf is a scalar double-precision loop (8× torch's GELU). These
    in-place passes run block by block in cache-line-aligned buffers, so that each block
    stays in the core's cache; φ(x) serves both Q and the derivative, as
    2^(−x²/(2 ln 2) − log₂√(2π)) (NumPy's float32 exp2 takes half the time of its exp); the
    sign of x is applied by copying its sign bit.
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    y, derivative = aligned_empty(flat.size, np.float32), aligned_empty(flat.size, np.float32, offset=2048)
    size = min(flat.size, _GELU_BLOCK)
    u_full, q_full = aligned_buffers(2, size, np.float32)
    # x² overflows to inf for |x| > 1.8·10¹⁹ (φ = 0, as it should); −inf · Φ(−inf) is NaN as in torch.
    # Each ufunc's last argument is its output: positional, NumPy parses the ~90 calls ~25% faster.
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, flat.size, _GELU_BLOCK):
            xs = flat[start:start + _GELU_BLOCK]
            n = xs.size
            u, q = u_full[:n], q_full[:n]
            # The outputs' blocks serve as work space first: y's holds the sign bits, f'(x)'s φ(x).
            y_block, pdf = y[start:start + n], derivative[start:start + n]
            sign = y_block.view(np.uint32)
            np.bitwise_and(xs.view(np.uint32), _SIGN_BIT, sign)
            np.multiply(xs, _MINUS_HALF_LOG2_E, pdf)  # φ(x) = 2^(−x²/(2 ln 2) − log₂ √(2π))
            np.multiply(pdf, xs, pdf)
            np.subtract(pdf, _LOG2_SQRT_2PI, pdf)
            np.exp2(pdf, pdf)
            np.abs(xs, u)  # u = β / (|x| + √2/p)
            np.add(u, _AS_SHIFT, u)
            np.divide(_AS_BETA, u, u)
            np.add(u, _AS_C[-1], q)  # Horner, monic: Σ cₖ uᵏ = ((((u + c₄) u + c₃) u + c₂) u + c₁) u
            for c in reversed(_AS_C[:-1]):
                np.multiply(q, u, q)
                np.add(q, c, q)
            np.multiply(q, u, q)
            np.multiply(q, pdf, q)  # Q = ½ erfc(|x| / √2)
            np.subtract(_HALF, q, q)  # Φ(x) = ½ + sign(x) (½ − Q), ½ − Q ≥ 0
            q_bits = q.view(np.uint32)
            np.bitwise_xor(q_bits, sign, q_bits)
            np.add(q, _HALF, q)
            np.multiply(xs, q, y_block)
            np.multiply(xs, pdf, pdf)  # f'(x) = Φ(x) + x φ(x)
            np.add(pdf, q, pdf)
    return y.reshape(x.shape), derivative.reshape(x.shape)


def _erf(x: np.ndarray) -> np.ndarray:
    # SciPy's erf, imported on first use: importing scipy.special costs ~0.3 s, which every
    # kernel that imports dlcourse (every exercise, every graded notebook) would pay for a
    # function that only the exact GELU needs.
    from scipy.special import erf

    return erf(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) in x's dtype: the tanh form for float32 (speed), the exp form otherwise."""
    if x.dtype == np.float32:
        return _sigmoid_float32(x)
    return _sigmoid_exp(x)


# |x| beyond which ½ + ½ tanh(x/2) loses relative digits: σ or 1 − σ falls below 0.018.
_TANH_FORM_LIMIT = 4.0


def _sigmoid_float32(x: np.ndarray) -> np.ndarray:
    """σ(x) = ½ + ½ tanh(x/2), exact algebra.

    Chosen for speed: NumPy's float32 tanh is one SIMD pass, several times faster than its
    exp. Its ≤ 2-ulp error is ≤ 6·10⁻⁶ relative to σ and to 1 − σ for |x| ≤ 4; beyond
    that the cancellation in ½ + ½ tanh (or in 1 − σ, which the backward uses) would grow,
    so those few entries take the exp form, which torch uses too.
    """
    flat = x.reshape(-1)
    sigma = np.multiply(flat, 0.5, dtype=np.float32)
    np.tanh(sigma, out=sigma)
    sigma *= 0.5
    sigma += 0.5
    tail = np.flatnonzero(np.abs(flat) > _TANH_FORM_LIMIT)
    if tail.size:
        sigma[tail] = _sigmoid_exp(flat[tail])
    return sigma.reshape(x.shape)


def _sigmoid_exp(x: np.ndarray) -> np.ndarray:
    # e^{−|x|} never overflows: σ(x) = 1/(1+e^{−x}) for x ≥ 0 and e^{x}/(1+e^{x}) for x < 0.
    flat = x.reshape(-1)  # a 1-D view, so that 0-d inputs also give a writable array
    e = np.exp(-np.abs(flat))
    sigma = 1 / (1 + e)  # σ(|x|)
    # For x < 0: σ(x) = e^{x}/(1+e^{x}) = e^{−|x|}·σ(|x|), without the cancellation of 1 − σ(|x|).
    np.putmask(sigma, flat < 0, e * sigma)
    return sigma.reshape(x.shape)


def _log_softmax(x: np.ndarray, axis) -> np.ndarray:
    """x − log Σ e^x along `axis`; shifting by the maximum keeps every exp() ≤ 1."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _along_contiguous_rows(x: np.ndarray, dim) -> bool:
    """Whether `dim` is the last axis of a non-empty C-contiguous array (the fast softmax path)."""
    return x.ndim > 0 and dim == x.ndim - 1 and x.size > 0 and x.flags.c_contiguous


def _gelu_tanh_argument(x: np.ndarray) -> np.ndarray:
    return math.sqrt(2 / math.pi) * (x + _GELU_KAPPA * x * x * x)


def _softmax_dim(module: Module, ndim: int) -> "int | None":
    """The axis to normalise over: torch's `_get_softmax_dim` for dim=None, else `dim` checked."""
    name = type(module).__name__
    if module.dim is None:
        function = "log_softmax" if name == "LogSoftmax" else "softmax"
        warnings.warn(f"Implicit dimension choice for {function} has been deprecated. "
                      "Change the call to include dim=X as an argument.", stacklevel=4)
        dim = 0 if ndim in (0, 1, 3) else 1
    else:
        # A 0-d input behaves as if it had one axis (torch accepts dim 0 or −1 there).
        rank = max(ndim, 1)
        if not -rank <= module.dim < rank:
            raise ValueError(f"{name}: dim={module.dim} is out of range for an input with {ndim} "
                             f"dimensions (expected dim in [{-rank}, {rank - 1}])")
        dim = module.dim
    # NumPy reduces a 0-d array with axis=None.
    return dim % ndim if ndim > 0 else None
