r"""Attention: scaled dot-product attention and multi-head attention (Vaswani et al., 2017).

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + M) V

Q holds one row per query position, K and V one row per key position; M is an additive
mask (0 where a query may attend, −∞ where it may not). `MultiheadAttention` projects its
inputs into `num_heads` smaller spaces, runs `ScaledDotProductAttention` in each (one call,
the heads are a batch dimension) and projects the concatenated heads back.

Boolean masks, two conventions, both torch's:
- `ScaledDotProductAttention` follows `torch.nn.functional.scaled_dot_product_attention`:
  True = the position TAKES PART in attention.
- `MultiheadAttention` (`attn_mask`, `key_padding_mask`) follows `torch.nn.MultiheadAttention`:
  True = the position is NOT allowed to attend (masked out / padding).
Float masks are added to the scores in both.
"""
import math

import numpy as np

from dlcourse._random import default_dtype
from dlcourse.nn import init
from dlcourse.nn.activation import Softmax
from dlcourse.nn.dropout import Dropout
from dlcourse.nn.linear import Linear
from dlcourse.nn.module import Module, check_float_input

__all__ = ["ScaledDotProductAttention", "MultiheadAttention"]


def _additive_mask(module: Module, mask, name: str, dtype, true_means_masked: bool) -> np.ndarray:
    """Turn a boolean or float mask into the additive float mask M (0 or −∞ for booleans)."""
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        blocked = mask if true_means_masked else ~mask
        return np.where(blocked, -np.inf, 0.0).astype(dtype)
    if not np.issubdtype(mask.dtype, np.floating):
        raise TypeError(f"{type(module).__name__} expects {name} of dtype bool or float, got {mask.dtype}")
    return mask.astype(dtype, copy=False)


class ScaledDotProductAttention(Module):
    r"""softmax(Q Kᵀ · scale + M) V, with its backward; torch's
    `F.scaled_dot_product_attention` as a module that also returns the weights.

        A = softmax(Q Kᵀ · scale + M),   output = dropout(A) V,   scale = 1/√E by default

    Backward, with P = dropout(A) and G = ∂L/∂output:
        ∂V = Pᵀ G,   ∂A = dropout'(G Vᵀ),   ∂S = A ⊙ (∂A − rowsum(∂A ⊙ A)),
        ∂Q = ∂S K · scale,   ∂K = ∂Sᵀ Q · scale

    Args:
        dropout_p: dropout probability on the attention weights, applied in training mode
            only (unlike the functional form, which always applies it).
        is_causal: mask out keys after the query (the top-left aligned lower triangle of
            an (L, S) matrix of ones takes part, as torch does); excludes `attn_mask`.
        scale: factor on Q Kᵀ; None means 1/√E.

    Shape:
        query: (*, L, E), key: (*, S, E), value: (*, S, Ev) — the same leading dimensions *
        attn_mask: broadcastable to (*, L, S); boolean with True = TAKES PART in attention
            (torch's scaled_dot_product_attention convention), or float, added to the scores
        output: (*, L, Ev), weights: (*, L, S) — the weights after dropout, as torch's
            MultiheadAttention returns them
    """

    def __init__(self, dropout_p: float = 0.0, is_causal: bool = False, scale=None):
        super().__init__()
        self.is_causal = bool(is_causal)
        self.scale = scale
        self.softmax = Softmax(dim=-1)
        self.dropout = Dropout(dropout_p)
        self._cache = None

    def forward(self, query, key, value, attn_mask=None):
        query = check_float_input(self, query, "query")
        key = check_float_input(self, key, "key")
        value = check_float_input(self, value, "value")
        if not query.dtype == key.dtype == value.dtype:
            raise TypeError(f"ScaledDotProductAttention expects query, key and value of one dtype, "
                            f"got {query.dtype}, {key.dtype} and {value.dtype}")
        if (query.ndim < 2 or key.ndim != query.ndim or value.ndim != query.ndim
                or key.shape[-1] != query.shape[-1] or key.shape[:-1] != value.shape[:-1]
                or key.shape[:-2] != query.shape[:-2]):
            raise ValueError(
                "ScaledDotProductAttention expects query (*, L, E), key (*, S, E) and value "
                f"(*, S, Ev), got shapes {query.shape}, {key.shape} and {value.shape}")
        length, source_length = query.shape[-2], key.shape[-2]
        scale = 1.0 / math.sqrt(query.shape[-1]) if self.scale is None else self.scale
        scores = (query @ np.swapaxes(key, -1, -2)) * query.dtype.type(scale)
        if self.is_causal:
            if attn_mask is not None:
                raise ValueError("ScaledDotProductAttention: pass either attn_mask or is_causal=True, not both")
            attn_mask = np.tril(np.ones((length, source_length), dtype=bool))
        if attn_mask is not None:
            mask = _additive_mask(self, attn_mask, "attn_mask", query.dtype, true_means_masked=False)
            try:
                broadcastable = np.broadcast_shapes(mask.shape, scores.shape) == scores.shape
            except ValueError:
                broadcastable = False
            if not broadcastable:
                raise ValueError(f"ScaledDotProductAttention expects attn_mask broadcastable to "
                                 f"{scores.shape} (*, L, S), got shape {mask.shape}")
            scores = scores + mask
        weights = self.dropout(self.softmax(scores))
        self._cache = (query, key, value, weights, scale)
        return weights @ value, weights

    def backward(self, grad_output):
        query, key, value, weights, scale = self._saved(self._cache)
        grad_output = np.asarray(grad_output)
        expected = query.shape[:-1] + value.shape[-1:]
        if grad_output.shape != expected:
            raise ValueError(f"ScaledDotProductAttention.backward expects grad_output of shape "
                             f"{expected}, got {grad_output.shape}")
        grad_value = np.swapaxes(weights, -1, -2) @ grad_output
        grad_weights = self.dropout.backward(grad_output @ np.swapaxes(value, -1, -2))
        grad_scores = self.softmax.backward(grad_weights) * query.dtype.type(scale)
        grad_query = grad_scores @ key
        grad_key = np.swapaxes(grad_scores, -1, -2) @ query
        return grad_query, grad_key, grad_value

    def extra_repr(self):
        return f"dropout_p={self.dropout.p}, is_causal={self.is_causal}, scale={self.scale}"


class MultiheadAttention(Module):
    r"""Multi-head attention, torch's `nn.MultiheadAttention` (the same parameters and outputs).

        headᵢ = Attention(Q W_qᵢᵀ + b_qᵢ, K W_kᵢᵀ + b_kᵢ, V W_vᵢᵀ + b_vᵢ),  i = 1 … num_heads
        MultiHead(Q, K, V) = concat(head₁, …, head_h) W_oᵀ + b_o

    W_q, W_k, W_v are the three (E, E) blocks of `in_proj_weight` (3E, E); each head uses
    E/num_heads of their rows. W_o, b_o are `out_proj`. Initialised as torch:
    xavier_uniform_ on `in_proj_weight`, zeros for `in_proj_bias` and `out_proj.bias`
    (`out_proj.weight` keeps Linear's initialisation).

    Args:
        embed_dim: E, the model dimension; divisible by num_heads.
        num_heads: number of heads h (each of dimension E/h).
        dropout: dropout probability on the attention weights (training mode only).
        bias: whether the in- and out-projections have biases.
        add_bias_kv: learn one extra key and value, `bias_k` and `bias_v` (1, 1, E), appended
            after the projection to every sequence's keys and values (S → S + 1).
        add_zero_attn: append one more key and value that are zero in every head (S → S + 1,
            after bias_k/bias_v): a slot that scores 0 and contributes nothing, so a query may
            attend "nowhere". Both extend the masks with columns that block nothing, and the
            attention weights have the extra columns, as torch's.
        kdim, vdim: keys and values from another space; not supported here (a ValueError
            says so).
        batch_first: inputs and outputs are (N, L, E) instead of (L, N, E).

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
            average_attn_weights=True, is_causal=False) -> (attn_output, attn_output_weights)

    - attn_mask: (L, S) or (N·num_heads, L, S); boolean with True = NOT allowed to attend
      (torch's MultiheadAttention convention, the opposite of ScaledDotProductAttention's),
      or float, added to the scores.
    - key_padding_mask: (N, S), or (S,) unbatched; boolean with True = padding, ignore this
      key; or float, added. Both masks combine by addition.
    - is_causal: a hint that attn_mask is the causal mask; as in torch, attn_mask is required.
    - attn_output_weights: (N, L, S) averaged over heads, (N, num_heads, L, S) with
      average_attn_weights=False, None with need_weights=False.

    Shape:
        query: (L, E) unbatched, (L, N, E), or (N, L, E) with batch_first
        key, value: (S, E), (S, N, E), or (N, S, E) with batch_first
        attn_output: the shape of query

    backward(grad_output) -> (grad_query, grad_key, grad_value), always three arrays, also
    for self-attention (query is key is value): the caller sums them to get ∂L/∂x.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"MultiheadAttention: embed_dim and num_heads must be greater than 0, "
                             f"got embed_dim={embed_dim} and num_heads={num_heads}")
        if embed_dim % num_heads != 0:
            raise ValueError(f"MultiheadAttention: embed_dim must be divisible by num_heads, "
                             f"got embed_dim={embed_dim} and num_heads={num_heads}")
        if (kdim is not None and kdim != embed_dim) or (vdim is not None and vdim != embed_dim):
            raise ValueError(f"MultiheadAttention: kdim/vdim different from embed_dim={embed_dim} "
                             f"are not supported, got kdim={kdim}, vdim={vdim}")
        self.embed_dim = int(embed_dim)
        self.kdim = self.vdim = self.embed_dim
        self.num_heads = int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.add_zero_attn = add_zero_attn
        dtype = np.dtype(dtype) if dtype is not None else default_dtype()
        self.register_parameter("in_proj_weight", np.empty((3 * self.embed_dim, self.embed_dim), dtype))
        self.register_parameter("in_proj_bias", np.empty(3 * self.embed_dim, dtype) if bias else None)
        for name in ("bias_k", "bias_v"):
            self.register_parameter(name, np.empty((1, 1, self.embed_dim), dtype) if add_bias_kv else None)
        self.out_proj = Linear(self.embed_dim, self.embed_dim, bias=bias, dtype=dtype)
        # Kept out of the module tree so that named_modules() and repr() are torch's;
        # forward() hands it the training flag.
        object.__setattr__(self, "attention", ScaledDotProductAttention(dropout_p=dropout))
        self.reset_parameters()
        self._cache = None

    def reset_parameters(self) -> None:
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    # ------------------------------------------------------------------ boundary checks
    def _check_inputs(self, query, key, value):
        query = check_float_input(self, query, "query")
        key = check_float_input(self, key, "key")
        value = check_float_input(self, value, "value")
        if not query.dtype == key.dtype == value.dtype:
            raise TypeError(f"MultiheadAttention expects query, key and value of one dtype, "
                            f"got {query.dtype}, {key.dtype} and {value.dtype}")
        E = self.embed_dim
        layout = "(N, {}, {})" if self.batch_first else "({}, N, {})"
        if query.ndim not in (2, 3) or query.shape[-1] != E:
            raise ValueError(f"MultiheadAttention expects query of shape (L, {E}) or "
                             f"{layout.format('L', E)}, got shape {query.shape}")
        batch_axis = 0 if self.batch_first else 1
        for name, x in (("key", key), ("value", value)):
            if x.ndim != query.ndim or x.shape[-1] != E or (
                    query.ndim == 3 and x.shape[batch_axis] != query.shape[batch_axis]):
                expected = f"(S, {E})" if query.ndim == 2 else layout.format("S", E).replace(
                    "N", str(query.shape[batch_axis]))
                raise ValueError(f"MultiheadAttention expects {name} of shape {expected} to go with "
                                 f"query of shape {query.shape}, got shape {x.shape}")
        if key.shape != value.shape:
            raise ValueError(f"MultiheadAttention expects key and value of the same shape, "
                             f"got {key.shape} and {value.shape}")
        return query, key, value

    def _combined_mask(self, attn_mask, key_padding_mask, batch, length, source_length, dtype):
        """The additive mask, broadcastable to the scores (N, num_heads, L, S), or None."""
        mask = None
        if attn_mask is not None:
            attn_mask = _additive_mask(self, attn_mask, "attn_mask", dtype, true_means_masked=True)
            two_d, three_d = (length, source_length), (batch * self.num_heads, length, source_length)
            if attn_mask.shape == two_d:
                mask = attn_mask
            elif attn_mask.shape == three_d:
                mask = attn_mask.reshape(batch, self.num_heads, length, source_length)
            else:
                raise ValueError(f"MultiheadAttention expects attn_mask of shape (L, S) = {two_d} "
                                 f"or (N·num_heads, L, S) = {three_d}, got shape {attn_mask.shape}")
        if key_padding_mask is not None:
            key_padding_mask = _additive_mask(self, key_padding_mask, "key_padding_mask", dtype,
                                              true_means_masked=True)
            if key_padding_mask.shape != (batch, source_length):
                raise ValueError(f"MultiheadAttention expects key_padding_mask of shape (N, S) = "
                                 f"{(batch, source_length)}, got shape {key_padding_mask.shape}")
            padding = key_padding_mask[:, None, None, :]
            mask = padding if mask is None else mask + padding
        return mask

    # ------------------------------------------------------------------ forward / backward
    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        query, key, value = self._check_inputs(query, key, value)
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: is_causal=True is a hint that attn_mask is the "
                             "causal mask; pass attn_mask too (as torch requires)")
        batched = query.ndim == 3
        if not batched:
            # Unbatched input: (L, E) → (1, L, E); a 1-D padding mask and (heads, L, S) mask fit N = 1.
            query, key, value = query[None], key[None], value[None]
            if key_padding_mask is not None and np.ndim(key_padding_mask) == 1:
                key_padding_mask = np.asarray(key_padding_mask)[None]
        elif not self.batch_first:
            query, key, value = (np.swapaxes(x, 0, 1) for x in (query, key, value))
        N, L, E = query.shape
        S = key.shape[1]
        H, D = self.num_heads, self.head_dim
        mask = self._combined_mask(attn_mask, key_padding_mask, N, L, S, query.dtype)

        weight = self.in_proj_weight.astype(query.dtype, copy=False)
        bias = None if self.in_proj_bias is None else self.in_proj_bias.astype(query.dtype, copy=False)

        def project(x, block):
            y = x @ weight[block * E:(block + 1) * E].T
            if bias is not None:
                y = y + bias[block * E:(block + 1) * E]
            # (N, len, E) → (N, H, len, D): the heads become a batch dimension.
            return y.reshape(N, -1, H, D).transpose(0, 2, 1, 3)

        # torch reads `training` and `dropout` on every call; so does the attention core.
        self.attention.train(self.training)
        self.attention.dropout.p = self.dropout
        keys, values = self._extra_keys_values(project(key, 1), project(value, 2))
        if mask is not None and keys.shape[2] > S:
            # The appended keys are never masked.
            mask = np.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, keys.shape[2] - S)])
        heads, weights = self.attention(project(query, 0), keys, values, mask)
        concat = heads.transpose(0, 2, 1, 3).reshape(N, L, E)
        output = self.out_proj(concat)
        self._cache = (query, key, value, batched)

        if not batched:
            output, weights = output[0], weights[0]
        elif not self.batch_first:
            output = np.swapaxes(output, 0, 1)
        if not need_weights:
            return output, None
        return output, (weights.mean(axis=-3) if average_attn_weights else weights)

    def _extra_keys_values(self, keys, values):
        """Append bias_k/bias_v and then the zero key/value along the source axis.

        keys, values: (N, H, S, D) → (N, H, S + add_bias_kv + add_zero_attn, D)
        """
        N, H, _, D = keys.shape
        extra_keys, extra_values = [keys], [values]
        if self.bias_k is not None:
            for extra, bias in ((extra_keys, self.bias_k), (extra_values, self.bias_v)):
                # (1, 1, E) → (N, H, 1, D): one more position, split into heads like the rest.
                head_bias = bias.astype(keys.dtype, copy=False).reshape(1, H, 1, D)
                extra.append(np.broadcast_to(head_bias, (N, H, 1, D)))
        if self.add_zero_attn:
            extra_keys.append(np.zeros((N, H, 1, D), keys.dtype))
            extra_values.append(np.zeros((N, H, 1, D), keys.dtype))
        if len(extra_keys) == 1:
            return keys, values
        return np.concatenate(extra_keys, axis=2), np.concatenate(extra_values, axis=2)

    def _extra_keys_values_backward(self, grad_keys, grad_values, source_length):
        """Add the gradients of bias_k/bias_v; return those of the projected keys and values."""
        if self.bias_k is not None:
            for name, grad in (("bias_k", grad_keys), ("bias_v", grad_values)):
                # bias_k was broadcast over the batch: its gradient sums over it.
                self.grads[name] += grad[:, :, source_length].sum(axis=0).reshape(1, 1, -1)
        return grad_keys[:, :, :source_length], grad_values[:, :, :source_length]

    def backward(self, grad_output):
        query, key, value, batched = self._saved(self._cache)
        grad_output = np.asarray(grad_output)
        N, L, E = query.shape
        expected = ((N, L, E) if self.batch_first else (L, N, E)) if batched else (L, E)
        if grad_output.shape != expected:
            raise ValueError(f"MultiheadAttention.backward expects grad_output of shape {expected}, "
                             f"got {grad_output.shape}")
        if not batched:
            grad_output = grad_output[None]
        elif not self.batch_first:
            grad_output = np.swapaxes(grad_output, 0, 1)
        H, D = self.num_heads, self.head_dim
        grad_concat = self.out_proj.backward(grad_output)
        grad_heads = grad_concat.reshape(N, L, H, D).transpose(0, 2, 1, 3)
        grad_query, grad_keys, grad_values = self.attention.backward(grad_heads)
        grad_projected = (grad_query, *self._extra_keys_values_backward(grad_keys, grad_values, key.shape[1]))

        weight = self.in_proj_weight.astype(query.dtype, copy=False)
        grad_inputs = []
        for block, (x, grad_y) in enumerate(zip((query, key, value), grad_projected)):
            grad_y = grad_y.transpose(0, 2, 1, 3).reshape(N, -1, E)
            rows = slice(block * E, (block + 1) * E)
            self.grads["in_proj_weight"][rows] += grad_y.reshape(-1, E).T @ x.reshape(-1, E)
            if self.in_proj_bias is not None:
                self.grads["in_proj_bias"][rows] += grad_y.reshape(-1, E).sum(axis=0)
            grad_x = grad_y @ weight[rows]
            if not batched:
                grad_x = grad_x[0]
            elif not self.batch_first:
                grad_x = np.swapaxes(grad_x, 0, 1)
            grad_inputs.append(grad_x)
        return tuple(grad_inputs)
