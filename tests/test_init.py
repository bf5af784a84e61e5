"""dlcourse.nn.init follows torch.nn.init's definitions (chapter 2)."""
import math

import numpy as np
import pytest
import torch

from dlcourse.nn import init

pytestmark = pytest.mark.ch02


@pytest.mark.parametrize("nonlinearity,param", [
    ("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
    ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None)])
def test_calculate_gain_equals_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-15)


@pytest.mark.parametrize("shape", [(30, 20), (8, 4, 3, 3), (5, 7, 2)])
def test_fans_equal_torch(shape):
    ours = init._fan_in_and_fan_out(np.empty(shape))
    assert ours == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


UNIFORM_BOUNDS = {
    # the bound b of U(−b, b) as torch's documentation defines it
    "xavier_uniform_": lambda fan_in, fan_out: 1.5 * math.sqrt(6 / (fan_in + fan_out)),
    "kaiming_uniform_": lambda fan_in, fan_out: math.sqrt(2 / (1 + 0.2 ** 2)) * math.sqrt(3 / fan_in),
}


@pytest.mark.parametrize("name", sorted(UNIFORM_BOUNDS))
def test_uniform_inits_fill_torch_interval(name):
    shape = (256, 128, 3, 3)
    fan_in, fan_out = 128 * 9, 256 * 9
    kwargs = {"gain": 1.5} if name.startswith("xavier") else {"a": 0.2}
    ours = getattr(init, name)(np.empty(shape), **kwargs)
    theirs = getattr(torch.nn.init, name)(torch.empty(shape, dtype=torch.float64), **kwargs).numpy()
    bound = UNIFORM_BOUNDS[name](fan_in, fan_out)
    assert np.abs(ours).max() <= bound and np.abs(ours).max() > 0.999 * bound
    # Same distribution: the standard deviations of 295k draws agree to well under 1%.
    assert abs(ours.std() - theirs.std()) / theirs.std() < 0.01


@pytest.mark.parametrize("name,kwargs", [("xavier_normal_", {"gain": 2.0}),
                                         ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"})])
def test_normal_inits_match_torch_std(name, kwargs):
    shape = (300, 200)
    ours = getattr(init, name)(np.empty(shape), **kwargs)
    theirs = getattr(torch.nn.init, name)(torch.empty(shape, dtype=torch.float64), **kwargs).numpy()
    assert abs(ours.mean()) < 0.01 * theirs.std()
    assert abs(ours.std() - theirs.std()) / theirs.std() < 0.01


def test_init_rejects_one_dimensional_arrays_and_bad_mode():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_uniform_(np.empty(5))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_normal_(np.empty((3, 3)), mode="fan_avg")
