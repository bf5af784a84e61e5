"""Core layers, loss, optimizer step and one MLP epoch: dlcourse vs torch CPU, float32.

    python benchmarks/bench_core.py [--repeats 7] [--threads N]

Prints a Markdown table of medians and the ratio dlcourse / torch (goal ≤ 2.0 per layer,
≤ 1.5 for the MLP epoch). Results are recorded in benchmarks/README.md.
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import layer_case, parse_args, run_cases  # noqa: E402

import dlcourse  # noqa: E402
from dlcourse import data, nn, optim  # noqa: E402


def loss_case(n=256, classes=100):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, classes)).astype(np.float32)
    target = rng.integers(0, classes, n)
    ours_loss = nn.CrossEntropyLoss()
    logits_torch = torch.tensor(logits, requires_grad=True)
    target_torch = torch.tensor(target)

    def ours():
        ours_loss(logits, target)
        ours_loss.backward()

    def theirs():
        torch.nn.functional.cross_entropy(logits_torch, target_torch).backward()

    return f"CrossEntropyLoss ({n}×{classes})", 2.0, ours, theirs


def optimizer_case(name, ours_cls, torch_cls, **kwargs):
    """One optimizer step over the MLP's 535k parameters, gradients already in place."""
    model = dlcourse.models.MLP(784)
    torch_model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256),
                                      torch.nn.ReLU(), torch.nn.Linear(256, 10))
    for (_, grad), parameter in zip(model.named_gradients(), torch_model.parameters()):
        grad[...] = np.random.default_rng(0).standard_normal(grad.shape) * 1e-3
        parameter.grad = torch.tensor(grad)
    ours_opt = ours_cls(model, **kwargs)
    torch_opt = torch_cls(torch_model.parameters(), foreach=False, **kwargs)
    return name, 2.0, ours_opt.step, torch_opt.step


def mlp_epoch_case():
    """One epoch of the documents' MLP (64-512-256-10, Adam, batch 64) on the digits."""
    (x_train, y_train), _ = data.load_digits()
    loader = data.DataLoader((x_train, y_train), batch_size=64, shuffle=True, seed=0)
    model = dlcourse.models.MLP(64)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model, lr=1e-3)
    torch_model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256),
                                      torch.nn.ReLU(), torch.nn.Linear(256, 10))
    torch_opt = torch.optim.Adam(torch_model.parameters(), lr=1e-3)
    batches = [(x, y) for x, y in loader]
    torch_batches = [(torch.tensor(x), torch.tensor(y)) for x, y in batches]

    def ours():
        for x, y in batches:
            loss_fn(model(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()

    def theirs():
        for x, y in torch_batches:
            loss = torch.nn.functional.cross_entropy(torch_model(x), y)
            torch_opt.zero_grad()
            loss.backward()
            torch_opt.step()

    return "MLP epoch on digits (Adam, batch 64)", 1.5, ours, theirs


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 1024)).astype(np.float32)
    cases = [
        layer_case("Linear (256×512 → 256)", 2.0, nn.Linear(512, 256), torch.nn.Linear(512, 256), x[:, :512]),
        layer_case("ReLU (256×1024)", 2.0, nn.ReLU(), torch.nn.ReLU(), x),
        layer_case("LeakyReLU (256×1024)", 2.0, nn.LeakyReLU(), torch.nn.LeakyReLU(), x),
        layer_case("Sigmoid (256×1024)", 2.0, nn.Sigmoid(), torch.nn.Sigmoid(), x),
        layer_case("Tanh (256×1024)", 2.0, nn.Tanh(), torch.nn.Tanh(), x),
        layer_case("GELU (256×1024)", 2.0, nn.GELU(), torch.nn.GELU(), x),
        layer_case("GELU tanh (256×1024)", 2.0, nn.GELU("tanh"), torch.nn.GELU("tanh"), x),
        layer_case("Softmax (256×1024)", 2.0, nn.Softmax(dim=1), torch.nn.Softmax(dim=1), x),
        layer_case("BatchNorm1d (256×512)", 2.0, nn.BatchNorm1d(512), torch.nn.BatchNorm1d(512), x[:, :512]),
        layer_case("LayerNorm (256×512)", 2.0, nn.LayerNorm(512), torch.nn.LayerNorm(512), x[:, :512]),
        loss_case(),
        optimizer_case("SGD step (momentum 0.9, 535k params)", optim.SGD, torch.optim.SGD, lr=0.01, momentum=0.9),
        optimizer_case("Adam step (535k params)", optim.Adam, torch.optim.Adam, lr=1e-3),
        mlp_epoch_case(),
    ]
    run_cases(cases, args, "Core layers: dlcourse / torch CPU, float32, forward + backward")


if __name__ == "__main__":
    main()
