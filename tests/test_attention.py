"""Attention and the Transformer encoder against torch (chapter 12): ScaledDotProductAttention,
MultiheadAttention, TransformerEncoderLayer, TransformerEncoder, PositionalEncoding."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from dlcourse import nn
from dlcourse.gradcheck import check_module
from parity import DEVICES, DTYPES, TORCH_DTYPE, assert_close, assert_param_grads_close, load_from_torch, to_torch

pytestmark = pytest.mark.ch12


def torch_mask(mask, dtype, device):
    """A NumPy mask as torch wants it: booleans stay boolean, float masks take the input dtype."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    return to_torch(mask if mask.dtype == np.bool_ else mask.astype(dtype), device)


def causal_mask(length, source_length):
    """MultiheadAttention's convention: True above the diagonal = may NOT attend to the future."""
    return np.triu(np.ones((length, source_length), dtype=bool), k=1)


# ---------------------------------------------------------------- ScaledDotProductAttention
def sdpa_inputs(rng, lead, length, source_length, embed, value_embed, dtype):
    return (rng.standard_normal((*lead, length, embed)).astype(dtype),
            rng.standard_normal((*lead, source_length, embed)).astype(dtype),
            rng.standard_normal((*lead, source_length, value_embed)).astype(dtype))


def torch_attention_weights(qt, kt, scale, mask_t, is_causal):
    """softmax(Q Kᵀ·scale + M) written with torch operations, torch's SDPA mask rules."""
    scores = qt @ kt.transpose(-2, -1) * scale
    if is_causal:
        mask_t = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
    if mask_t is not None:
        scores = scores.masked_fill(~mask_t, float("-inf")) if mask_t.dtype == torch.bool else scores + mask_t
    return torch.softmax(scores, dim=-1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,length,source_length,embed,value_embed,mask_kind,scale", [
    ((2,), 3, 5, 4, 6, None, None),
    ((2, 3), 4, 4, 8, 8, "bool", None),
    ((1,), 5, 3, 4, 2, "float", 0.3),
    ((2, 2), 4, 6, 4, 4, "causal", None),
    ((3,), 6, 6, 2, 5, "bool_broadcast", None),
])
def test_scaled_dot_product_attention_matches_torch_functional(lead, length, source_length, embed, value_embed,
                                                                mask_kind, scale, dtype, device, rng):
    query, key, value = sdpa_inputs(rng, lead, length, source_length, embed, value_embed, dtype)
    mask = None
    if mask_kind in ("bool", "bool_broadcast"):
        shape = (length, source_length) if mask_kind == "bool_broadcast" else (*lead, length, source_length)
        mask = rng.random(shape) < 0.6
        mask[..., 0] = True  # every query keeps one key (a fully masked row is NaN in torch too)
    elif mask_kind == "float":
        mask = rng.standard_normal((*lead, length, source_length))
    attention = nn.ScaledDotProductAttention(is_causal=mask_kind == "causal", scale=scale)
    output, weights = attention(query, key, value, attn_mask=mask)

    qt, kt, vt = (to_torch(x, device, requires_grad=True) for x in (query, key, value))
    mask_t = torch_mask(mask, dtype, device)
    output_t = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask_t, is_causal=mask_kind == "causal",
                                              scale=scale)
    used_scale = 1 / math.sqrt(embed) if scale is None else scale
    assert_close(output, output_t, dtype, "ScaledDotProductAttention forward")
    assert_close(weights, torch_attention_weights(qt, kt, used_scale, mask_t, mask_kind == "causal"), dtype,
                 "ScaledDotProductAttention weights")
    grad_output = rng.standard_normal(output.shape).astype(dtype)
    grads = attention.backward(grad_output)
    output_t.backward(to_torch(grad_output, device))
    for name, ours, theirs in zip(("dquery", "dkey", "dvalue"), grads, (qt, kt, vt)):
        assert ours.dtype == dtype
        assert_close(ours, theirs.grad, dtype, f"ScaledDotProductAttention {name}")


def test_scaled_dot_product_attention_boolean_mask_true_means_take_part(rng):
    query, key, value = sdpa_inputs(rng, (2,), 3, 4, 4, 4, np.float64)
    takes_part = np.array([True, False, True, False])
    _, weights = nn.ScaledDotProductAttention()(query, key, value, attn_mask=takes_part)
    assert np.all(weights[..., ~takes_part] == 0) and np.all(weights[..., takes_part] > 0)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-12)


def test_gradcheck_of_scaled_dot_product_attention(rng):
    query, key, value = sdpa_inputs(rng, (2,), 3, 4, 3, 2, np.float64)
    mask = rng.standard_normal((3, 4))
    report = check_module(nn.ScaledDotProductAttention(scale=0.7), query, key, value, outputs=[0], attn_mask=mask)
    assert set(report.errors) == {"input 0", "input 1", "input 2"}
    assert report.worst < 1e-7, str(report)
    report = check_module(nn.ScaledDotProductAttention(is_causal=True), query, key, value, outputs=[0])
    assert report.worst < 1e-7, str(report)


def test_gradcheck_of_scaled_dot_product_attention_with_dropout_in_training(rng):
    query, key, value = sdpa_inputs(rng, (2,), 3, 4, 3, 2, np.float64)
    report = check_module(nn.ScaledDotProductAttention(dropout_p=0.4), query, key, value, outputs=[0])
    assert report.worst < 1e-7, str(report)


# ---------------------------------------------------------------- MultiheadAttention
def make_mha(embed_dim, num_heads, dtype, device, **kwargs):
    torch_mha = torch.nn.MultiheadAttention(embed_dim, num_heads, dtype=TORCH_DTYPE[np.dtype(dtype)], device=device,
                                            **kwargs)
    mha = nn.MultiheadAttention(embed_dim, num_heads, **kwargs)
    load_from_torch(mha, torch_mha)
    return mha, torch_mha


def run_mha(mha, torch_mha, query, key, value, dtype, device, self_attention=False, **forward_kwargs):
    """Forward and backward through both; compare output, weights, input and parameter gradients."""
    query, key, value = (x.astype(dtype) for x in (query, key, value))
    if self_attention:
        key = value = query
    masks = {name: torch_mask(forward_kwargs.get(name), dtype, device) for name in ("attn_mask", "key_padding_mask")}
    output, weights = mha(query, key, value, **forward_kwargs)

    if self_attention:
        xt = to_torch(query, device, requires_grad=True)
        qt = kt = vt = xt
    else:
        qt, kt, vt = (to_torch(x, device, requires_grad=True) for x in (query, key, value))
    output_t, weights_t = torch_mha(qt, kt, vt, **{**forward_kwargs, **masks})
    assert output.dtype == dtype
    assert_close(output, output_t, dtype, "MultiheadAttention forward")
    if weights_t is None:
        assert weights is None
    else:
        assert_close(weights, weights_t, dtype, "MultiheadAttention weights")

    grad_output = np.random.default_rng(7).standard_normal(output.shape).astype(dtype)
    grads = mha.backward(grad_output)
    output_t.backward(to_torch(grad_output, device))
    assert len(grads) == 3
    if self_attention:
        # The three gradients come back separately; x fed all three, so they add up.
        assert_close(grads[0] + grads[1] + grads[2], xt.grad, dtype, "MultiheadAttention dinput (self-attention)")
    else:
        for name, ours, theirs in zip(("dquery", "dkey", "dvalue"), grads, (qt, kt, vt)):
            assert_close(ours, theirs.grad, dtype, f"MultiheadAttention {name}")
    assert_param_grads_close(mha, torch_mha, dtype, "MultiheadAttention")
    return output, weights


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("add_bias_kv,add_zero_attn", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("with_masks", [False, True])
def test_multihead_attention_extra_keys_match_torch_batched_with_masks(add_bias_kv, add_zero_attn, with_masks,
                                                                      dtype, rng):
    mha, torch_mha = make_mha(8, 2, dtype, "cpu", add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn,
                              batch_first=True)
    assert set(mha.state_dict()) == set(torch_mha.state_dict())
    query, key = rng.standard_normal((3, 4, 8)), rng.standard_normal((3, 5, 8))
    masks = {}
    if with_masks:
        masks = {"attn_mask": rng.random((4, 5)) < 0.3,
                 "key_padding_mask": np.array([[False] * 5, [False] * 3 + [True] * 2, [True] + [False] * 4])}
    _, weights = run_mha(mha, torch_mha, query, key, key, dtype, "cpu", **masks)
    # One more column per extra key: torch's attention weights include them.
    assert weights.shape == (3, 4, 5 + add_bias_kv + add_zero_attn)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("embed_dim,num_heads,batch,length,source_length,bias", [
    (8, 2, 3, 4, 5, True), (6, 3, 2, 3, 3, False), (4, 1, 1, 6, 2, True),
])
def test_multihead_attention_matches_torch_distinct_query_key_value(embed_dim, num_heads, batch, length,
                                                                    source_length, bias, batch_first, dtype,
                                                                    device, rng):
    mha, torch_mha = make_mha(embed_dim, num_heads, dtype, device, bias=bias, batch_first=batch_first)
    lay = (lambda n, s: (n, s, embed_dim)) if batch_first else (lambda n, s: (s, n, embed_dim))
    run_mha(mha, torch_mha, rng.standard_normal(lay(batch, length)), rng.standard_normal(lay(batch, source_length)),
            rng.standard_normal(lay(batch, source_length)), dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_matches_torch_self_attention_gradients_summed(batch_first, dtype, device, rng):
    mha, torch_mha = make_mha(8, 4, dtype, device, batch_first=batch_first)
    x = rng.standard_normal((2, 5, 8))
    run_mha(mha, torch_mha, x, x, x, dtype, device, self_attention=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need_weights,average_attn_weights", [(True, True), (True, False), (False, True)])
def test_multihead_attention_returns_torch_weights_averaged_per_head_or_none(need_weights, average_attn_weights,
                                                                             dtype, device, rng):
    mha, torch_mha = make_mha(8, 2, dtype, device, batch_first=True)
    _, weights = run_mha(mha, torch_mha, rng.standard_normal((3, 4, 8)), rng.standard_normal((3, 6, 8)),
                         rng.standard_normal((3, 6, 8)), dtype, device, need_weights=need_weights,
                         average_attn_weights=average_attn_weights)
    if need_weights:
        assert weights.shape == ((3, 4, 6) if average_attn_weights else (3, 2, 4, 6))


def mask_case(kind, rng, batch, num_heads, length, source_length):
    """Forward keyword arguments for one masking scenario (MultiheadAttention's True = masked out)."""
    padding = np.zeros((batch, source_length), dtype=bool)
    padding[:, -1] = True
    padding[0, -2] = True
    if kind == "causal_bool":
        return {"attn_mask": causal_mask(length, source_length)}
    if kind == "causal_bool_is_causal_hint":
        return {"attn_mask": causal_mask(length, source_length), "is_causal": True, "need_weights": False}
    if kind == "additive_float":
        return {"attn_mask": rng.standard_normal((length, source_length))}
    if kind == "float_causal_minus_inf":
        return {"attn_mask": np.where(causal_mask(length, source_length), -np.inf, 0.0)}
    if kind == "3d_bool":
        mask = rng.random((batch * num_heads, length, source_length)) < 0.4
        mask[..., 0] = False
        return {"attn_mask": mask}
    if kind == "3d_float":
        return {"attn_mask": rng.standard_normal((batch * num_heads, length, source_length))}
    if kind == "key_padding":
        return {"key_padding_mask": padding}
    if kind == "key_padding_and_causal":
        return {"key_padding_mask": padding, "attn_mask": causal_mask(length, source_length)}
    if kind == "key_padding_and_3d_float":
        return {"key_padding_mask": np.where(padding, -np.inf, 0.0),
                "attn_mask": rng.standard_normal((batch * num_heads, length, source_length))}
    raise AssertionError(kind)


MASK_KINDS = ["causal_bool", "causal_bool_is_causal_hint", "additive_float", "float_causal_minus_inf", "3d_bool",
              "3d_float", "key_padding", "key_padding_and_causal", "key_padding_and_3d_float"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_multihead_attention_matches_torch_with_masks(kind, dtype, device, rng):
    batch, heads, length = 3, 2, 5
    mha, torch_mha = make_mha(8, heads, dtype, device)
    kwargs = mask_case(kind, rng, batch, heads, length, length)
    x = rng.standard_normal((length, batch, 8))
    run_mha(mha, torch_mha, x, rng.standard_normal((length, batch, 8)), rng.standard_normal((length, batch, 8)),
            dtype, device, average_attn_weights=False, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["key_padding_and_causal", "3d_bool"])
def test_multihead_attention_matches_torch_with_masks_batch_first_self_attention(kind, dtype, device, rng):
    batch, heads, length = 2, 4, 4
    mha, torch_mha = make_mha(8, heads, dtype, device, batch_first=True)
    x = rng.standard_normal((batch, length, 8))
    run_mha(mha, torch_mha, x, x, x, dtype, device, self_attention=True,
            **mask_case(kind, rng, batch, heads, length, length))


def test_multihead_attention_masked_keys_get_zero_weight(rng):
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    padding = np.array([[False, False, True], [False, True, True]])
    _, weights = mha(x, x, x, key_padding_mask=padding, average_attn_weights=False)
    assert np.all(weights[0, :, :, 2] == 0) and np.all(weights[1, :, :, 1:] == 0)
    _, weights = mha(x, x, x, attn_mask=causal_mask(3, 3))
    assert np.all(np.triu(weights[0], k=1) == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [{}, {"average_attn_weights": False}, {"need_weights": False}])
@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_matches_torch_unbatched(kwargs, batch_first, dtype, device, rng):
    mha, torch_mha = make_mha(6, 2, dtype, device, batch_first=batch_first)
    run_mha(mha, torch_mha, rng.standard_normal((4, 6)), rng.standard_normal((3, 6)), rng.standard_normal((3, 6)),
            dtype, device, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_multihead_attention_matches_torch_unbatched_with_1d_padding_and_3d_mask(dtype, device, rng):
    mha, torch_mha = make_mha(6, 3, dtype, device)
    attn_mask = rng.random((3, 4, 5)) < 0.3
    attn_mask[..., 0] = False
    run_mha(mha, torch_mha, rng.standard_normal((4, 6)), rng.standard_normal((5, 6)), rng.standard_normal((5, 6)),
            dtype, device, key_padding_mask=np.array([False, False, False, True, True]), attn_mask=attn_mask)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_multihead_attention_eval_mode_switches_dropout_off_as_torch(dtype, device, rng):
    mha, torch_mha = make_mha(8, 2, dtype, device, dropout=0.5)
    mha.eval()
    torch_mha.eval()
    run_mha(mha, torch_mha, rng.standard_normal((4, 2, 8)), rng.standard_normal((3, 2, 8)),
            rng.standard_normal((3, 2, 8)), dtype, device, average_attn_weights=False)


def test_multihead_attention_dropout_in_training_zeroes_and_rescales_weights(rng):
    mha = nn.MultiheadAttention(8, 2, dropout=0.25, batch_first=True).double()
    x = rng.standard_normal((4, 6, 8))
    _, dropped = mha(x, x, x, average_attn_weights=False)
    _, clean = mha.eval()(x, x, x, average_attn_weights=False)
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], clean[kept] / 0.75, rtol=1e-12)
    assert 0.15 < 1 - kept.mean() < 0.35


def test_gradcheck_of_multihead_attention(rng):
    mha = nn.MultiheadAttention(4, 2)
    query, key, value = rng.standard_normal((3, 2, 4)), rng.standard_normal((5, 2, 4)), rng.standard_normal((5, 2, 4))
    padding = np.array([[False] * 4 + [True], [False] * 5])
    report = check_module(mha, query, key, value, outputs=[0], key_padding_mask=padding,
                          attn_mask=rng.standard_normal((3, 5)))
    assert set(report.errors) == {"input 0", "input 1", "input 2", "in_proj_weight", "in_proj_bias",
                                  "out_proj.weight", "out_proj.bias"}
    assert report.worst < 1e-7, str(report)


def test_gradcheck_of_multihead_attention_with_dropout_in_training_unbatched(rng):
    mha = nn.MultiheadAttention(4, 2, dropout=0.3, bias=False, batch_first=True)
    report = check_module(mha, rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4)),
                          outputs=[0], need_weights=False)
    assert report.worst < 1e-7, str(report)


def test_multihead_attention_has_torch_state_dict_and_init():
    mha = nn.MultiheadAttention(64, 8)
    torch_mha = torch.nn.MultiheadAttention(64, 8)
    assert list(mha.state_dict()) == list(torch_mha.state_dict()) == [
        "in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    for key, value in torch_mha.state_dict().items():
        assert mha.state_dict()[key].shape == tuple(value.shape)
        assert mha.state_dict()[key].dtype == np.float32
    assert [name for name, _ in mha.named_modules()] == [name for name, _ in torch_mha.named_modules()]
    bound = math.sqrt(6 / (64 + 3 * 64))  # xavier_uniform_ on the (3E, E) matrix
    assert np.abs(mha.in_proj_weight).max() <= bound
    assert abs(mha.in_proj_weight.std() - torch_mha.in_proj_weight.std().item()) / bound < 0.05
    assert not mha.in_proj_bias.any() and not mha.out_proj.bias.any()
    assert nn.MultiheadAttention(4, 2, bias=False).state_dict().keys() == \
        torch.nn.MultiheadAttention(4, 2, bias=False).state_dict().keys()
    assert nn.MultiheadAttention(4, 2, dtype=np.float64).in_proj_weight.dtype == np.float64


def test_multihead_attention_gradients_accumulate_until_zero_grad(rng):
    mha = nn.MultiheadAttention(4, 2)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    grad_output = rng.standard_normal((3, 2, 4)).astype(np.float32)
    mha(x, x, x)
    mha.backward(grad_output)
    once = {name: grad.copy() for name, grad in mha.named_gradients()}
    mha(x, x, x)
    mha.backward(grad_output)
    for name, grad in mha.named_gradients():
        np.testing.assert_allclose(grad, 2 * once[name], rtol=1e-5, atol=1e-7)
    mha.zero_grad()
    assert not any(grad.any() for _, grad in mha.named_gradients())


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 5), source_length=st.integers(1, 5),
       head_dim=st.integers(1, 3), num_heads=st.integers(1, 3), batch_first=st.booleans())
def test_multihead_attention_matches_torch_on_generated_shapes(batch, length, source_length, head_dim, num_heads,
                                                              batch_first):
    embed_dim = head_dim * num_heads
    mha, torch_mha = make_mha(embed_dim, num_heads, np.float64, "cpu", batch_first=batch_first)
    rng = np.random.default_rng(batch * 100 + length * 10 + source_length)
    lay = (lambda s: (batch, s, embed_dim)) if batch_first else (lambda s: (s, batch, embed_dim))
    run_mha(mha, torch_mha, rng.standard_normal(lay(length)), rng.standard_normal(lay(source_length)),
            rng.standard_normal(lay(source_length)), np.float64, "cpu")


@pytest.mark.parametrize("kwargs,message", [
    ({"embed_dim": 10, "num_heads": 3}, r"embed_dim must be divisible by num_heads, got embed_dim=10 and num_heads=3"),
    ({"embed_dim": 0, "num_heads": 1}, r"must be greater than 0"),
    ({"embed_dim": 8, "num_heads": 2, "kdim": 5}, r"kdim/vdim different from embed_dim=8 are not supported"),
    ({"embed_dim": 8, "num_heads": 2, "vdim": 3}, r"kdim/vdim different from embed_dim=8 are not supported"),
])
def test_multihead_attention_rejects_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nn.MultiheadAttention(**kwargs)


def test_multihead_attention_accepts_kdim_vdim_equal_to_embed_dim():
    assert nn.MultiheadAttention(8, 2, kdim=8, vdim=8).state_dict().keys() == \
        torch.nn.MultiheadAttention(8, 2, kdim=8, vdim=8).state_dict().keys()


X = np.ones((3, 2, 8))
Y = np.ones((5, 2, 8))


@pytest.mark.parametrize("args,kwargs,error,message", [
    ((np.ones((3, 2, 6)), Y, Y), {}, ValueError,
     r"expects query of shape \(L, 8\) or \(L, N, 8\), got shape \(3, 2, 6\)"),
    ((np.ones((2, 3, 2, 8)), Y, Y), {}, ValueError, r"expects query of shape .*got shape \(2, 3, 2, 8\)"),
    ((X, np.ones((5, 2, 7)), Y), {}, ValueError,
     r"expects key of shape \(S, 2, 8\) to go with query of shape \(3, 2, 8\), got shape \(5, 2, 7\)"),
    ((X, np.ones((5, 3, 8)), np.ones((5, 3, 8))), {}, ValueError, r"expects key of shape \(S, 2, 8\)"),
    ((X, Y, np.ones((4, 2, 8))), {}, ValueError, r"key and value of the same shape, got \(5, 2, 8\) and \(4, 2, 8\)"),
    ((X, np.ones((5, 8)), np.ones((5, 8))), {}, ValueError, r"expects key of shape \(S, 2, 8\)"),
    ((X, Y, Y), {"attn_mask": np.zeros((3, 4), bool)}, ValueError,
     r"attn_mask of shape \(L, S\) = \(3, 5\) or \(N·num_heads, L, S\) = \(4, 3, 5\), got shape \(3, 4\)"),
    ((X, Y, Y), {"attn_mask": np.zeros((2, 3, 5))}, ValueError, r"\(N·num_heads, L, S\) = \(4, 3, 5\)"),
    ((X, Y, Y), {"key_padding_mask": np.zeros((5, 2), bool)}, ValueError,
     r"key_padding_mask of shape \(N, S\) = \(2, 5\), got shape \(5, 2\)"),
    ((X, Y, Y), {"attn_mask": np.zeros((3, 5), np.int64)}, TypeError, r"attn_mask of dtype bool or float, got int64"),
    ((X, Y, Y), {"key_padding_mask": np.zeros((2, 5), np.int32)}, TypeError,
     r"key_padding_mask of dtype bool or float, got int32"),
    ((X.astype(np.int64), Y, Y), {}, TypeError, r"floating-point query"),
    ((X.astype(np.float32), Y, Y), {}, TypeError, r"query, key and value of one dtype"),
    ((X, Y, Y), {"is_causal": True}, ValueError, r"is_causal=True is a hint .* pass attn_mask too"),
])
def test_multihead_attention_rejects_bad_input_with_a_clear_message(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        nn.MultiheadAttention(8, 2)(*args, **kwargs)


def test_multihead_attention_rejects_wrong_grad_output_shape_and_backward_before_forward():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    with pytest.raises(RuntimeError, match=r"MultiheadAttention.backward\(\) was called before forward\(\)"):
        mha.backward(np.ones((2, 3, 8)))
    mha(np.ones((2, 3, 8)), np.ones((2, 5, 8)), np.ones((2, 5, 8)))
    with pytest.raises(ValueError, match=r"grad_output of shape \(2, 3, 8\), got \(3, 2, 8\)"):
        mha.backward(np.ones((3, 2, 8)))


@pytest.mark.parametrize("args,kwargs,message", [
    ((np.ones((2, 3, 4)), np.ones((2, 5, 3)), np.ones((2, 5, 4))), {}, r"query \(\*, L, E\), key \(\*, S, E\)"),
    ((np.ones((2, 3, 4)), np.ones((2, 5, 4)), np.ones((2, 4, 4))), {}, r"got shapes \(2, 3, 4\), \(2, 5, 4\)"),
    ((np.ones(4), np.ones(4), np.ones(4)), {}, r"query \(\*, L, E\)"),
    ((np.ones((2, 3, 4)), np.ones((2, 5, 4)), np.ones((2, 5, 4))), {"attn_mask": np.ones((3, 4), bool)},
     r"attn_mask broadcastable to \(2, 3, 5\) \(\*, L, S\), got shape \(3, 4\)"),
    ((np.ones((2, 3, 4)), np.ones((2, 5, 4)), np.ones((2, 5, 4))), {"attn_mask": np.ones((4, 2, 3, 5))},
     r"attn_mask broadcastable to \(2, 3, 5\) \(\*, L, S\), got shape \(4, 2, 3, 5\)"),
])
def test_scaled_dot_product_attention_rejects_bad_shapes(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        nn.ScaledDotProductAttention()(*args, **kwargs)


def test_scaled_dot_product_attention_rejects_mask_with_is_causal_and_backward_before_forward():
    x = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match="either attn_mask or is_causal=True, not both"):
        nn.ScaledDotProductAttention(is_causal=True)(x, x, x, attn_mask=np.ones((3, 3), bool))
    with pytest.raises(RuntimeError, match=r"ScaledDotProductAttention.backward\(\) was called before forward"):
        nn.ScaledDotProductAttention().backward(x)


# ---------------------------------------------------------------- TransformerEncoderLayer / TransformerEncoder
def make_encoder_layer(dtype, device, d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, **kwargs):
    torch_layer = torch.nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, dtype=TORCH_DTYPE[
        np.dtype(dtype)], device=device, **kwargs)
    layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, **kwargs)
    load_from_torch(layer, torch_layer)
    return layer, torch_layer


def run_encoder(module, torch_module, src, dtype, device, **forward_kwargs):
    src = src.astype(dtype)
    name = type(module).__name__
    masks = {key: torch_mask(value, dtype, device) for key, value in forward_kwargs.items()
             if key.endswith("mask")}
    output = module(src, **forward_kwargs)
    src_t = to_torch(src, device, requires_grad=True)
    output_t = torch_module(src_t, **{**forward_kwargs, **masks})
    assert output.dtype == dtype
    assert_close(output, output_t, dtype, f"{name} forward")
    grad_output = np.random.default_rng(7).standard_normal(output.shape).astype(dtype)
    grad_src = module.backward(grad_output)
    output_t.backward(to_torch(grad_output, device))
    assert_close(grad_src, src_t.grad, dtype, f"{name} dsrc")
    assert_param_grads_close(module, torch_module, dtype, name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_encoder_layer_matches_torch_training_mode(activation, norm_first, batch_first, dtype, device,
                                                               rng):
    layer, torch_layer = make_encoder_layer(dtype, device, activation=activation, norm_first=norm_first,
                                            batch_first=batch_first)
    run_encoder(layer, torch_layer, rng.standard_normal((3, 5, 8)), dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer_matches_torch_with_causal_and_padding_masks(norm_first, dtype, device, rng):
    layer, torch_layer = make_encoder_layer(dtype, device, d_model=12, nhead=3, dim_feedforward=10,
                                            norm_first=norm_first, batch_first=True, layer_norm_eps=1e-3)
    padding = np.zeros((2, 6), dtype=bool)
    padding[1, 4:] = True
    run_encoder(layer, torch_layer, rng.standard_normal((2, 6, 12)), dtype, device, src_mask=causal_mask(6, 6),
                src_key_padding_mask=padding, is_causal=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_transformer_encoder_layer_matches_torch_eval_mode_unbatched_no_bias(dtype, device, rng):
    layer, torch_layer = make_encoder_layer(dtype, device, dropout=0.3, bias=False, activation="gelu")
    layer.eval()
    torch_layer.eval()
    assert "norm1.bias" not in layer.state_dict()
    run_encoder(layer, torch_layer, rng.standard_normal((5, 8)), dtype, device,
                src_mask=rng.standard_normal((5, 5)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer_eval_matches_torch_fast_path_inference(norm_first, dtype, device, rng):
    layer, torch_layer = make_encoder_layer(dtype, device, dropout=0.1, batch_first=True, norm_first=norm_first,
                                            activation="gelu")
    layer.eval()
    torch_layer.eval()
    src = rng.standard_normal((2, 4, 8)).astype(dtype)
    padding = np.array([[False, False, False, True], [False, False, False, False]])
    with torch.no_grad():  # no parameter needs a gradient: torch takes its fused inference kernel
        expected = torch_layer(to_torch(src, device), src_key_padding_mask=to_torch(padding, device))
    assert_close(layer(src, src_key_padding_mask=padding), expected, dtype, "TransformerEncoderLayer forward fast path")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_matches_torch_two_layers_and_final_layer_norm(norm_first, dtype, device, rng):
    tdtype = TORCH_DTYPE[np.dtype(dtype)]
    torch_layer = torch.nn.TransformerEncoderLayer(8, 2, 12, 0.0, norm_first=norm_first, dtype=tdtype, device=device)
    torch_encoder = torch.nn.TransformerEncoder(torch_layer, 2, norm=torch.nn.LayerNorm(8, dtype=tdtype,
                                                device=device), enable_nested_tensor=False)
    for parameter in torch_encoder.parameters():  # the copies start equal; make the layers differ
        parameter.data += 0.1 * torch.randn_like(parameter)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 12, 0.0, norm_first=norm_first), 2,
                                    norm=nn.LayerNorm(8), enable_nested_tensor=False)
    assert list(encoder.state_dict()) == list(torch_encoder.state_dict())
    assert [name for name, _ in encoder.named_modules()] == [name for name, _ in torch_encoder.named_modules()]
    load_from_torch(encoder, torch_encoder)
    padding = np.zeros((3, 4), dtype=bool)
    padding[2, 3] = True
    run_encoder(encoder, torch_encoder, rng.standard_normal((4, 3, 8)), dtype, device, src_key_padding_mask=padding)


def test_transformer_encoder_layers_are_independent_deep_copies():
    layer = nn.TransformerEncoderLayer(4, 2, 8)
    encoder = nn.TransformerEncoder(layer, 3)
    assert len(encoder.layers) == 3 and encoder.norm is None
    assert encoder.layers[0].linear1.weight is not encoder.layers[1].linear1.weight
    np.testing.assert_array_equal(encoder.layers[0].linear1.weight, encoder.layers[2].linear1.weight)
    assert encoder.layers[0] is not layer


def test_transformer_encoder_layer_has_torch_state_dict_and_module_names():
    layer = nn.TransformerEncoderLayer(16, 4)
    torch_layer = torch.nn.TransformerEncoderLayer(16, 4)
    assert list(layer.state_dict()) == list(torch_layer.state_dict())
    for key, value in torch_layer.state_dict().items():
        assert layer.state_dict()[key].shape == tuple(value.shape)
    assert [name for name, _ in layer.named_modules()] == [name for name, _ in torch_layer.named_modules()]
    assert layer.dropout.p == layer.dropout1.p == layer.dropout2.p == layer.self_attn.dropout == 0.1


def test_transformer_encoder_layer_registers_a_module_activation_as_torch():
    layer = nn.TransformerEncoderLayer(4, 2, 8, activation=nn.GELU())
    torch_layer = torch.nn.TransformerEncoderLayer(4, 2, 8, activation=torch.nn.GELU())
    assert [name for name, _ in layer.named_modules()] == [name for name, _ in torch_layer.named_modules()]


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_gradcheck_of_transformer_encoder_layer(norm_first, activation, rng):
    layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, activation=activation, norm_first=norm_first)
    report = check_module(layer, rng.standard_normal((3, 2, 4)), src_mask=causal_mask(3, 3))
    assert report.worst < 1e-6, str(report)


def test_gradcheck_of_transformer_encoder_layer_with_dropout_in_training(rng):
    layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.2, activation="gelu", batch_first=True)
    report = check_module(layer, rng.standard_normal((2, 3, 4)))
    assert report.worst < 1e-6, str(report)


def test_gradcheck_of_transformer_encoder(rng):
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 5, dropout=0.0, activation="gelu"), 2,
                                    norm=nn.LayerNorm(4))
    report = check_module(encoder, rng.standard_normal((3, 2, 4)))
    assert report.worst < 1e-6, str(report)


@pytest.mark.parametrize("make,message", [
    (lambda: nn.TransformerEncoderLayer(8, 3), r"embed_dim must be divisible by num_heads"),
    (lambda: nn.TransformerEncoderLayer(8, 2, activation="tanh"), r"activation should be 'relu', 'gelu' or a"),
    (lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), 0), r"num_layers must be at least 1"),
])
def test_transformer_rejects_bad_constructor_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_transformer_encoder_layer_rejects_bad_input_with_a_clear_message():
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    with pytest.raises(ValueError, match=r"TransformerEncoderLayer expects src of shape \(L, 8\) or \(N, L, 8\), "
                                         r"got shape \(2, 3, 6\)"):
        layer(np.ones((2, 3, 6)))
    with pytest.raises(TypeError, match="floating-point src"):
        layer(np.ones((2, 3, 8), dtype=np.int32))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(L, S\) = \(3, 3\)"):
        layer(np.ones((2, 3, 8)), src_mask=np.zeros((4, 4), bool))
    with pytest.raises(RuntimeError, match=r"TransformerEncoderLayer.backward\(\) was called before forward"):
        nn.TransformerEncoderLayer(8, 2).backward(np.ones((3, 2, 8)))
    with pytest.raises(RuntimeError, match=r"TransformerEncoder.backward\(\) was called before forward"):
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), 2).backward(np.ones((3, 2, 8)))


# ---------------------------------------------------------------- PositionalEncoding
def torch_sinusoid_table(max_len, d_model):
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)), in torch ops."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), two_i / d_model)
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)[:, : d_model // 2]
    return table


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d_model,shape,batch_first", [
    (8, (5, 3, 8), False), (8, (3, 5, 8), True), (7, (6, 7), False), (16, (2, 50, 16), True),
])
def test_positional_encoding_matches_the_sinusoid_formula(d_model, shape, batch_first, dtype, device, rng):
    encoding = nn.PositionalEncoding(d_model, max_len=60, batch_first=batch_first)
    table = torch_sinusoid_table(60, d_model).to(device)
    assert_close(encoding.pe, table, np.float64, "PositionalEncoding table")
    x = rng.standard_normal(shape).astype(dtype)
    length = shape[1] if batch_first else shape[0]
    rows = table[:length].to(TORCH_DTYPE[np.dtype(dtype)])
    expected = to_torch(x, device) + (rows[:, None, :] if len(shape) == 3 and not batch_first else rows)
    output = encoding(x)
    assert output.dtype == dtype
    assert_close(output, expected, dtype, "PositionalEncoding forward")
    grad_output = rng.standard_normal(shape).astype(dtype)
    assert_close(encoding.backward(grad_output), grad_output, dtype, "PositionalEncoding dinput")


@pytest.mark.parametrize("d_model", [2, 16, 512])
def test_positional_encoding_rows_have_norm_sqrt_half_d_model(d_model):
    table = nn.PositionalEncoding(d_model, max_len=1000).pe
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), math.sqrt(d_model / 2), rtol=1e-12)


def test_positional_encoding_is_not_in_state_dict_and_has_no_parameters():
    encoding = nn.PositionalEncoding(8, max_len=100, dropout=0.1)
    assert encoding.state_dict() == {} and encoding.num_parameters() == 0
    assert encoding.pe.shape == (100, 8)


def test_positional_encoding_dropout_masks_the_gradient_as_the_output(rng):
    encoding = nn.PositionalEncoding(8, max_len=10, dropout=0.5)
    x = rng.standard_normal((6, 2, 8))
    output = encoding(x)
    kept = output != 0
    np.testing.assert_allclose(output[kept], (x + encoding.pe[:6, None, :])[kept] * 2, rtol=1e-12)
    np.testing.assert_allclose(encoding.backward(np.ones_like(x)), kept * 2.0)
    assert np.array_equal(encoding.eval()(x), x + encoding.pe[:6, None, :])


def test_gradcheck_of_positional_encoding(rng):
    report = check_module(nn.PositionalEncoding(6, max_len=8, dropout=0.3), rng.standard_normal((4, 2, 6)))
    assert report.worst < 1e-7, str(report)


def test_positional_encoding_rejects_bad_input_with_a_clear_message():
    encoding = nn.PositionalEncoding(8, max_len=4)
    with pytest.raises(ValueError, match=r"PositionalEncoding expects input of shape \(L, 8\) or \(L, N, 8\), "
                                         r"got shape \(3, 2, 5\)"):
        encoding(np.ones((3, 2, 5)))
    with pytest.raises(ValueError, match="sequence of length 5, longer than max_len=4"):
        encoding(np.ones((5, 2, 8)))
    with pytest.raises(TypeError, match="floating-point input"):
        encoding(np.ones((3, 2, 8), dtype=np.int64))
    with pytest.raises(RuntimeError, match=r"PositionalEncoding.backward\(\) was called before forward"):
        encoding.backward(np.ones((3, 2, 8)))
