"""The answer key of ch12: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch12`.
"""
import numpy as np
from dlcourse import nn

from dlcourse.answers import reference
from dlcourse.checks.ch12 import _AttentionStandIn, _attention, _identity_attention


@reference('ch12.attention')
def attention_reference(query, key, value, mask):
    _, output, weights = _attention(query, key, value, mask)
    return output, weights


@reference('ch12.attention_backward')
def attention_backward_reference(grad_output, query, key, value, mask):
    layer, _, _ = _attention(query, key, value, mask)
    return layer.backward(grad_output)


@reference('ch12.split_heads')
def split_heads_reference(x, num_heads):
    stand_in = _AttentionStandIn()
    layer = _identity_attention(x.shape[-1], num_heads, stand_in)
    layer(x, x, x, need_weights=False)
    return stand_in.seen_query


@reference('ch12.merge_heads')
def merge_heads_reference(x):
    n, heads, length, head_dim = x.shape
    layer = _identity_attention(heads * head_dim, heads, _AttentionStandIn(heads=x))
    queries = np.zeros((n, length, heads * head_dim))
    output, _ = layer(queries, queries, queries, need_weights=False)
    return output


@reference('ch12.positional_encoding')
def positional_encoding_reference(length, d_model):
    encoding = nn.PositionalEncoding(d_model, max_len=length)
    return encoding(np.zeros((length, d_model)))


@reference('ch12.layer_norm')
def layer_norm_reference(x, gamma, beta, eps):
    layer = nn.LayerNorm(x.shape[-1], eps=eps, dtype=np.float64)
    layer.weight[...] = gamma
    layer.bias[...] = beta
    return layer(x)
