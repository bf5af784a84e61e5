r"""The Transformer encoder (Vaswani et al., 2017): `TransformerEncoderLayer`,
`TransformerEncoder`, and the sinusoidal `PositionalEncoding` that feeds it.

One encoder layer is a self-attention block and a feed-forward block, each wrapped in a
residual connection and a layer norm:

    post-norm (norm_first=False, the paper):   x = LN₁(x + SA(x));   x = LN₂(x + FF(x))
    pre-norm  (norm_first=True):               x = x + SA(LN₁(x));   x = x + FF(LN₂(x))

    SA(x) = dropout₁(MultiheadAttention(x, x, x)),
    FF(x) = dropout₂(W₂ dropout(act(W₁ x + b₁)) + b₂)

Backward runs the same blocks in reverse; at every residual connection the gradient takes
both paths and the two contributions add up.
"""
import copy
import math

import numpy as np

from dlcourse.nn.activation import GELU, ReLU
from dlcourse.nn.attention import MultiheadAttention
from dlcourse.nn.container import ModuleList
from dlcourse.nn.dropout import Dropout
from dlcourse.nn.linear import Linear
from dlcourse.nn.module import Module, check_float_input
from dlcourse.nn.normalization import LayerNorm

__all__ = ["TransformerEncoderLayer", "TransformerEncoder", "PositionalEncoding"]

_ACTIVATIONS = {"relu": ReLU, "gelu": GELU}


def _check_sequence(module: Module, src, d_model: int, batch_first: bool, name: str = "src"):
    """src as a float array of shape (L, d_model), (L, N, d_model) or (N, L, d_model)."""
    src = check_float_input(module, src, name)
    if src.ndim not in (2, 3) or src.shape[-1] != d_model:
        layout = f"(N, L, {d_model})" if batch_first else f"(L, N, {d_model})"
        raise ValueError(f"{type(module).__name__} expects {name} of shape (L, {d_model}) or "
                         f"{layout}, got shape {src.shape}")
    return src


class TransformerEncoderLayer(Module):
    r"""One encoder block, torch's `nn.TransformerEncoderLayer` (same sub-modules, same
    `state_dict` keys, the same function as torch's Python path).

    Args:
        d_model: the model dimension E.
        nhead: attention heads (d_model divisible by nhead).
        dim_feedforward: the hidden width of the feed-forward block.
        dropout: probability for every dropout (attention weights, dropout, dropout1, dropout2).
        activation: 'relu', 'gelu', or a dlcourse Module with a backward (which, as in
            torch, is then registered as the sub-module `activation`).
        layer_norm_eps: ε of both layer norms.
        batch_first: src is (N, L, E) instead of (L, N, E).
        norm_first: pre-norm instead of the paper's post-norm (see the module docstring).
        bias: biases in the linear layers, attention projections and layer norms.

    forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False): the masks are
    those of `MultiheadAttention` (boolean True = NOT allowed to attend / padding).

    Shape:
        src: (L, E) unbatched, (L, N, E), or (N, L, E) with batch_first
        output: the shape of src
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        if isinstance(activation, Module):
            self.activation = activation
        elif activation in _ACTIVATIONS:
            # torch stores F.relu / F.gelu, a function and not a sub-module: keeping ours
            # out of the module tree keeps named_modules() and repr() torch's.
            object.__setattr__(self, "activation", _ACTIVATIONS[activation]())
        else:
            raise ValueError(f"TransformerEncoderLayer: activation should be 'relu', 'gelu' or a "
                             f"dlcourse Module, got {activation!r}")
        self._cache = None

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        attended, _ = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                     need_weights=False, is_causal=is_causal)
        return self.dropout1(attended)

    def _sa_block_backward(self, grad_output):
        # Self-attention: x fed query, key and value, so its gradient is the sum of the three.
        return sum(self.self_attn.backward(self.dropout1.backward(grad_output)))

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def _ff_block_backward(self, grad_output):
        grad = self.linear2.backward(self.dropout2.backward(grad_output))
        return self.linear1.backward(self.activation.backward(self.dropout.backward(grad)))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = _check_sequence(self, src, self.self_attn.embed_dim, self.self_attn.batch_first)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        self._cache = x.shape
        return x

    def backward(self, grad_output):
        shape = self._saved(self._cache)
        grad = np.asarray(grad_output)
        if grad.shape != shape:
            raise ValueError(f"TransformerEncoderLayer.backward expects grad_output of shape {shape}, "
                             f"got {grad.shape}")
        if self.norm_first:
            grad = grad + self.norm2.backward(self._ff_block_backward(grad))
            return grad + self.norm1.backward(self._sa_block_backward(grad))
        grad = self.norm2.backward(grad)
        grad = self.norm1.backward(grad + self._ff_block_backward(grad))
        return grad + self._sa_block_backward(grad)


class TransformerEncoder(Module):
    r"""A stack of `num_layers` deep copies of `encoder_layer`, then an optional final norm;
    torch's `nn.TransformerEncoder` (keys `layers.0.self_attn.in_proj_weight`, …, `norm.weight`).

        x ← layerᵢ(x, mask, src_key_padding_mask) for i = 0 … num_layers−1;  x ← norm(x)

    `enable_nested_tensor` and `mask_check` are accepted for torch compatibility; they only
    steer torch's fast inference path, which computes the same function.

    Shape:
        src: (L, E) unbatched, (L, N, E), or (N, L, E) when the layer is batch_first
        output: the shape of src
    """

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm=None,
                 enable_nested_tensor: bool = True, mask_check: bool = True):
        super().__init__()
        if not isinstance(encoder_layer, Module):
            raise TypeError(f"TransformerEncoder expects a dlcourse encoder layer, "
                            f"got {type(encoder_layer).__name__}")
        if num_layers < 1:
            raise ValueError(f"TransformerEncoder: num_layers must be at least 1, got {num_layers}")
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check
        self._cache = None

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        self._cache = True  # the layers and the norm hold what backward needs
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                           is_causal=bool(is_causal))
        if self.norm is not None:
            output = self.norm(output)
        return output

    def backward(self, grad_output):
        self._saved(self._cache)
        grad = grad_output
        if self.norm is not None:
            grad = self.norm.backward(grad)
        for layer in reversed(list(self.layers)):
            grad = layer.backward(grad)
        return grad


class PositionalEncoding(Module):
    r"""Adds the sinusoidal position table of Vaswani et al. (2017), then dropout:

        PE[pos, 2i]   = sin(pos / 10000^{2i/d_model})
        PE[pos, 2i+1] = cos(pos / 10000^{2i/d_model})
        y = dropout(x + PE[:L])

    Each pair (2i, 2i+1) is a rotation at its own wavelength (from 2π to 10000·2π), so
    PE[pos + k] is a linear function of PE[pos], and every row has norm √(d_model/2).

    Not in torch.nn (the PyTorch tutorial's version registers the table as a buffer). Here
    the table `pe` (max_len, d_model), float64, is a plain attribute, NOT in `state_dict`:
    it is fixed by (d_model, max_len), holds nothing learned, and so a checkpoint does not
    depend on max_len. It is cast to the input's dtype when added.

    Shape:
        input: (L, d_model) unbatched, (L, N, d_model), or (N, L, d_model) with batch_first;
            L ≤ max_len
        output: the shape of the input
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0,
                 batch_first: bool = False):
        super().__init__()
        if d_model < 1 or max_len < 1:
            raise ValueError(f"PositionalEncoding: d_model and max_len must be positive, "
                             f"got d_model={d_model}, max_len={max_len}")
        self.d_model = int(d_model)
        self.max_len = int(max_len)
        self.batch_first = batch_first
        self.dropout = Dropout(dropout)
        position = np.arange(self.max_len, dtype=np.float64)[:, None]
        # 1 / 10000^{2i/d} as exp(−2i·ln(10000)/d), one frequency per (sin, cos) pair.
        frequency = np.exp(np.arange(0, self.d_model, 2) * (-math.log(10000.0) / self.d_model))
        angle = position * frequency
        pe = np.empty((self.max_len, self.d_model))
        pe[:, 0::2] = np.sin(angle)
        pe[:, 1::2] = np.cos(angle[:, : self.d_model // 2])
        self.pe = pe
        self._cache = None

    def forward(self, x):
        x = _check_sequence(self, x, self.d_model, self.batch_first, name="input")
        length = x.shape[1] if x.ndim == 3 and self.batch_first else x.shape[0]
        if length > self.max_len:
            raise ValueError(f"PositionalEncoding got a sequence of length {length}, "
                             f"longer than max_len={self.max_len}")
        table = self.pe[:length].astype(x.dtype, copy=False)
        if x.ndim == 3 and not self.batch_first:
            table = table[:, None, :]
        self._cache = x.shape
        return self.dropout(x + table)

    def backward(self, grad_output):
        shape = self._saved(self._cache)
        grad_output = np.asarray(grad_output)
        if grad_output.shape != shape:
            raise ValueError(f"PositionalEncoding.backward expects grad_output of shape {shape}, "
                             f"got {grad_output.shape}")
        return self.dropout.backward(grad_output)

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}, batch_first={self.batch_first}"
