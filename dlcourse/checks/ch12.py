"""Chapter 12 (attention and the Transformer): scaled dot-product attention forward and
backward (the backward derived by the student from the forward pass), splitting and merging
heads, the sinusoidal positional encoding, layer norm.

The references (the answer key, `dlcourse.answers`) come from
`dlcourse.nn.ScaledDotProductAttention`, `MultiheadAttention`, `PositionalEncoding` and
`LayerNorm`, which the test suite holds to PyTorch.

Mask convention of the exercise: boolean, True = masked out (this key may NOT be attended
to), as `torch.nn.MultiheadAttention`'s `attn_mask`. `dlcourse.nn.ScaledDotProductAttention`
follows `torch.nn.functional.scaled_dot_product_attention` instead (True = takes part), so
the references hand it the negated mask.
"""
import numpy as np

from dlcourse import nn
from dlcourse.checks import part

# Library implementations of the mechanics this chapter's parts ask for (Part.forbids).
_ATTENTION_IMPLEMENTATIONS = (
    "dlcourse.nn.MultiheadAttention",
    "dlcourse.nn.attention.ScaledDotProductAttention",
    "dlcourse.nn.TransformerEncoderLayer",
    "dlcourse.nn.TransformerEncoder",
    "dlcourse.models.TransformerClassifier",
)


# ---------------------------------------------------------------------- attention
def _attention(query, key, value, mask):
    layer = nn.ScaledDotProductAttention()
    output, weights = layer(query, key, value, attn_mask=~np.asarray(mask, dtype=bool))
    return layer, output, weights


def _random_mask(rng, shape):
    """A boolean mask (True = masked out) in which every query row keeps at least one key."""
    mask = rng.random(shape) < 0.35
    full = mask.all(axis=-1)
    rows = np.argwhere(full)
    for index in rows:
        mask[tuple(index) + (int(rng.integers(shape[-1])),)] = False
    return mask


def _attention_inputs(rng):
    """(query, key, value, mask) for several shapes and mask kinds."""
    cases = []
    # (N, L, S, d_k, d_v, mask kind)
    for n, length, source, d_k, d_v, kind in [(2, 3, 4, 5, 6, "none"), (1, 5, 5, 8, 8, "causal"),
                                              (3, 2, 6, 4, 3, "padding"), (2, 4, 3, 6, 2, "random"),
                                              (2, 1, 1, 3, 2, "none")]:
        query = rng.standard_normal((n, length, d_k)) * 1.5
        key = rng.standard_normal((n, source, d_k)) * 1.5
        value = rng.standard_normal((n, source, d_v))
        if kind == "none":
            mask = np.zeros((n, length, source), dtype=bool)
        elif kind == "causal":      # (L, S): key j is masked out for query i when j > i
            mask = np.triu(np.ones((length, source), dtype=bool), k=1)
        elif kind == "padding":     # (N, 1, S): the last keys of each sequence are padding
            lengths = rng.integers(1, source + 1, size=n)
            mask = (np.arange(source)[None, :] >= lengths[:, None])[:, None, :]
        else:
            mask = _random_mask(rng, (n, length, source))
        cases.append((query, key, value, mask))
    return cases


@part("ch12.attention", "attention", asks='scaled dot-product attention',
      forbids=_ATTENTION_IMPLEMENTATIONS)
def attention_cases(rng):
    """softmax(Q Kᵀ / √d_k, masked) V and the weights, with a boolean mask (True = masked out)."""
    return _attention_inputs(rng)


@part("ch12.attention_backward", "attention_backward", asks="attention's backward pass",
      forbids=_ATTENTION_IMPLEMENTATIONS, derived=True)
def attention_backward_cases(rng):
    """(dQ, dK, dV) of scaled dot-product attention for an upstream gradient of the output."""
    return [(rng.standard_normal(q.shape[:-1] + v.shape[-1:]), q, k, v, mask)
            for q, k, v, mask in _attention_inputs(rng)]


# ---------------------------------------------------------------------- heads
class _AttentionStandIn(nn.Module):
    """Stands in for MultiheadAttention's attention core: records the per-head query it is
    given (the split heads) and returns `heads` (or the value) as the per-head outputs, which
    MultiheadAttention then merges. It has the `dropout` attribute MultiheadAttention sets."""

    def __init__(self, heads=None):
        super().__init__()
        self.dropout = nn.Dropout(0.0)
        self.heads = heads
        self.seen_query = None

    def forward(self, query, key, value, mask=None):
        self.seen_query = query
        return (value if self.heads is None else self.heads), None


def _identity_attention(embed_dim, num_heads, stand_in):
    """MultiheadAttention with identity projections and no biases, its core replaced."""
    layer = nn.MultiheadAttention(embed_dim, num_heads, bias=False, batch_first=True, dtype=np.float64)
    eye = np.eye(embed_dim)
    layer.in_proj_weight[...] = np.concatenate([eye, eye, eye])
    layer.out_proj.weight[...] = eye
    object.__setattr__(layer, "attention", stand_in)
    return layer


@part("ch12.split_heads", "split_heads", asks='splitting into heads',
      forbids=_ATTENTION_IMPLEMENTATIONS)
def split_heads_cases(rng):
    """(N, L, E) → (N, h, L, E/h), as MultiheadAttention splits its projections."""
    return [(rng.standard_normal((n, length, embed)), heads)
            for n, length, embed, heads in [(2, 3, 8, 2), (1, 5, 6, 3), (3, 1, 4, 4), (2, 4, 6, 1),
                                            (2, 2, 12, 4)]]


@part("ch12.merge_heads", "merge_heads", asks='merging the heads',
      forbids=_ATTENTION_IMPLEMENTATIONS)
def merge_heads_cases(rng):
    """(N, h, L, D) → (N, L, h·D), as MultiheadAttention concatenates its heads."""
    return [(rng.standard_normal(shape),)
            for shape in [(2, 2, 3, 4), (1, 3, 5, 2), (3, 4, 1, 1), (2, 1, 4, 6), (2, 4, 2, 3)]]


# ---------------------------------------------------------------------- positions, layer norm
@part("ch12.positional_encoding", "positional_encoding", asks='the sinusoidal positional encoding',
      forbids=("dlcourse.nn.PositionalEncoding",))
def positional_encoding_cases(rng):
    """The sinusoidal table PE (length, d_model), including an odd d_model and length 1."""
    return [(10, 8), (1, 4), (50, 16), (7, 5), (int(rng.integers(2, 30)), 2 * int(rng.integers(1, 12)))]


@part("ch12.layer_norm", "layer_norm", asks='layer normalization',
      forbids=("dlcourse.nn.LayerNorm", "dlcourse.nn.normalization._normalized_input_backward"))
def layer_norm_cases(rng):
    """Layer norm over the last axis of (*, D), with γ and β; D = 1 included."""
    cases = []
    for shape, eps, spread in [((4, 6), 1e-5, 1.0), ((2, 3, 5), 1e-5, 3.0), ((1, 8), 1e-3, 0.1),
                               ((5, 1), 1e-5, 1.0), ((3, 4), 1e-5, 100.0)]:
        x = rng.standard_normal(shape) * spread + rng.uniform(-5, 5)
        cases.append((x, rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1]), eps))
    return cases


