"""Optimizers and learning-rate schedules that mirror `torch.optim`; each takes a Module.

    opt = optim.Adam(model, lr=1e-3)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50)
"""
from dlcourse.optim.optimizer import Optimizer
from dlcourse.optim.sgd import SGD
from dlcourse.optim.adagrad import Adagrad
from dlcourse.optim.rmsprop import RMSprop
from dlcourse.optim.adam import Adam, AdamW
from dlcourse.optim import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "lr_scheduler"]
