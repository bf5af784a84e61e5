"""Chapter 13's graded parts: each reference answer agrees with PyTorch, computed here
independently, and `check` accepts the model solution and rejects typical mistakes."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dlcourse
from dlcourse.checks import CheckFailure, cases, check, get_part, parts_of
from dlcourse.checks.ch13 import digits_validation_mse, state_keys
from dlcourse.data import load_images
from dlcourse.models import Autoencoder
from parity import DEVICES, assert_close, to_torch
import exercise_support
from functools import partial

pytestmark = pytest.mark.ch13

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "ch13-autoencoders" / "ch13-autoencoders.ipynb"
SEEDS = [0, 1, 2]


solution = partial(exercise_support.solution, NOTEBOOK)


def reference(part_id, args):
    return get_part(part_id).reference(*args)


def torch_autoencoder(w1, b1, w2, b2, w3, b3, w4, b4, device):
    """The same network in torch: encoder Linear-ReLU-Linear, decoder Linear-ReLU-Linear-Sigmoid."""
    def linear(weight, bias):
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(np.asarray(weight, dtype=np.float64)))
            layer.bias.copy_(torch.tensor(np.asarray(bias, dtype=np.float64)))
        return layer
    encoder = torch.nn.Sequential(linear(w1, b1), torch.nn.ReLU(), linear(w2, b2)).to(device)
    decoder = torch.nn.Sequential(linear(w3, b3), torch.nn.ReLU(), linear(w4, b4), torch.nn.Sigmoid()).to(device)
    return encoder, decoder


def test_chapter_has_the_six_parts_one_of_them_derived():
    assert {p.function for p in parts_of("ch13")} == {
        "autoencoder_forward", "autoencoder_backward", "reconstruction_mse", "gaussian_noise", "masking_noise",
        "train_autoencoder"}
    assert [p.function for p in parts_of("ch13") if p.derived] == ["autoencoder_backward"]
    statement = exercise_support.statement_of(NOTEBOOK, "autoencoder_backward")
    assert "derive" in statement
    assert not exercise_support.GRADIENT_FORMULA.search(statement), "a derived part's statement gives no backward formula"
    assert exercise_support.GRADIENT_FORMULA.search(exercise_support.statement_of(NOTEBOOK, "reconstruction_mse"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_autoencoder_forward_reference_matches_torch(seed, device):
    for x, *weights in cases("ch13.autoencoder_forward", seed):
        encoder, decoder = torch_autoencoder(*weights, device)
        with torch.no_grad():
            code = encoder(to_torch(x, device))
            reconstruction = decoder(code)
        ours = reference("ch13.autoencoder_forward", (x, *weights))
        assert_close(ours[0], code, np.float64, "Autoencoder code")
        assert_close(ours[1], reconstruction, np.float64, "Autoencoder reconstruction")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_autoencoder_backward_reference_matches_torch_autograd(seed, device):
    for x, *weights in cases("ch13.autoencoder_backward", seed):
        encoder, decoder = torch_autoencoder(*weights, device)
        xt = to_torch(x, device)
        F.mse_loss(decoder(encoder(xt)), xt).backward()
        torch_grads = [param.grad for module in (encoder, decoder) for param in module.parameters()]
        ours = reference("ch13.autoencoder_backward", (x, *weights))
        assert isinstance(ours, tuple) and len(ours) == 8
        for name, got, expected, weight in zip(["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4"], ours,
                                               torch_grads, weights):
            assert np.shape(got) == np.shape(weight)
            assert_close(got, expected, np.float64, f"dL/d{name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reconstruction_mse_reference_matches_torch_autograd(seed, device):
    for reconstruction, x in cases("ch13.reconstruction_mse", seed):
        xt = to_torch(reconstruction, device, requires_grad=True)
        loss = F.mse_loss(xt, to_torch(x, device))
        loss.backward()
        ours_loss, ours_grad = reference("ch13.reconstruction_mse", (reconstruction, x))
        assert np.ndim(ours_loss) == 0
        assert_close(ours_loss, loss, np.float64, "MSELoss value")
        assert_close(ours_grad, xt.grad, np.float64, "MSELoss gradient")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_gaussian_noise_reference_matches_torch(seed, device):
    for x, z, noise_std in cases("ch13.gaussian_noise", seed):
        expected = torch.clamp(to_torch(x, device) + noise_std * to_torch(z, device), 0, 1)
        assert_close(reference("ch13.gaussian_noise", (x, z, noise_std)), expected, np.float64, "gaussian noise")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", SEEDS)
def test_masking_noise_reference_matches_torch(seed, device):
    for x, u, drop_p in cases("ch13.masking_noise", seed):
        xt = to_torch(x, device)
        expected = torch.where(to_torch(u, device) < 1 - drop_p, xt, torch.zeros_like(xt))
        ours = reference("ch13.masking_noise", (x, u, drop_p))
        assert_close(ours, expected, np.float64, "masking noise")
        np.testing.assert_array_equal(ours == 0, expected.cpu().numpy() == 0)


def test_masking_noise_is_torch_dropout_without_its_rescaling():
    """torch.nn.functional.dropout zeroes with probability p and scales by 1/(1 − p): with its
    mask, masking noise is dropout(x)·(1 − p)."""
    torch.manual_seed(0)
    x = torch.rand(50, 64, dtype=torch.float64) + 0.1
    dropped = F.dropout(x, p=0.3, training=True)
    keep = (dropped != 0).numpy()
    u = np.where(keep, 0.0, 0.999)             # u < 1 − p exactly where torch kept the entry
    ours = reference("ch13.masking_noise", (x.numpy(), u, 0.3))
    assert_close(ours, dropped * 0.7, np.float64, "masking noise vs torch dropout")


# ---------------------------------------------------------------------- training to a target
def torch_pca_mse(x_train, x_test, k):
    """PCA through torch's SVD of the centered training data."""
    train = torch.tensor(x_train, dtype=torch.float64)
    test = torch.tensor(x_test, dtype=torch.float64)
    mean = train.mean(dim=0)
    _, _, vh = torch.linalg.svd(train - mean, full_matrices=False)
    components = vh[:k]
    reconstruction = (test - mean) @ components.T @ components + mean
    return F.mse_loss(reconstruction, test)


def digits_fit_and_validation():
    """The digits' training split less the validation split, and the validation split: the
    test split takes no part in grading."""
    (x_fit, _), (x_val, _), _ = load_images("digits", flatten=True)
    return x_fit, x_val


@pytest.mark.parametrize("code_size", [1, 4, 8, 16])
def test_train_autoencoder_target_is_pca_on_the_validation_split_computed_by_torch(code_size):
    x_fit, x_val = digits_fit_and_validation()
    expected = torch_pca_mse(x_fit, x_val, code_size)
    for args in cases("ch13.train_autoencoder", 0):
        assert_close(reference("ch13.train_autoencoder", (x_fit, code_size, args[2])), expected, np.float64,
                     "PCA reconstruction MSE")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("code_size", [4, 8])
def test_digits_validation_mse_matches_the_torch_model(code_size, device):
    dlcourse.manual_seed(code_size)
    state = Autoencoder(64, code_size, hidden=(32,)).state_dict()
    _, x_val = digits_fit_and_validation()
    encoder, decoder = torch_autoencoder(*state.values(), device)
    assert list(state) == state_keys(code_size) == [
        "encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
        "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias"]
    with torch.no_grad():
        xt = to_torch(x_val.astype(np.float64), device)
        expected = F.mse_loss(decoder(encoder(xt)), xt)
    assert_close(digits_validation_mse(dict(state), code_size), expected, np.float64, "Autoencoder validation MSE")


def test_train_autoencoder_cases_train_on_the_digits_less_validation_with_two_code_sizes(monkeypatch):
    monkeypatch.setenv("DLCOURSE_DATA", "cifar10")      # the switch never reaches grading
    x_fit, _ = digits_fit_and_validation()
    for seed in SEEDS:
        all_cases = cases("ch13.train_autoencoder", seed)
        assert [code_size for _, code_size, _ in all_cases] == [8, 4]
        for x_train, _, train_seed in all_cases:
            assert x_train.shape == (1077, 64) and isinstance(train_seed, int)
            np.testing.assert_array_equal(x_train, x_fit)


# ---------------------------------------------------------------------- check() itself
@pytest.mark.parametrize("function", ["autoencoder_forward", "autoencoder_backward", "reconstruction_mse",
                                      "gaussian_noise", "masking_noise"])
@pytest.mark.parametrize("seed", [0, 7])
def test_check_accepts_the_model_solution(function, seed):
    check(f"ch13.{function}", solution(function), seed=seed)


@pytest.mark.slow
def test_check_accepts_the_model_training():
    check("ch13.train_autoencoder", solution("train_autoencoder"), seed=3)


def _forward_with_relu_code(x, w1, b1, w2, b2, w3, b3, w4, b4):
    code = np.maximum(0, np.maximum(0, x @ w1.T + b1) @ w2.T + b2)
    return code, 1 / (1 + np.exp(-(np.maximum(0, code @ w3.T + b3) @ w4.T + b4)))


def _backward_without_the_sigmoid_derivative(x, w1, b1, w2, b2, w3, b3, w4, b4):
    """Sends dL/dx̂ straight into the last Linear layer, as if the output had no sigmoid."""
    a1 = np.maximum(0, x @ w1.T + b1)
    code = a1 @ w2.T + b2
    a3 = np.maximum(0, code @ w3.T + b3)
    x_hat = 1 / (1 + np.exp(-(a3 @ w4.T + b4)))
    g4 = 2 * (x_hat - x) / x.size
    g3 = (g4 @ w4) * (a3 > 0)
    g2 = g3 @ w3
    g1 = (g2 @ w2) * (a1 > 0)
    return g1.T @ x, g1.sum(0), g2.T @ a1, g2.sum(0), g3.T @ code, g3.sum(0), g4.T @ a3, g4.sum(0)


WRONG = {
    "autoencoder_forward": _forward_with_relu_code,
    "autoencoder_backward": _backward_without_the_sigmoid_derivative,
    "reconstruction_mse": lambda r, x: (float(np.mean((r - x) ** 2)), (r - x) / (r - x).size),
    "gaussian_noise": lambda x, z, std: x + std * z,
    "masking_noise": lambda x, u, p: x * (u < 1 - p) / (1 - p),
}


@pytest.mark.parametrize("function", sorted(WRONG))
def test_check_rejects_a_typical_mistake_naming_the_function(function):
    with pytest.raises(CheckFailure, match=rf"^{function}, case \d+ of \d+"):
        check(f"ch13.{function}", WRONG[function])


def test_check_rejects_an_untrained_autoencoder():
    def untrained(x_train, code_size, seed):
        dlcourse.manual_seed(seed)
        return dict(Autoencoder(64, code_size, hidden=(32,)).state_dict())
    with pytest.raises(CheckFailure, match=r"^train_autoencoder, case 1 of 2 .*not below .*PCA with 8 components"):
        check("ch13.train_autoencoder", untrained)


@pytest.mark.parametrize("returned,message", [
    (lambda k: Autoencoder(64, k, hidden=(32,)), "returned Autoencoder, expected a dict of arrays"),
    (lambda k: dict(Autoencoder(64, k, hidden=(16,)).state_dict()), "does not fit"),
    (lambda k: dict(Autoencoder(64, k, hidden=(32, 16)).state_dict()), "expected the state_dict keys"),
    (lambda k: {key: np.full_like(v, np.nan) for key, v in Autoencoder(64, k, hidden=(32,)).state_dict().items()},
     "NaN"),
])
def test_check_rejects_what_is_not_the_state_of_the_autoencoder(returned, message):
    with pytest.raises(CheckFailure, match=rf"^train_autoencoder, case 1 of 2 .*{message}"):
        check("ch13.train_autoencoder", lambda x_train, code_size, seed: returned(code_size))
