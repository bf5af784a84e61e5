"""Optimizers, learning-rate schedules and gradient clipping against torch.optim (chapter 6).

Every trajectory test starts both sides from the same parameters, feeds both the same
gradient sequence (torch's autograd gradients of a real loss, copied into the dlcourse
module's grads), steps both, and compares every parameter after every step.
"""
import inspect
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dlcourse import nn, optim
from dlcourse.nn.utils import clip_grad_norm_, clip_grad_value_
from dlcourse.optim import lr_scheduler
from parity import DEVICES, DTYPES, TORCH_DTYPE, assert_close, load_from_torch, to_torch

pytestmark = pytest.mark.ch06

OPTIMIZER_NAMES = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]

# Each optimizer over a grid of its options (a trajectory of STEPS steps for each).
CASES = [
    ("SGD", {}),
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.05, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.02, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-6}),
    ("Adagrad", {"lr": 0.05, "lr_decay": 0.05, "weight_decay": 0.01, "initial_accumulator_value": 0.1,
                 "maximize": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.01, "centered": True}),
    ("RMSprop", {"lr": 0.005, "centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "eps": 1e-4, "weight_decay": 0.01, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99)}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adam", {"lr": 0.01, "eps": 1e-3, "maximize": True}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.0}),
    ("AdamW", {"lr": 0.01, "amsgrad": True, "betas": (0.5, 0.9)}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.05, "amsgrad": True, "maximize": True}),
]
STEPS = 12


def case_id(case):
    name, kwargs = case
    return name + "".join(f"-{key}={value}" for key, value in kwargs.items())


def twin_models(dtype, device, sizes=(4, 3, 2), seed=0):
    """A torch Sequential of Linears on `device` and its dlcourse twin with the same parameters."""
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    torch_model = torch.nn.Sequential(*layers).to(device=device, dtype=TORCH_DTYPE[np.dtype(dtype)])
    model = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
    load_from_torch(model, torch_model)
    return model, torch_model


def torch_gradients(torch_model, x, device):
    """Fill torch's .grad with the gradient of a real loss, Σ log(1 + (f(x) − 0.5)²) + Σ sin 2f(x).

    Its gradients are bounded, so trajectories with maximize=True stay finite too.
    """
    for p in torch_model.parameters():
        p.grad = None
    y = torch_model(to_torch(x, device))
    loss = torch.log1p((y - 0.5) ** 2).sum() + torch.sin(2 * y).sum()
    loss.backward()


def copy_gradients(model, torch_model):
    """Give the dlcourse module torch's gradients, through its own grads arrays."""
    model.zero_grad()
    torch_params = dict(torch_model.named_parameters())
    for name, grad in model.named_gradients():
        grad += torch_params[name].grad.detach().cpu().numpy()


def assert_params_close(model, torch_model, dtype, what):
    torch_params = dict(torch_model.named_parameters())
    for name, value in model.named_parameters():
        assert_close(value, torch_params[name], dtype, f"{what} {name}")


def run_trajectories(ours, theirs, model, torch_model, dtype, device, steps=STEPS,
                     schedulers=None, seed=0):
    """Step `ours` and `theirs` on the same gradients; compare every parameter after every step."""
    rng = np.random.default_rng(seed)
    label = type(ours).__name__
    for step in range(steps):
        torch_gradients(torch_model, rng.standard_normal((5, model[0].in_features)).astype(dtype), device)
        copy_gradients(model, torch_model)
        theirs.step()
        ours.step()
        if schedulers is not None:
            schedulers[0].step()
            schedulers[1].step()
            assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12)
        assert_params_close(model, torch_model, dtype, f"{label} step {step}")


# ---------------------------------------------------------------------------- trajectories
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_optimizer_trajectory_matches_torch_for_each_option(case, dtype, device):
    name, kwargs = case
    model, torch_model = twin_models(dtype, device)
    ours = getattr(optim, name)(model, **kwargs)
    theirs = getattr(torch.optim, name)(torch_model.parameters(), **kwargs)
    run_trajectories(ours, theirs, model, torch_model, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_trajectory_matches_torch_on_a_deeper_model_with_default_options(name, dtype, device):
    model, torch_model = twin_models(dtype, device, sizes=(6, 8, 5, 3), seed=3)
    ours = getattr(optim, name)(model)
    theirs = getattr(torch.optim, name)(torch_model.parameters())
    run_trajectories(ours, theirs, model, torch_model, dtype, device, steps=15, seed=3)


@settings(max_examples=20, deadline=None)
@given(lr=st.floats(1e-4, 0.1), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999),
       eps=st.floats(1e-10, 1e-2), weight_decay=st.floats(0.0, 0.5), amsgrad=st.booleans(),
       maximize=st.booleans(), decoupled=st.booleans())
def test_adam_trajectory_matches_torch_for_generated_hyper_parameters(lr, beta1, beta2, eps, weight_decay,
                                                                      amsgrad, maximize, decoupled):
    kwargs = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                  maximize=maximize, decoupled_weight_decay=decoupled)
    model, torch_model = twin_models(np.float64, "cpu")
    ours = optim.Adam(model, **kwargs)
    theirs = torch.optim.Adam(torch_model.parameters(), **kwargs)
    run_trajectories(ours, theirs, model, torch_model, np.float64, "cpu", steps=10)


@settings(max_examples=20, deadline=None)
@given(lr=st.floats(1e-4, 0.1), momentum=st.floats(0.0, 0.99), dampening=st.floats(0.0, 1.0),
       weight_decay=st.floats(0.0, 0.5), nesterov=st.booleans(), maximize=st.booleans())
def test_sgd_trajectory_matches_torch_for_generated_hyper_parameters(lr, momentum, dampening, weight_decay,
                                                                     nesterov, maximize):
    if nesterov:
        momentum, dampening = max(momentum, 0.1), 0.0
    kwargs = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                  nesterov=nesterov, maximize=maximize)
    model, torch_model = twin_models(np.float64, "cpu")
    ours = optim.SGD(model, **kwargs)
    theirs = torch.optim.SGD(torch_model.parameters(), **kwargs)
    run_trajectories(ours, theirs, model, torch_model, np.float64, "cpu", steps=10)


# ---------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_constructor_arguments_and_defaults_are_torchs(name):
    ours = inspect.signature(getattr(optim, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    for argument, parameter in ours.items():
        assert argument in theirs, f"{name} has {argument!r}, torch does not"
        assert parameter.default == theirs[argument].default, f"{name} default of {argument!r}"
    positional = [a for a, p in ours.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == [a for a, p in theirs.items() if p.kind is p.POSITIONAL_OR_KEYWORD][:len(positional)]


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_param_groups_hold_torchs_hyper_parameters(name):
    model, torch_model = twin_models(np.float64, "cpu")
    ours = getattr(optim, name)(model).param_groups
    theirs = getattr(torch.optim, name)(torch_model.parameters()).param_groups
    assert len(ours) == 1 and ours[0] == {key: theirs[0][key] for key in ours[0]}


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_rejects_unsupported_torch_arguments_instead_of_ignoring_them(name):
    model, _ = twin_models(np.float32, "cpu")
    for argument in ("foreach", "fused", "differentiable"):
        with pytest.raises(TypeError, match=argument):
            getattr(optim, name)(model, **{argument: True})


@pytest.mark.parametrize("name,kwargs,message", [
    ("SGD", {"lr": -1}, "Invalid learning rate: -1"),
    ("SGD", {"lr": 0.1, "momentum": -0.5}, "Invalid momentum value: -0.5"),
    ("SGD", {"lr": 0.1, "weight_decay": -1e-4}, "Invalid weight_decay value: -0.0001"),
    ("SGD", {"lr": 0.1, "nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
     "Nesterov momentum requires a momentum and zero dampening"),
    ("Adagrad", {"lr": -0.01}, "Invalid learning rate: -0.01"),
    ("Adagrad", {"lr_decay": -1}, "Invalid lr_decay value: -1"),
    ("Adagrad", {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    ("Adagrad", {"initial_accumulator_value": -0.1}, "Invalid initial_accumulator_value value: -0.1"),
    ("Adagrad", {"eps": -1e-10}, "Invalid epsilon value: -1e-10"),
    ("RMSprop", {"lr": -1}, "Invalid learning rate: -1"),
    ("RMSprop", {"eps": -1}, "Invalid epsilon value: -1"),
    ("RMSprop", {"momentum": -1}, "Invalid momentum value: -1"),
    ("RMSprop", {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    ("RMSprop", {"alpha": -0.5}, "Invalid alpha value: -0.5"),
    ("Adam", {"lr": -1e-3}, "Invalid learning rate: -0.001"),
    ("Adam", {"eps": -1}, "Invalid epsilon value: -1"),
    ("Adam", {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    ("Adam", {"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
    ("Adam", {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    ("AdamW", {"betas": (0.9, 1.5)}, "Invalid beta parameter at index 1: 1.5"),
    ("AdamW", {"weight_decay": -0.01}, "Invalid weight_decay value: -0.01"),
])
def test_optimizer_rejects_invalid_hyper_parameters_with_torchs_message(name, kwargs, message):
    model, torch_model = twin_models(np.float32, "cpu")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        getattr(torch.optim, name)(torch_model.parameters(), **kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        getattr(optim, name)(model, **kwargs)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_given_parameters_instead_of_a_module_says_to_pass_the_module(name):
    model, _ = twin_models(np.float32, "cpu")
    with pytest.raises(TypeError, match=rf"{name} expects a dlcourse Module .* got generator"):
        getattr(optim, name)(model.parameters())


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_updates_parameters_in_place_and_keeps_float32(name):
    model, _ = twin_models(np.float32, "cpu")
    weight = model[0].weight
    before = weight.copy()
    opt = getattr(optim, name)(model, lr=0.1)
    for grad in model.grads.values():
        grad += 0.5
    opt.step()
    assert model[0].weight is weight and not np.array_equal(weight, before)
    assert all(value.dtype == np.float32 for value in model.params.values())
    for state in opt.state.values():
        assert all(value.dtype == np.float32 for value in state.values() if isinstance(value, np.ndarray))


def test_optimizer_finds_parameters_replaced_by_load_state_dict_between_steps(rng):
    model, torch_model = twin_models(np.float64, "cpu")
    opt = optim.SGD(model, lr=0.1)
    fresh = {key: rng.standard_normal(value.shape) for key, value in model.state_dict().items()}
    model.load_state_dict(fresh)
    for grad in model.grads.values():
        grad += 1.0
    opt.step()
    for name, value in model.named_parameters():
        np.testing.assert_allclose(value, fresh[name] - 0.1, rtol=0, atol=1e-15)


def test_zero_grad_clears_the_module_gradients():
    model, _ = twin_models(np.float32, "cpu")
    for grad in model.grads.values():
        grad += 1.0
    optim.SGD(model).zero_grad()
    assert not any(grad.any() for grad in model.grads.values())


def test_learning_rate_set_in_param_groups_takes_effect_at_the_next_step():
    model, _ = twin_models(np.float64, "cpu")
    opt = optim.SGD(model, lr=0.1)
    opt.param_groups[0]["lr"] = 0.0
    before = model.state_dict()
    for grad in model.grads.values():
        grad += 1.0
    opt.step()
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


def test_step_with_closure_returns_the_closures_loss():
    model, _ = twin_models(np.float64, "cpu")
    assert optim.Adam(model).step(lambda: 1.5) == 1.5


def test_optimizer_repr_lists_the_parameter_group_like_torch():
    text = repr(optim.SGD(twin_models(np.float32, "cpu")[0], lr=0.1, momentum=0.9))
    assert text.startswith("SGD (\nParameter Group 0\n") and "    lr: 0.1\n" in text and "    momentum: 0.9\n" in text


# ---------------------------------------------------------------------------- optimizer state
@pytest.mark.parametrize("name,kwargs", [("SGD", {"lr": 0.05, "momentum": 0.9}), ("Adagrad", {"lr_decay": 0.1}),
                                         ("RMSprop", {"centered": True, "momentum": 0.5}),
                                         ("Adam", {"lr": 0.01, "amsgrad": True}), ("AdamW", {"lr": 0.01})])
def test_optimizer_state_dict_round_trip_continues_the_same_trajectory(name, kwargs):
    model, torch_model = twin_models(np.float64, "cpu")
    opt = getattr(optim, name)(model, **kwargs)
    theirs = getattr(torch.optim, name)(torch_model.parameters(), **kwargs)
    run_trajectories(opt, theirs, model, torch_model, np.float64, "cpu", steps=4)
    # A new model and optimizer restored from the saved states carry on as torch does.
    saved = opt.state_dict()
    restored_model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    restored_model.load_state_dict(model.state_dict())
    restored = getattr(optim, name)(restored_model)
    restored.load_state_dict(saved)
    assert restored.param_groups == opt.param_groups
    run_trajectories(restored, theirs, restored_model, torch_model, np.float64, "cpu", steps=4, seed=1)


@pytest.mark.parametrize("name,kwargs", [("SGD", {"lr": 0.05, "momentum": 0.9}), ("Adagrad", {"lr_decay": 0.1}),
                                         ("RMSprop", {"centered": True, "momentum": 0.5}),
                                         ("Adam", {"lr": 0.01, "amsgrad": True}), ("AdamW", {"lr": 0.01})])
def test_optimizer_load_state_dict_accepts_torchs_optimizer_state(name, kwargs):
    model, torch_model = twin_models(np.float64, "cpu")
    theirs = getattr(torch.optim, name)(torch_model.parameters(), **kwargs)
    rng = np.random.default_rng(5)
    for _ in range(3):
        torch_gradients(torch_model, rng.standard_normal((5, 4)), "cpu")
        theirs.step()
    load_from_torch(model, torch_model)
    ours = getattr(optim, name)(model)
    ours.load_state_dict(theirs.state_dict())
    run_trajectories(ours, theirs, model, torch_model, np.float64, "cpu", steps=5)


# ---------------------------------------------------------------------------- schedulers
SCHEDULES = [
    ("StepLR", {"step_size": 3}, 30),
    ("StepLR", {"step_size": 4, "gamma": 0.5}, 30),
    ("ExponentialLR", {"gamma": 0.9}, 40),
    ("CosineAnnealingLR", {"T_max": 10}, 30),
    ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.001}, 21),
    ("CosineAnnealingLR", {"T_max": 25, "eta_min": 0.01}, 75),
]


@pytest.mark.parametrize("name,kwargs,epochs", SCHEDULES, ids=lambda v: str(v))
def test_scheduler_learning_rates_equal_torchs_over_many_epochs(name, kwargs, epochs):
    model, torch_model = twin_models(np.float64, "cpu")
    ours_opt = optim.SGD(model, lr=0.1)
    theirs_opt = torch.optim.SGD(torch_model.parameters(), lr=0.1)
    ours = getattr(lr_scheduler, name)(ours_opt, **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, **kwargs)
    ours_lrs, theirs_lrs = [ours.get_last_lr()[0]], [theirs.get_last_lr()[0]]
    for _ in range(epochs):
        ours_opt.step()
        theirs_opt.step()
        ours.step()
        theirs.step()
        assert ours_opt.param_groups[0]["lr"] == ours.get_last_lr()[0]
        ours_lrs.append(ours.get_last_lr()[0])
        theirs_lrs.append(theirs.get_last_lr()[0])
    assert_close(ours_lrs, theirs_lrs, np.float64, f"{name} lr")
    np.testing.assert_allclose(ours_lrs, theirs_lrs, rtol=1e-12, atol=0)


def test_cosine_annealing_follows_the_closed_form_within_one_period():
    opt = optim.SGD(twin_models(np.float64, "cpu")[0], lr=0.2)
    scheduler = lr_scheduler.CosineAnnealingLR(opt, T_max=12, eta_min=0.02)
    for epoch in range(1, 13):
        scheduler.step()
        expected = 0.02 + 0.5 * (0.2 - 0.02) * (1 + math.cos(math.pi * epoch / 12))
        assert scheduler.get_last_lr()[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_with_step_lr_trajectory_matches_torch(dtype, device):
    model, torch_model = twin_models(dtype, device)
    ours = optim.SGD(model, lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    schedulers = (lr_scheduler.StepLR(ours, step_size=3, gamma=0.5),
                  torch.optim.lr_scheduler.StepLR(theirs, step_size=3, gamma=0.5))
    run_trajectories(ours, theirs, model, torch_model, dtype, device, steps=10, schedulers=schedulers)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_with_cosine_annealing_trajectory_matches_torch(dtype, device):
    model, torch_model = twin_models(dtype, device)
    ours = optim.Adam(model, lr=0.05)
    theirs = torch.optim.Adam(torch_model.parameters(), lr=0.05)
    schedulers = (lr_scheduler.CosineAnnealingLR(ours, T_max=5),
                  torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=5))
    run_trajectories(ours, theirs, model, torch_model, dtype, device, steps=12, schedulers=schedulers)


def test_scheduler_state_dict_resumes_the_same_schedule():
    opt = optim.SGD(twin_models(np.float64, "cpu")[0], lr=0.1)
    scheduler = lr_scheduler.CosineAnnealingLR(opt, T_max=8)
    for _ in range(3):
        scheduler.step()
    saved_opt, saved = opt.state_dict(), scheduler.state_dict()
    expected = []
    for _ in range(10):
        scheduler.step()
        expected.append(scheduler.get_last_lr()[0])
    resumed_opt = optim.SGD(twin_models(np.float64, "cpu")[0], lr=0.1)
    resumed_opt.load_state_dict(saved_opt)
    resumed = lr_scheduler.CosineAnnealingLR(resumed_opt, T_max=8, last_epoch=saved["last_epoch"])
    resumed.load_state_dict(saved)
    got = []
    for _ in range(10):
        resumed.step()
        got.append(resumed.get_last_lr()[0])
    assert got == expected


def test_scheduler_errors_name_the_problem():
    opt = optim.SGD(twin_models(np.float32, "cpu")[0], lr=0.1)
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        lr_scheduler.StepLR([], step_size=2)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.ExponentialLR(opt, gamma=0.9, last_epoch=4)
    with pytest.raises(ValueError, match="StepLR expects a positive step_size, got 0"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="CosineAnnealingLR expects a positive T_max, got -3"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=-3)


def test_scheduler_constructor_arguments_and_defaults_are_torchs():
    for name in ("StepLR", "ExponentialLR", "CosineAnnealingLR"):
        ours = inspect.signature(getattr(lr_scheduler, name)).parameters
        theirs = inspect.signature(getattr(torch.optim.lr_scheduler, name)).parameters
        assert list(ours) == list(theirs)
        assert [p.default for p in ours.values()] == [p.default for p in theirs.values()]


# ---------------------------------------------------------------------------- gradient clipping
def twin_gradients(dtype, device, scale):
    model, torch_model = twin_models(dtype, device, sizes=(5, 4, 3))
    torch_gradients(torch_model, np.random.default_rng(2).standard_normal((6, 5)).astype(dtype), device)
    for p in torch_model.parameters():
        p.grad.mul_(scale)
    copy_gradients(model, torch_model)
    return model, torch_model


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
@pytest.mark.parametrize("max_norm,scale", [(1.0, 10.0), (0.1, 1.0), (1e3, 1.0)])
def test_clip_grad_norm_matches_torch_and_returns_the_total_norm(max_norm, scale, norm_type, dtype, device):
    model, torch_model = twin_gradients(dtype, device, scale)
    ours = clip_grad_norm_(model, max_norm, norm_type=norm_type)
    theirs = torch.nn.utils.clip_grad_norm_(torch_model.parameters(), max_norm, norm_type=norm_type)
    assert isinstance(ours, float)
    assert_close(ours, theirs, dtype, "clip_grad_norm_ total_norm")
    torch_params = dict(torch_model.named_parameters())
    for name, grad in model.named_gradients():
        assert_close(grad, torch_params[name].grad, dtype, f"clip_grad_norm_ d{name}")
        assert grad.dtype == np.dtype(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip_value", [0.05, 0.5, 100.0])
def test_clip_grad_value_matches_torch(clip_value, dtype, device):
    model, torch_model = twin_gradients(dtype, device, 1.0)
    assert clip_grad_value_(model, clip_value) is None
    torch.nn.utils.clip_grad_value_(torch_model.parameters(), clip_value)
    torch_params = dict(torch_model.named_parameters())
    for name, grad in model.named_gradients():
        assert_close(grad, torch_params[name].grad, dtype, f"clip_grad_value_ d{name}")


def test_clip_grad_norm_with_a_non_finite_norm_raises_only_when_asked():
    model, torch_model = twin_gradients(np.float64, "cpu", 1.0)
    model[0].grads["weight"][0, 0] = np.inf
    next(torch_model.parameters()).grad[0, 0] = np.inf
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(torch_model.parameters(), 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match=r"The total norm of order 2.0 for gradients .* is non-finite"):
        clip_grad_norm_(model, 1.0, error_if_nonfinite=True)
    with np.errstate(invalid="ignore"):  # 0 · inf = nan, as torch leaves it
        assert clip_grad_norm_(model, 1.0) == math.inf


def test_clip_grad_functions_given_parameters_instead_of_a_module_say_so():
    model, _ = twin_models(np.float32, "cpu")
    with pytest.raises(TypeError, match="clip_grad_norm_ expects a dlcourse Module"):
        clip_grad_norm_(list(model.parameters()), 1.0)
    with pytest.raises(TypeError, match="clip_grad_value_ expects a dlcourse Module"):
        clip_grad_value_(model.parameters(), 1.0)


def test_optim_and_utils_export_their_public_names():
    assert set(optim.__all__) == {"Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "lr_scheduler"}
    assert issubclass(optim.AdamW, optim.Adam) and issubclass(optim.Adam, optim.Optimizer)
    assert nn.utils.clip_grad_norm_ is clip_grad_norm_
