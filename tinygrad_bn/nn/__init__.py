"""Layers and Module, as in ``torch.nn``: ``import tinygrad_bn.nn as nn``."""

from . import functional, init, utils
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .container import ModuleDict, ModuleList
from .layers import (
    Conv1d,
    Conv2d,
    Dropout,
    Embedding,
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
from .normalization import (
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
)
from .renorm import BatchRenorm1d, BatchRenorm2d  # noqa: F401 (Batch Renormalization)

__all__ = [
    "Module",
    "Parameter",
    "Linear",
    "Conv1d",
    "Conv2d",
    "Embedding",
    "ModuleList",
    "ModuleDict",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
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
