"""tinygrad_bn: a small autodiff framework that reproduces the Batch Normalization paper."""
from . import kernels

__version__ = "0.1.0"
