"""The answer key of ch13: the reference answer of every graded part of its exercise.

Grader-side only: it is left out of the student kit and absent from the grading sandbox
(see docs/grading-security.md). The parts themselves (cases, tolerances, what each part
forbids) are in `dlcourse.checks.ch13`.
"""
from dlcourse import nn
from dlcourse._random import using_generator
from dlcourse.recipes import _NoisyLoader, pca_reconstruction_mse

from dlcourse.answers import reference
from dlcourse.checks.ch13 import _Replay, _autoencoder, _digits


@reference('ch13.autoencoder_forward')
def autoencoder_forward_reference(x, w1, b1, w2, b2, w3, b3, w4, b4):
    model = _autoencoder((w1, b1, w2, b2, w3, b3, w4, b4))
    code = model.encode(x)
    return code, model.decode(code)


@reference('ch13.autoencoder_backward')
def autoencoder_backward_reference(x, w1, b1, w2, b2, w3, b3, w4, b4):
    model = _autoencoder((w1, b1, w2, b2, w3, b3, w4, b4))
    loss_fn = nn.MSELoss()
    loss_fn(model(x), x)
    model.zero_grad()
    model.backward(loss_fn.backward())
    return tuple(model.grads[key].copy() for key in model.state_dict())


@reference('ch13.reconstruction_mse')
def reconstruction_mse_reference(reconstruction, x):
    loss_fn = nn.MSELoss()
    loss = loss_fn(reconstruction, x)
    return float(loss), loss_fn.backward()


@reference('ch13.gaussian_noise')
def gaussian_noise_reference(x, z, noise_std):
    corrupt = _NoisyLoader([(x, x)], noise_std, seed=0)
    corrupt._rng = _Replay(z)
    noisy, _ = next(iter(corrupt))
    return noisy


@reference('ch13.masking_noise')
def masking_noise_reference(x, u, drop_p):
    dropout = nn.Dropout(drop_p)
    with using_generator(_Replay(u)):
        return dropout(x) * (1 - drop_p)


@reference('ch13.train_autoencoder')
def train_autoencoder_reference(x_train, code_size, seed):
    """The target: the validation MSE of PCA with `code_size` components fitted on `x_train`."""
    return pca_reconstruction_mse(x_train, _digits()[1], code_size)
