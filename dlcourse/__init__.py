"""dlcourse: the reference NumPy implementations behind the deep-learning course.

    from dlcourse import nn, optim
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
"""
from dlcourse._random import default_dtype, get_rng, manual_seed, set_default_dtype
from dlcourse import nn, optim, data, models, gradcheck, train

__version__ = "0.1.0"
__all__ = ["nn", "optim", "data", "models", "gradcheck", "train", "manual_seed", "get_rng", "set_default_dtype", "default_dtype", "__version__"]
