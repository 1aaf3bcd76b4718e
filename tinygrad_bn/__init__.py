"""tinygrad_bn: a small autodiff framework that reproduces the Batch Normalization paper.

import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import nn, optim
"""

from . import kernels
from .tensor import (
    Tensor,
    cat,
    enable_grad,
    is_grad_enabled,
    manual_seed,
    no_grad,
    stack,
    where,
)
from .gradcheck import GradcheckError, gradcheck
from . import functional, nn, optim, data
from .checkpoint import CheckpointError, load, save

# Last: tg.jit the decorator shadows the name of its module here; the engine modules, all
# imported above, hold the module itself (elsewhere: `from tinygrad_bn.jit import ...`).
from .jit import jit

concatenate = cat
zeros = Tensor.zeros
ones = Tensor.ones
randn = Tensor.randn
rand = Tensor.rand
from_numpy = Tensor.from_numpy

__version__ = "0.1.0"
