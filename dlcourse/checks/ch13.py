"""Chapter 13 (autoencoders): the dense autoencoder's forward pass, the reconstruction MSE
and its gradient, Gaussian and masking noise for a denoising autoencoder, and training an
autoencoder that beats PCA on the digits.

The references (the answer key, `dlcourse.answers`) come from `dlcourse.models.Autoencoder`,
`dlcourse.nn.MSELoss`, `dlcourse.nn.Dropout` (masking noise is dropout without the 1/(1 − p)
rescaling), the denoising recipe's corruption (`dlcourse.recipes._NoisyLoader`) and
`dlcourse.recipes.pca_reconstruction_mse`; the test suite holds them to PyTorch.
"""
from functools import lru_cache

import numpy as np

from dlcourse import data
from dlcourse.checks import CheckFailure, part
from dlcourse.models import Autoencoder

HIDDEN = 32            # the hidden width of the trained autoencoder: Autoencoder(64, k, hidden=(32,))


class _Replay:
    """Stands in for a random generator: hands back the given draws (`random` for dropout's
    uniform draws, `standard_normal` for the denoising recipe's Gaussian noise)."""

    def __init__(self, draws):
        self.draws = draws

    def random(self, shape):
        return np.asarray(self.draws, dtype=np.float64).reshape(shape)

    def standard_normal(self, shape):
        return np.asarray(self.draws, dtype=np.float64).reshape(shape)


def _autoencoder(weights):
    """Autoencoder(D, k, hidden=(H,)) holding W1, b1, …, W4, b4 (float64)."""
    w1, b1, w2, b2, w3, b3, w4, b4 = weights
    model = Autoencoder(w1.shape[1], w2.shape[0], hidden=(w1.shape[0],))
    keys = ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
            "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias"]
    model.load_state_dict({key: np.asarray(value, dtype=np.float64) for key, value in zip(keys, weights)})
    return model


@part("ch13.autoencoder_forward", "autoencoder_forward", asks="the autoencoder's forward pass",
      forbids=("dlcourse.models.Autoencoder", "dlcourse.models.ConvAutoencoder"))
def autoencoder_forward_cases(rng):
    """Dense autoencoder D → H → k → H → D (ReLU hidden layers, linear code, Sigmoid output):
    returns (code, reconstruction)."""
    cases = []
    for n, features, hidden, code in [(5, 64, 32, 8), (3, 6, 4, 2), (1, 4, 3, 1), (4, 10, 7, 3)]:
        x = rng.random((n, features))
        weights = []
        for fan_in, fan_out in [(features, hidden), (hidden, code), (code, hidden), (hidden, features)]:
            weights.append(rng.standard_normal((fan_out, fan_in)) * 1.5 / np.sqrt(fan_in))
            weights.append(rng.standard_normal(fan_out) * 0.5)
        cases.append((x, *weights))
    return cases


@part("ch13.reconstruction_mse", "reconstruction_mse", asks='the reconstruction error',
      forbids=("dlcourse.nn.MSELoss",))
def reconstruction_mse_cases(rng):
    """Mean squared error over every entry and its gradient with respect to the reconstruction."""
    return [(rng.random(shape), rng.random(shape)) for shape in [(4, 64), (1, 1), (3, 2, 5), (7, 3)]]


def _images(rng, shape):
    """Pixels in [0, 1] with exact zeros and ones, as in the digits."""
    return np.clip(rng.random(shape) * 1.4 - 0.2, 0, 1)


@part("ch13.gaussian_noise", "gaussian_noise", asks='Gaussian corruption',
      forbids=("dlcourse.recipes",))
def gaussian_noise_cases(rng):
    """clip(x + σ z, 0, 1) for given standard normal draws z."""
    return [(_images(rng, shape), rng.standard_normal(shape), std)
            for shape, std in [((4, 64), 0.3), ((2, 5), 0.1), ((3, 4), 0.0), ((1, 8), 1.0)]]


@part("ch13.masking_noise", "masking_noise", asks='masking corruption',
      forbids=("dlcourse.recipes",))
def masking_noise_cases(rng):
    """x where u < 1 − p, 0 elsewhere (dropout's draw, without dropout's rescaling)."""
    return [(_images(rng, shape), rng.random(shape), p)
            for shape, p in [((4, 64), 0.25), ((2, 5), 0.5), ((3, 4), 0.0), ((1, 8), 0.75)]]


# ---------------------------------------------------------------------- training to a target
@lru_cache(maxsize=1)
def _digits():
    (x_train, _), (x_test, _) = data.load_digits()
    x_train.setflags(write=False)
    x_test.setflags(write=False)
    return x_train, x_test


def state_keys(code_size: int) -> list:
    """The state_dict keys of Autoencoder(64, code_size, hidden=(32,))."""
    return list(Autoencoder(64, code_size, hidden=(HIDDEN,)).state_dict())


def digits_test_mse(state, code_size: int) -> float:
    """Reconstruction MSE on the digits' test split of Autoencoder(64, code_size, hidden=(32,))
    loaded with `state` (in float64, evaluation mode). Raises CheckFailure when `state` is not
    such a model's state_dict."""
    if not isinstance(state, dict):
        raise CheckFailure(f"returned {type(state).__name__}, expected a dict of arrays: "
                           f"model.state_dict() of Autoencoder(64, {code_size}, hidden=({HIDDEN},))")
    expected = state_keys(code_size)
    if set(state) != set(expected):
        raise CheckFailure(f"returned a dict with keys {sorted(map(str, state))}, expected the state_dict "
                           f"keys of Autoencoder(64, {code_size}, hidden=({HIDDEN},)): {expected}")
    model = Autoencoder(64, code_size, hidden=(HIDDEN,))
    try:
        model.load_state_dict({key: np.asarray(value, dtype=np.float64) for key, value in state.items()})
    except (ValueError, TypeError) as error:
        raise CheckFailure(f"the returned state does not fit Autoencoder(64, {code_size}, "
                           f"hidden=({HIDDEN},)): {error}") from None
    if not all(np.all(np.isfinite(value)) for value in model.state_dict().values()):
        raise CheckFailure("the returned parameters hold NaN or infinity")
    model.eval()
    x_test = _digits()[1].astype(np.float64)
    return float(np.mean((model(x_test) - x_test) ** 2))


def _compare_to_pca(got, pca_mse, args):
    _, code_size, _ = args
    mse = digits_test_mse(got, code_size)
    if not mse < pca_mse:
        raise CheckFailure(f"test reconstruction MSE {mse:.4f} is not below {pca_mse:.4f}, the MSE of PCA "
                           f"with {code_size} components (train longer, or check the training loop)")


@part("ch13.train_autoencoder", "train_autoencoder", asks='training an autoencoder',
      forbids=("dlcourse.recipes", "sklearn.decomposition"), compare=_compare_to_pca)
def train_autoencoder_cases(rng):
    """Train Autoencoder(64, k, hidden=(32,)) on the digits; its test MSE must beat PCA with k components."""
    x_train = _digits()[0]
    return [(x_train.copy(), 8, int(rng.integers(0, 10_000))), (x_train.copy(), 4, int(rng.integers(0, 10_000)))]


