"""Convolution, pooling, recurrence and attention: dlcourse vs torch CPU, float32.

    python benchmarks/bench_architectures.py [--repeats 7] [--threads N]

Forward + backward at the sizes of the course's issue: Conv2d (N=32, 16→32, 32×32, k=3,
pad 1), MaxPool2d, LSTM and GRU (T=50, N=32, 64→128), MultiheadAttention (N=32, L=64,
E=128, 8 heads), TransformerEncoderLayer. Goal: ratio ≤ 2.0 (LSTM/GRU ≤ 1.5).
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import layer_case, parse_args, run_cases  # noqa: E402

from dlcourse import nn  # noqa: E402


def recurrent_case(name, goal, module, torch_module, x):
    """Forward + backward through the whole sequence (gradient on the output only)."""
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})
    grad_output = np.random.default_rng(0).standard_normal(module(x)[0].shape).astype(np.float32)
    x_torch, grad_torch = torch.tensor(x, requires_grad=True), torch.tensor(grad_output)

    def ours():
        module(x)
        module.backward(grad_output)

    def theirs():
        torch_module(x_torch)[0].backward(grad_torch)

    return name, goal, ours, theirs


def attention_case(n=32, length=64, embed=128, heads=8):
    module = nn.MultiheadAttention(embed, heads, batch_first=True)
    torch_module = torch.nn.MultiheadAttention(embed, heads, batch_first=True)
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((n, length, embed)).astype(np.float32)
    grad_output = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    x_torch, grad_torch = torch.tensor(x, requires_grad=True), torch.tensor(grad_output)

    def ours():
        module(x, x, x)
        module.backward(grad_output)

    def theirs():
        torch_module(x_torch, x_torch, x_torch)[0].backward(grad_torch)

    return f"MultiheadAttention (N={n}, L={length}, E={embed}, {heads} heads)", 2.0, ours, theirs


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((32, 16, 32, 32)).astype(np.float32)
    sequence = rng.standard_normal((50, 32, 64)).astype(np.float32)
    tokens = rng.standard_normal((32, 64, 128)).astype(np.float32)
    encoder = torch.nn.TransformerEncoderLayer(128, 8, dim_feedforward=512, dropout=0.0, batch_first=True)
    cases = [
        layer_case("Conv2d (N=32, 16→32, 32×32, k=3, pad 1)", 2.0,
                   nn.Conv2d(16, 32, 3, padding=1), torch.nn.Conv2d(16, 32, 3, padding=1), image),
        layer_case("MaxPool2d (k=2, 32×16×32×32)", 2.0, nn.MaxPool2d(2), torch.nn.MaxPool2d(2), image),
        layer_case("AvgPool2d (k=2, 32×16×32×32)", 2.0, nn.AvgPool2d(2), torch.nn.AvgPool2d(2), image),
        recurrent_case("LSTM (T=50, N=32, 64→128)", 1.5, nn.LSTM(64, 128), torch.nn.LSTM(64, 128), sequence),
        recurrent_case("GRU (T=50, N=32, 64→128)", 1.5, nn.GRU(64, 128), torch.nn.GRU(64, 128), sequence),
        recurrent_case("RNN (T=50, N=32, 64→128)", 2.0, nn.RNN(64, 128), torch.nn.RNN(64, 128), sequence),
        attention_case(),
        layer_case("TransformerEncoderLayer (N=32, L=64, d=128, 8 heads, ff 512)", 2.0,
                   nn.TransformerEncoderLayer(128, 8, dim_feedforward=512, dropout=0.0, batch_first=True),
                   encoder, tokens),
    ]
    run_cases(cases, args, "Architectures: dlcourse / torch CPU, float32, forward + backward")


if __name__ == "__main__":
    main()
