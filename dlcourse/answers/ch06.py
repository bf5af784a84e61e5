"""The answer key of ch06: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch06`.
"""
import numpy as np
from scipy.optimize import rosen_der
from dlcourse import nn, optim

from dlcourse.answers import reference
from dlcourse.checks.ch06 import _Parameters, _one_step


@reference('ch06.sgd_momentum_step')
def sgd_momentum_step_reference(param, grad, velocity, lr, momentum):
    param, state = _one_step(optim.SGD, param, grad, {"momentum_buffer": velocity}, lr=lr, momentum=momentum)
    return param, state["momentum_buffer"]


@reference('ch06.nesterov_step')
def nesterov_step_reference(param, grad, velocity, lr, momentum):
    param, state = _one_step(optim.SGD, param, grad, {"momentum_buffer": velocity}, lr=lr, momentum=momentum,
                             nesterov=True)
    return param, state["momentum_buffer"]


@reference('ch06.adam_step')
def adam_step_reference(param, grad, m, v, t, lr, beta1, beta2, eps):
    param, state = _one_step(optim.Adam, param, grad, {"step": t - 1, "exp_avg": m, "exp_avg_sq": v},
                             lr=lr, betas=(beta1, beta2), eps=eps)
    return param, state["exp_avg"], state["exp_avg_sq"]


@reference('ch06.rmsprop_step')
def rmsprop_step_reference(param, grad, square_avg, lr, alpha, eps):
    param, state = _one_step(optim.RMSprop, param, grad, {"step": 0, "square_avg": square_avg},
                             lr=lr, alpha=alpha, eps=eps)
    return param, state["square_avg"]


@reference('ch06.clip_grad_norm')
def clip_grad_norm_reference(grads, max_norm):
    module = _Parameters([np.zeros_like(grad) for grad in grads], grads)
    total_norm = nn.utils.clip_grad_norm_(module, max_norm)
    return tuple(grad for _, grad in module.named_gradients()), total_norm


@reference('ch06.rosenbrock_grad')
def rosenbrock_grad_reference(w):
    return rosen_der(w)
