"""Chapter 12's graded parts: each reference answer agrees with PyTorch, computed here
independently, and `check` accepts the model solution and rejects typical mistakes."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
from parity import DEVICES, assert_close, to_torch
import exercise_support
from functools import partial

pytestmark = pytest.mark.ch12

NOTEBOOK = (Path(__file__).resolve().parents[1] / "solutions" / "ch12-attention-and-transformers"
            / "ch12-attention-and-transformers.ipynb")
SEEDS = [0, 1, 2]


solution = partial(exercise_support.solution, NOTEBOOK)


def reference(part_id, args):
    return get_part(part_id).reference(*args)


def test_chapter_has_the_six_parts():
    assert {p.function for p in parts_of("ch12")} == {
        "attention", "attention_backward", "split_heads", "merge_heads", "positional_encoding", "layer_norm"}


def test_every_query_keeps_a_key_in_the_masks():
    for seed in SEEDS:
        for query, key, _, mask in cases("ch12.attention", seed):
            full = np.broadcast_to(mask, (query.shape[0], query.shape[1], key.shape[1]))
            assert not full.all(axis=-1).any(), "a query with every key masked out has no softmax"


# ---------------------------------------------------------------------- attention
def torch_attention(q, k, v, mask):
    """Output from torch's fused SDPA (its boolean mask: True = takes part, hence ~mask);
    weights from torch operations (True = masked out, as torch.nn.MultiheadAttention)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=~mask)
    return output, weights


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_attention_reference_matches_torch(seed, device):
    for query, key, value, mask in cases("ch12.attention", seed):
        output, weights = reference("ch12.attention", (query, key, value, mask))
        expected_output, expected_weights = torch_attention(
            to_torch(query, device), to_torch(key, device), to_torch(value, device), to_torch(mask, device))
        assert_close(output, expected_output, np.float64, "attention output")
        assert_close(weights, expected_weights, np.float64, "attention weights")


@pytest.mark.parametrize("device", DEVICES)
def test_attention_mask_convention_is_torch_multihead_attentions(device):
    """With identity projections and one head, torch.nn.MultiheadAttention(attn_mask=mask) is
    exactly the exercise's attention: the same mask means the same thing (True = masked out)."""
    rng = np.random.default_rng(5)
    n, length, source, embed = 3, 4, 5, 6
    query, key, value = (rng.standard_normal((n, size, embed)) for size in (length, source, source))
    mask = rng.random((n, length, source)) < 0.4
    mask[..., 0] = False
    torch_layer = torch.nn.MultiheadAttention(embed, 1, batch_first=True, dtype=torch.float64).to(device)
    with torch.no_grad():
        torch_layer.in_proj_weight.copy_(torch.eye(embed).repeat(3, 1))
        torch_layer.in_proj_bias.zero_()
        torch_layer.out_proj.weight.copy_(torch.eye(embed))
        torch_layer.out_proj.bias.zero_()
        expected_output, expected_weights = torch_layer(
            to_torch(query, device), to_torch(key, device), to_torch(value, device), attn_mask=to_torch(mask, device))
    output, weights = reference("ch12.attention", (query, key, value, mask))
    assert_close(output, expected_output, np.float64, "attention output vs MultiheadAttention")
    assert_close(weights, expected_weights, np.float64, "attention weights vs MultiheadAttention")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_attention_backward_reference_matches_torch_autograd(seed, device):
    for grad_output, query, key, value, mask in cases("ch12.attention_backward", seed):
        q, k, v = (to_torch(a, device, requires_grad=True) for a in (query, key, value))
        F.scaled_dot_product_attention(q, k, v, attn_mask=~to_torch(mask, device)).backward(
            to_torch(grad_output, device))
        d_query, d_key, d_value = reference("ch12.attention_backward", (grad_output, query, key, value, mask))
        assert_close(d_query, q.grad, np.float64, "attention dQ")
        assert_close(d_key, k.grad, np.float64, "attention dK")
        assert_close(d_value, v.grad, np.float64, "attention dV")


# ---------------------------------------------------------------------- heads
@pytest.mark.parametrize("seed", SEEDS)
def test_split_heads_reference_matches_torch_view_transpose(seed):
    for x, heads in cases("ch12.split_heads", seed):
        n, length, embed = x.shape
        expected = torch.tensor(x).view(n, length, heads, embed // heads).transpose(1, 2)
        assert_close(reference("ch12.split_heads", (x, heads)), expected, np.float64, "split_heads")


@pytest.mark.parametrize("seed", SEEDS)
def test_merge_heads_reference_matches_torch_transpose_reshape(seed):
    for (x,) in cases("ch12.merge_heads", seed):
        n, heads, length, head_dim = x.shape
        expected = torch.tensor(x).transpose(1, 2).reshape(n, length, heads * head_dim)
        assert_close(reference("ch12.merge_heads", (x,)), expected, np.float64, "merge_heads")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("embed,heads", [(8, 2), (6, 3), (4, 4), (6, 1)])
def test_split_and_merge_references_rebuild_torch_multihead_attention(embed, heads, device):
    """torch.nn.MultiheadAttention = out_proj(merge(SDPA(split(q W_qᵀ + b_q), …))): the two
    references lay out the heads exactly as torch does."""
    rng = np.random.default_rng(embed * 10 + heads)
    n, length, source = 2, 3, 5
    query, key, value = (rng.standard_normal((n, size, embed)) for size in (length, source, source))
    torch.manual_seed(0)
    layer = torch.nn.MultiheadAttention(embed, heads, batch_first=True, dtype=torch.float64).to(device)
    with torch.no_grad():
        layer.in_proj_bias.normal_()
        expected, _ = layer(to_torch(query, device), to_torch(key, device), to_torch(value, device))
        w, b = layer.in_proj_weight.cpu().numpy(), layer.in_proj_bias.cpu().numpy()
        split = [reference("ch12.split_heads", (x @ w[i * embed:(i + 1) * embed].T + b[i * embed:(i + 1) * embed], heads))
                 for i, x in enumerate((query, key, value))]
        per_head = F.scaled_dot_product_attention(*(to_torch(s, device) for s in split)).cpu().numpy()
        merged = reference("ch12.merge_heads", (per_head,))
        rebuilt = layer.out_proj(to_torch(merged, device))
    assert_close(rebuilt, expected, np.float64, "MultiheadAttention from split/merge")


# ---------------------------------------------------------------------- positions, layer norm
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_positional_encoding_reference_matches_the_formula_in_torch(seed, device):
    for length, d_model in cases("ch12.positional_encoding", seed):
        position = torch.arange(length, dtype=torch.float64, device=device)[:, None]
        column = torch.arange(d_model, device=device)
        two_i = (column - column % 2).to(torch.float64)           # 2i for both columns 2i and 2i + 1
        angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64, device=device), two_i / d_model)
        expected = torch.where(column % 2 == 0, torch.sin(angle), torch.cos(angle))
        assert_close(reference("ch12.positional_encoding", (length, d_model)), expected, np.float64,
                     "PositionalEncoding table")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_layer_norm_reference_matches_torch(seed, device):
    for x, gamma, beta, eps in cases("ch12.layer_norm", seed):
        expected = F.layer_norm(to_torch(x, device), (x.shape[-1],), to_torch(gamma, device),
                                to_torch(beta, device), eps)
        assert_close(reference("ch12.layer_norm", (x, gamma, beta, eps)), expected, np.float64, "LayerNorm forward")


# ---------------------------------------------------------------------- check() itself
@pytest.mark.parametrize("function", ["attention", "attention_backward", "split_heads", "merge_heads",
                                      "positional_encoding", "layer_norm"])
@pytest.mark.parametrize("seed", [0, 7])
def test_check_accepts_the_model_solution(function, seed):
    check(f"ch12.{function}", solution(function), seed=seed)


def _softmax_weights(query, key, mask, scale=True):
    scores = query @ np.swapaxes(key, -1, -2) / (np.sqrt(query.shape[-1]) if scale else 1.0)
    scores = np.where(mask, -np.inf, scores)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def _unscaled_attention(query, key, value, mask):
    weights = _softmax_weights(query, key, mask, scale=False)
    return weights @ value, weights


def _backward_without_softmax_term(grad_output, query, key, value, mask):
    weights = _softmax_weights(query, key, mask)
    scale = 1 / np.sqrt(query.shape[-1])
    d_scores = weights * (grad_output @ np.swapaxes(value, -1, -2))
    return d_scores @ key * scale, np.swapaxes(d_scores, -1, -2) @ query * scale, np.swapaxes(weights, -1, -2) @ grad_output


def _positional_encoding_swapped(length, d_model):
    table = solution("positional_encoding")(length, d_model)
    return table[:, ::-1].copy()


def _layer_norm_eps_outside(x, gamma, beta, eps):
    centered = x - x.mean(axis=-1, keepdims=True)
    return gamma * centered / (x.std(axis=-1, keepdims=True) + eps) + beta


WRONG = {
    "attention": _unscaled_attention,
    "attention_backward": _backward_without_softmax_term,
    "split_heads": lambda x, h: x.reshape(x.shape[0], h, x.shape[1], x.shape[2] // h),
    "merge_heads": lambda x: x.reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
    "positional_encoding": _positional_encoding_swapped,
    "layer_norm": _layer_norm_eps_outside,
}


@pytest.mark.parametrize("function", sorted(WRONG))
def test_check_rejects_a_typical_mistake_naming_the_function(function):
    with pytest.raises(CheckFailure, match=rf"^{function}, case \d+ of \d+"):
        check(f"ch12.{function}", WRONG[function])


def test_check_rejects_the_inverted_mask_convention():
    """dlcourse.nn.ScaledDotProductAttention's convention (True = takes part) is not the exercise's."""
    def attention_takes_part(query, key, value, mask):
        return _unscaled_attention(query / np.sqrt(query.shape[-1]), key, value, ~np.asarray(mask))
    with pytest.raises(CheckFailure, match="attention"), np.errstate(invalid="ignore"):
        check("ch12.attention", attention_takes_part)


def test_check_rejects_a_wrong_number_of_return_values():
    with pytest.raises(CheckFailure, match="returned 1 value"):
        check("ch12.attention", lambda q, k, v, mask: solution("attention")(q, k, v, mask)[0])
