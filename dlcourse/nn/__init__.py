"""NumPy layers, losses and containers that mirror `torch.nn`.

Every class here has torch's name, constructor arguments and defaults; see each module
for the mathematics and shapes.
"""
from dlcourse.nn import init
from dlcourse.nn.module import Module
from dlcourse.nn.container import *  # noqa: F401,F403
from dlcourse.nn.linear import *  # noqa: F401,F403
from dlcourse.nn.activation import *  # noqa: F401,F403
from dlcourse.nn.loss import *  # noqa: F401,F403
from dlcourse.nn.dropout import *  # noqa: F401,F403
from dlcourse.nn.normalization import *  # noqa: F401,F403
from dlcourse.nn.regularization import *  # noqa: F401,F403
from dlcourse.nn.conv import *  # noqa: F401,F403
from dlcourse.nn.pooling import *  # noqa: F401,F403
from dlcourse.nn.flatten import *  # noqa: F401,F403
from dlcourse.nn.sparse import *  # noqa: F401,F403
from dlcourse.nn.rnn import *  # noqa: F401,F403
from dlcourse.nn.attention import *  # noqa: F401,F403
from dlcourse.nn.transformer import *  # noqa: F401,F403
from dlcourse.nn.upsampling import *  # noqa: F401,F403
from dlcourse.nn import utils
