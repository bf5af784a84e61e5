"""Training end to end: the documents' MLP on the digits, fit/evaluate/History, the CLI (chapter 8)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import dlcourse
from dlcourse import data, nn, optim
from dlcourse.cli import main
from dlcourse.models import MLP
from dlcourse.recipes import train_mlp
from dlcourse.train import evaluate, fit
from parity import assert_close, load_from_torch

pytestmark = pytest.mark.ch08


@pytest.mark.slow
def test_mlp_with_adam_reaches_97_percent_on_digits(tmp_path):
    result = train_mlp(epochs=20, seed=0, out_dir=tmp_path, progress=False)
    assert result["test_accuracy"] >= 0.97, result["test_accuracy"]
    history = result["history"]
    assert len(history.train_loss) == 20 and history.train_loss[-1] < history.train_loss[0] / 10
    png = tmp_path / "mlp-digits-loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # seeded and deterministic: a second run gives the same accuracy and losses
    again = train_mlp(epochs=20, seed=0, out_dir=tmp_path, progress=False)
    assert again["test_accuracy"] == result["test_accuracy"]
    assert again["history"].train_loss == history.train_loss


def test_mlp_state_dict_loads_into_the_documents_torch_mlp():
    class TorchMLP(torch.nn.Module):  # the documents' PyTorch model
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(784, 512)
            self.fc2 = torch.nn.Linear(512, 256)
            self.fc3 = torch.nn.Linear(256, 10)

        def forward(self, x):
            x = x.view(-1, 784)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    torch_model = TorchMLP().double()
    model = MLP()
    assert list(model.state_dict()) == list(torch_model.state_dict())
    load_from_torch(model, torch_model)
    x = np.random.default_rng(0).random((5, 1, 28, 28))
    x_torch = torch.tensor(x, requires_grad=True)
    out = torch_model(x_torch)
    assert_close(model(x), out, np.float64, "MLP forward")
    grad = np.random.default_rng(1).standard_normal((5, 10))
    out.backward(torch.tensor(grad))
    assert_close(model.backward(grad), x_torch.grad, np.float64, "MLP dinput")


def test_fit_one_epoch_equals_the_same_steps_in_torch():
    """fit's loop is forward, loss, zero_grad, backward, step: the same parameters as torch's loop."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
    torch_model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    load_from_torch(model, torch_model)
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model, lr=0.1, momentum=0.9),
        data.DataLoader((x, y), batch_size=8), epochs=2, progress=False)
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        for start in range(0, 40, 8):
            loss = torch.nn.functional.cross_entropy(torch_model(torch.tensor(x[start:start + 8])),
                                                     torch.tensor(y[start:start + 8]))
            torch_opt.zero_grad()
            loss.backward()
            torch_opt.step()
    for key, value in torch_model.state_dict().items():
        assert_close(model.state_dict()[key], value, np.float64, f"fit {key}")


def test_fit_records_history_steps_scheduler_and_plots(tmp_path):
    (x_train, y_train), (x_test, y_test) = data.load_digits()
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = optim.SGD(model, lr=0.1)
    scheduler = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    history = fit(model, nn.CrossEntropyLoss(), opt, data.DataLoader((x_train, y_train), batch_size=128),
                  epochs=3, val_loader=data.DataLoader((x_test, y_test), batch_size=450),
                  scheduler=scheduler, progress=False)
    assert history.epochs == [1, 2, 3] and history.lr == [0.1, 0.05, 0.025]
    assert len(history.batch_loss) == 3 * 11
    result = evaluate(model, nn.CrossEntropyLoss(), data.DataLoader((x_test, y_test), batch_size=100))
    assert result["loss"] == pytest.approx(history.val_loss[-1], rel=1e-5)
    assert result["accuracy"] == pytest.approx(history.val_accuracy[-1])
    figure = history.plot(tmp_path / "curve.png")
    assert len(figure.axes) == 2 and (tmp_path / "curve.png").stat().st_size > 10_000


def test_early_stopping_restores_the_best_epoch():
    rng = np.random.default_rng(0)
    # A tiny training set and pure-noise labels: validation loss soon rises.
    x, y = rng.standard_normal((30, 20)), rng.integers(0, 2, 30)
    xv, yv = rng.standard_normal((200, 20)), rng.integers(0, 2, 200)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
    val_loader = data.DataLoader((xv, yv), batch_size=200)
    history = fit(model, nn.CrossEntropyLoss(), optim.Adam(model, lr=0.01), data.DataLoader((x, y), batch_size=30),
                  epochs=200, val_loader=val_loader, early_stopping_patience=5, progress=False)
    assert len(history.epochs) < 200
    assert len(history.epochs) == history.best_epoch + 5
    restored = evaluate(model, nn.CrossEntropyLoss(), val_loader)["loss"]
    assert restored == pytest.approx(min(history.val_loss), rel=1e-6)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_fit_stops_with_a_clear_error_when_the_loss_diverges():
    x, y = np.random.default_rng(0).standard_normal((16, 4)) * 1e3, np.zeros((16, 1))
    model = nn.Linear(4, 1)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(model, nn.MSELoss(), optim.SGD(model, lr=10.0), data.DataLoader((x, y), batch_size=16),
            epochs=50, progress=False)


def test_cli_train_mlp_prints_accuracy_and_plot_path(tmp_path, capsys):
    assert main(["train", "mlp", "--epochs", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy: 0." in out and f"loss curve: {tmp_path}/mlp-digits-loss.png" in out


def test_cli_reports_missing_mnist_in_one_line(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "dlcourse.cli", "train", "mlp", "--data", "mnist",
                                "--mnist-path", str(tmp_path)], capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and completed.stderr.startswith("error: ")
    assert "train-images-idx3-ubyte" in completed.stderr


def test_mlp_curve_and_best_epoch_come_from_a_validation_split_held_out_of_training(tmp_path):
    from dlcourse.recipes import hold_out

    (x_train, y_train), (x_test, _) = data.load_digits()
    (x_fit, y_fit), (x_val, y_val) = hold_out((x_train, y_train), 0.15, seed=0)
    assert len(x_val) == int(np.ceil(0.15 * len(x_train)))   # sklearn's rounding
    # a partition of the training set: the same rows, each once
    assert sorted(map(bytes, np.concatenate([x_fit, x_val]))) == sorted(map(bytes, x_train))
    # stratified: every digit's share of the validation part is within one image of its share of the training set
    for digit in range(10):
        assert abs(np.sum(y_val == digit) - 0.15 * np.sum(y_train == digit)) <= 1
    result = train_mlp(epochs=2, seed=0, progress=False, out_dir=tmp_path)
    val = evaluate(result["model"], nn.CrossEntropyLoss(), data.DataLoader((x_val, y_val), batch_size=512))
    test = evaluate(result["model"], nn.CrossEntropyLoss(), data.DataLoader(data.load_digits()[1], batch_size=512))
    assert result["history"].val_loss[-1] == pytest.approx(val["loss"], rel=1e-6)
    assert result["history"].val_loss[-1] != pytest.approx(test["loss"], rel=1e-3)
    assert result["test_loss"] == pytest.approx(test["loss"], rel=1e-6)
    assert result["best_epoch"] in (1, 2) and len(x_test) == 450


def test_cli_train_mlp_reports_validation_then_test_once(tmp_path, capsys):
    assert main(["train", "mlp", "--epochs", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split(":")[0] for line in lines]
    assert keys[:5] == ["val loss", "val accuracy", "best epoch", "test loss", "test accuracy"], lines
    assert sum(key.startswith("test") for key in keys) == 2


def test_lstm_plot_has_the_unigram_baseline_and_the_unit(tmp_path, monkeypatch):
    from dlcourse.recipes import train_lstm
    from dlcourse.train import History

    figures = []
    original = History.plot
    monkeypatch.setattr(History, "plot", lambda self, *a, **k: figures.append(original(self, *a, **k)) or figures[-1])
    result = train_lstm(epochs=1, seed=0, out_dir=tmp_path, progress=False, sample_length=5)
    axes = figures[-1].axes[0]
    assert axes.get_ylabel() == "cross-entropy (nats per character)"
    baseline = [line for line in axes.get_lines() if line.get_label() == "unigram baseline (validation)"]
    assert baseline and baseline[0].get_ydata()[0] == pytest.approx(result["unigram_cross_entropy"])
    assert (tmp_path / "lstm-language-model-loss.png").read_bytes()[:4] == b"\x89PNG"
