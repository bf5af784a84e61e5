"""A training loop with a progress bar, a history that plots, and evaluation.

    history = fit(model, nn.CrossEntropyLoss(), optim.Adam(model, lr=1e-3),
                  train_loader, epochs=20, val_loader=test_loader)
    history.plot("loss.png")

One step is the same five lines the book teaches: forward, loss, zero_grad, backward, step.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

__all__ = ["fit", "evaluate", "History"]


@dataclass
class History:
    """Per-epoch metrics (`train_loss`, `val_loss`, `train_accuracy`, `val_accuracy`, `lr`)
    and the loss of every mini-batch (`batch_loss`)."""

    epochs: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    batch_loss: list = field(default_factory=list)
    best_epoch: int | None = None

    def plot(self, path=None, title: str = "Training", ylabel: str = "loss", baselines: dict | None = None):
        """Loss curves (and accuracy, when measured) as a matplotlib figure; saved when `path`.

        ylabel: the loss axis' label, with its unit where it has one ("nats per character").
        baselines: {label: loss} drawn as dashed horizontal lines (e.g. a unigram model's)."""
        import matplotlib
        if path is not None and matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        has_accuracy = any(v is not None for v in self.train_accuracy + self.val_accuracy)
        fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(10 if has_accuracy else 5.5, 3.8),
                                 squeeze=False)
        ax = axes[0, 0]
        if self.batch_loss and self.epochs:
            steps = np.linspace(self.epochs[0] - 1, self.epochs[-1], len(self.batch_loss), endpoint=False)
            ax.plot(steps + (steps[1] - steps[0] if len(steps) > 1 else 0), self.batch_loss,
                    color="0.8", lw=0.8, label="mini-batch")
        ax.plot(self.epochs, self.train_loss, "o-", label="train")
        if any(v is not None for v in self.val_loss):
            ax.plot(self.epochs, self.val_loss, "s-", label="validation")
        if self.best_epoch is not None:
            ax.axvline(self.best_epoch, color="k", ls=":", label=f"best epoch ({self.best_epoch})")
        for (label, value), colour in zip((baselines or {}).items(), ("tab:red", "tab:purple", "tab:brown")):
            ax.axhline(value, color=colour, ls="--", label=label)
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{title}: loss")
        ax.legend()
        if has_accuracy:
            ax = axes[0, 1]
            if any(v is not None for v in self.train_accuracy):
                ax.plot(self.epochs, self.train_accuracy, "o-", label="train")
            if any(v is not None for v in self.val_accuracy):
                ax.plot(self.epochs, self.val_accuracy, "s-", label="validation")
            ax.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
            ax.legend()
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
            plt.close(fig)
        return fig


def _accuracy(output, target):
    """Fraction of rows whose arg-max matches an integer class target; None otherwise."""
    target = np.asarray(target)
    if np.ndim(output) < 2 or not np.issubdtype(target.dtype, np.integer):
        return None
    return float(np.mean(np.argmax(output, axis=1) == target))


def evaluate(model, loss_fn, loader) -> dict:
    """Mean loss (weighted by batch size) and accuracy over a loader, in eval mode.

    Returns {"loss": float, "accuracy": float or None}; the model's mode is restored.
    """
    was_training = model.training
    model.eval()
    total, loss_sum, correct, counted = 0, 0.0, 0.0, True
    try:
        for x, y in loader:
            output = model(x)
            loss_sum += float(loss_fn(output, y)) * len(x)
            accuracy = _accuracy(output, y)
            counted = counted and accuracy is not None
            correct += (accuracy or 0.0) * len(x)
            total += len(x)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate got an empty loader")
    return {"loss": loss_sum / total, "accuracy": correct / total if counted else None}


def fit(model, loss_fn, optimizer, train_loader, epochs: int, val_loader=None, scheduler=None,
        progress: bool | None = None, early_stopping_patience: int | None = None,
        clip_grad_norm: float | None = None) -> History:
    """Train `model` for `epochs` passes over `train_loader`; returns a `History`.

    progress: a tqdm bar per run (None = only when stderr is a terminal).
    scheduler: stepped once per epoch, after the epoch's optimizer steps (torch's order).
    early_stopping_patience: stop after that many epochs without a lower validation loss
        and restore the best parameters (needs `val_loader`).
    clip_grad_norm: rescale gradients to this total 2-norm before each step.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if early_stopping_patience is not None and val_loader is None:
        raise ValueError("early stopping watches the validation loss: pass val_loader")
    if progress is None:
        progress = sys.stderr.isatty()
    history = History()
    best_loss, best_state, waited = np.inf, None, 0
    bar = tqdm(total=epochs * len(train_loader), disable=not progress, unit="batch", leave=False)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            loss_sum = correct = 0.0
            seen, counted = 0, True
            for x, y in train_loader:
                output = model(x)
                loss = loss_fn(output, y)
                if not np.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} at epoch {epoch}; "
                                             "lower the learning rate or clip gradients")
                optimizer.zero_grad()
                model.backward(loss_fn.backward())
                if clip_grad_norm is not None:
                    from dlcourse.nn.utils import clip_grad_norm_
                    clip_grad_norm_(model, clip_grad_norm)
                optimizer.step()
                history.batch_loss.append(float(loss))
                accuracy = _accuracy(output, y)
                counted = counted and accuracy is not None
                loss_sum += float(loss) * len(x)
                correct += (accuracy or 0.0) * len(x)
                seen += len(x)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
            history.epochs.append(epoch)
            history.lr.append(optimizer.param_groups[0]["lr"])
            history.train_loss.append(loss_sum / seen)
            history.train_accuracy.append(correct / seen if counted else None)
            if val_loader is not None:
                result = evaluate(model, loss_fn, val_loader)
                history.val_loss.append(result["loss"])
                history.val_accuracy.append(result["accuracy"])
                if result["loss"] < best_loss:
                    best_loss, waited, history.best_epoch = result["loss"], 0, epoch
                    if early_stopping_patience is not None:
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    waited += 1
            else:
                history.val_loss.append(None)
                history.val_accuracy.append(None)
            if scheduler is not None:
                scheduler.step()
            if early_stopping_patience is not None and waited >= early_stopping_patience:
                break
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
