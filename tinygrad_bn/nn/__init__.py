"""Layers and Module, as in ``torch.nn``: ``import tinygrad_bn.nn as nn``."""

from . import functional, init, utils
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
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

__all__ = [
    "Module",
    "Parameter",
    "Linear",
    "Conv2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
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
