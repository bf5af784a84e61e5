"""The graded parts of exercise 6 (optimizers): every reference step agrees with `torch.optim`
(and `torch.nn.utils.clip_grad_norm_`) on every seeded case, check() accepts the model solution
and rejects typical mistakes with a message naming the function."""
from pathlib import Path

import numpy as np
import pytest
import torch

from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
from parity import DEVICES, assert_close, to_torch
import exercise_support
from functools import partial

pytestmark = pytest.mark.ch06

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "ch06-optimizers" / "ch06-optimizers.ipynb"
SEEDS = [0, 1, 7]


solution_functions = partial(exercise_support.solution_functions, NOTEBOOK)


def torch_step(optimizer_class, param, grad, state, device, **hyper_parameters):
    """One torch.optim step on a single tensor from the given state; returns (param, state)."""
    p = to_torch(param, device, requires_grad=True)
    p.grad = to_torch(grad, device)
    optimizer = optimizer_class([p], foreach=False, **hyper_parameters)
    if state is not None:
        optimizer.state[p] = {key: value.to(device) if key != "step" else value for key, value in state.items()}
    optimizer.step()
    return p.detach(), optimizer.state[p]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_reference_sgd_steps_match_torch(nesterov, seed, device):
    part_id = "ch06.nesterov_step" if nesterov else "ch06.sgd_momentum_step"
    for number, (param, grad, velocity, lr, momentum) in enumerate(cases(part_id, seed), start=1):
        new_param, new_velocity = get_part(part_id).reference(param, grad, velocity, lr, momentum)
        theirs, state = torch_step(torch.optim.SGD, param, grad, {"momentum_buffer": to_torch(velocity, device)},
                                   device, lr=lr, momentum=momentum, nesterov=nesterov)
        assert_close(new_param, theirs, np.float64, f"SGD param, case {number}")
        assert_close(new_velocity, state["momentum_buffer"], np.float64, f"SGD velocity, case {number}")
        if not np.any(velocity):
            # A zero velocity is torch's first step, which stores the gradient itself as the buffer.
            theirs, state = torch_step(torch.optim.SGD, param, grad, None, device, lr=lr, momentum=momentum,
                                       nesterov=nesterov)
            assert_close(new_param, theirs, np.float64, f"SGD first-step param, case {number}")
            assert_close(new_velocity, state["momentum_buffer"], np.float64, f"SGD first-step velocity, case {number}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_adam_step_matches_torch(seed, device):
    for number, (param, grad, m, v, t, lr, beta1, beta2, eps) in enumerate(cases("ch06.adam_step", seed), start=1):
        new_param, new_m, new_v = get_part("ch06.adam_step").reference(param, grad, m, v, t, lr, beta1, beta2, eps)
        state = {"step": torch.tensor(float(t - 1)), "exp_avg": to_torch(m, device), "exp_avg_sq": to_torch(v, device)}
        theirs, state = torch_step(torch.optim.Adam, param, grad, state, device, lr=lr, betas=(beta1, beta2), eps=eps)
        assert int(state["step"]) == t
        assert_close(new_param, theirs, np.float64, f"Adam param, case {number}")
        assert_close(new_m, state["exp_avg"], np.float64, f"Adam m, case {number}")
        assert_close(new_v, state["exp_avg_sq"], np.float64, f"Adam v, case {number}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_rmsprop_step_matches_torch(seed, device):
    for number, (param, grad, square_avg, lr, alpha, eps) in enumerate(cases("ch06.rmsprop_step", seed), start=1):
        new_param, new_square_avg = get_part("ch06.rmsprop_step").reference(param, grad, square_avg, lr, alpha, eps)
        state = {"step": torch.tensor(0.0), "square_avg": to_torch(square_avg, device)}
        theirs, state = torch_step(torch.optim.RMSprop, param, grad, state, device, lr=lr, alpha=alpha, eps=eps)
        assert_close(new_param, theirs, np.float64, f"RMSprop param, case {number}")
        assert_close(new_square_avg, state["square_avg"], np.float64, f"RMSprop square_avg, case {number}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_clip_grad_norm_matches_torch(seed, device):
    for number, (grads, max_norm) in enumerate(cases("ch06.clip_grad_norm", seed), start=1):
        clipped, total_norm = get_part("ch06.clip_grad_norm").reference(grads, max_norm)
        params = [to_torch(np.zeros_like(g), device, requires_grad=True) for g in grads]
        for p, g in zip(params, grads):
            p.grad = to_torch(g, device)
        theirs = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
        assert_close(total_norm, theirs, np.float64, f"clip_grad_norm total norm, case {number}")
        assert len(clipped) == len(grads)
        for ours, p in zip(clipped, params):
            assert_close(ours, p.grad, np.float64, f"clip_grad_norm gradient, case {number}")


def test_cases_cover_first_steps_clipping_and_no_clipping():
    assert any(not np.any(velocity) for _, _, velocity, _, _ in cases("ch06.sgd_momentum_step"))
    assert {t for *_, t, _, _, _, _ in cases("ch06.adam_step")} >= {1, 10_000}
    norms = [(np.sqrt(sum(np.sum(g ** 2) for g in grads)), max_norm) for grads, max_norm in cases("ch06.clip_grad_norm")]
    assert any(norm > max_norm for norm, max_norm in norms) and any(norm < max_norm for norm, max_norm in norms)


def torch_rosenbrock(w):
    return (100 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2).sum()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_rosenbrock_gradient_matches_torch_autograd(seed, device):
    for (w,) in cases("ch06.rosenbrock_grad", seed):
        w_t = to_torch(w, device, requires_grad=True)
        torch_rosenbrock(w_t).backward()
        assert_close(get_part("ch06.rosenbrock_grad").reference(w), w_t.grad, np.float64, f"rosenbrock grad, n={w.size}")


def test_rosenbrock_gradient_is_the_derived_part_and_its_cases_include_the_minimum():
    assert [p.function for p in parts_of("ch06") if p.derived] == ["rosenbrock_grad"]
    assert any(np.array_equal(w, np.ones_like(w)) for (w,) in cases("ch06.rosenbrock_grad"))


def test_reference_leaves_its_inputs_unchanged():
    for part_id in ["ch06.sgd_momentum_step", "ch06.adam_step", "ch06.rmsprop_step", "ch06.clip_grad_norm"]:
        args = cases(part_id)[1]
        before = cases(part_id)[1]
        get_part(part_id).reference(*args)
        for a, b in zip(args, before):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            elif isinstance(a, list):
                for x, y in zip(a, b):
                    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def solutions():
    return solution_functions()


NAMES = ["sgd_momentum_step", "nesterov_step", "adam_step", "rmsprop_step", "clip_grad_norm", "rosenbrock_grad"]


@pytest.mark.parametrize("name", NAMES)
def test_check_accepts_the_model_solution(solutions, name):
    for seed in SEEDS:
        assert check(f"ch06.{name}", solutions[name], seed=seed) is None


def textbook_momentum(param, grad, velocity, lr, momentum):
    velocity = momentum * velocity + lr * grad
    return param - velocity, velocity


def adam_without_bias_correction(param, grad, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    return param - lr * m / (np.sqrt(v) + eps), m, v


def adam_eps_inside_the_root(param, grad, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    return param - lr * (m / (1 - beta1 ** t)) / np.sqrt(v / (1 - beta2 ** t) + eps), m, v


def clip_always(grads, max_norm):
    total_norm = np.sqrt(sum(np.sum(g ** 2) for g in grads))
    return [g * max_norm / (total_norm + 1e-6) for g in grads], total_norm


def rosenbrock_grad_one_path(w):
    """Forgets that w_j also appears as w_{i+1} in the term i = j − 1."""
    grad = np.zeros_like(w)
    grad[:-1] = -400 * w[:-1] * (w[1:] - w[:-1] ** 2) - 2 * (1 - w[:-1])
    return grad


WRONG = {
    "sgd_momentum_step": textbook_momentum,
    "nesterov_step": lambda w, g, v, lr, mu: (w - lr * (mu * v + g), mu * v + g),
    "adam_step": adam_without_bias_correction,
    "rmsprop_step": lambda w, g, s, lr, alpha, eps: (w - lr * g / (np.sqrt(alpha * s + (1 - alpha) * g ** 2) + eps), s),
    "clip_grad_norm": clip_always,
    "rosenbrock_grad": rosenbrock_grad_one_path,
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_a_wrong_answer_naming_the_function(name):
    with pytest.raises(CheckFailure, match=name):
        check(f"ch06.{name}", WRONG[name])


def test_check_rejects_epsilon_inside_the_square_root():
    with pytest.raises(CheckFailure, match=r"adam_step, case \d of 5 .*return value 0"):
        check("ch06.adam_step", adam_eps_inside_the_root)


def test_textbook_and_torch_momentum_agree_for_a_constant_learning_rate(solutions):
    """The claim of the book that the written part builds on, for the reader who doubts it."""
    rng = np.random.default_rng(0)
    w_torch = w_book = rng.standard_normal(3)
    v = u = np.zeros(3)
    for lr in [0.1] * 5 + [0.01] * 3:
        grad = rng.standard_normal(3)
        w_torch, v = solutions["sgd_momentum_step"](w_torch, grad, v, lr, 0.9)
        w_book, u = textbook_momentum(w_book, grad, u, lr, 0.9)
        if lr == 0.1:
            np.testing.assert_allclose(w_torch, w_book, rtol=1e-12)
    assert not np.allclose(w_torch, w_book), "after a learning-rate drop the two forms differ"


def test_the_written_parts_model_answer_after_a_tenfold_drop(solutions):
    """With a constant gradient and a velocity at its steady state, k steps after the learning rate drops from
    eta to eta/10 the textbook step is (1 + 9 γ^k) times PyTorch's, within 10 % from k = 43 on; rescaling the
    textbook velocity by 1/10 at the drop makes the two forms agree again."""
    eta, gamma, grad = 0.1, 0.9, np.array([1.0, -2.0])
    velocity = grad / (1 - gamma)                                    # PyTorch's steady state, v = g / (1 − μ)
    velocity_book = eta * velocity                                    # u = η v while η is constant
    w_torch = w_book = w_rescaled = np.zeros(2)
    rescaled = velocity_book / 10
    ratios = []
    for k in range(1, 61):
        new_torch, velocity = solutions["sgd_momentum_step"](w_torch, grad, velocity, eta / 10, gamma)
        new_book, velocity_book = textbook_momentum(w_book, grad, velocity_book, eta / 10, gamma)
        w_rescaled, rescaled = textbook_momentum(w_rescaled, grad, rescaled, eta / 10, gamma)
        ratios.append((new_book - w_book)[0] / (new_torch - w_torch)[0])
        np.testing.assert_allclose(ratios[-1], 1 + 9 * gamma ** k, rtol=1e-12)
        w_torch, w_book = new_torch, new_book
        np.testing.assert_allclose(w_rescaled, w_torch, rtol=1e-12)
    assert [k for k, ratio in enumerate(ratios, start=1) if ratio <= 1.1][0] == 43
