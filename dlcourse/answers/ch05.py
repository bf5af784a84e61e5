"""The answer key of ch05: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch05`.
"""
from dlcourse import nn

from dlcourse.answers import reference
from dlcourse.checks.ch05 import _value_and_grad


@reference('ch05.mse_loss')
def mse_loss_reference(input, target):
    return _value_and_grad(nn.MSELoss(), input, target)


@reference('ch05.log_softmax')
def log_softmax_reference(x):
    return nn.LogSoftmax(dim=1)(x)


@reference('ch05.cross_entropy')
def cross_entropy_reference(logits, target):
    return _value_and_grad(nn.CrossEntropyLoss(), logits, target)


@reference('ch05.bce_with_logits')
def bce_with_logits_reference(logits, target):
    return _value_and_grad(nn.BCEWithLogitsLoss(), logits, target)


@reference('ch05.multi_margin_loss')
def multi_margin_loss_reference(scores, target):
    return _value_and_grad(nn.MultiMarginLoss(p=1, margin=1.0), scores, target)
