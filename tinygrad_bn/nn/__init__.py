"""Layers and Module, as in ``torch.nn``: ``import tinygrad_bn.nn as nn``."""

from . import functional, init, utils
from .batchnorm import BatchNorm1d, BatchNorm2d
from .layers import (
    Conv2d,
    Dropout,
    Flatten,
    Identity,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from .module import Module, Parameter
from .renorm import BatchRenorm1d, BatchRenorm2d  # noqa: F401 (Batch Renormalization)

__all__ = [
    "Module",
    "Parameter",
    "Linear",
    "Conv2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Dropout",
    "MaxPool2d",
    "Flatten",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Identity",
    "Sequential",
    "functional",
    "init",
    "utils",
]
