"""Optimizers and learning-rate schedules that mirror `torch.optim`; each takes a Module."""
from dlcourse.optim.optimizer import Optimizer
from dlcourse.optim import lr_scheduler
