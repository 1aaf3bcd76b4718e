"""Optimizers and learning-rate schedulers, as in ``torch.optim``: ``from tinygrad_bn import
optim``, then ``optim.SGD(...)`` and ``optim.lr_scheduler.StepLR(...)`` (the schedulers are
also importable from ``optim`` itself)."""

from . import lr_scheduler
from .lr_scheduler import (
    ChainedScheduler,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from .optimizer import SGD, Adam, AdamW, Optimizer, RMSprop

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "lr_scheduler",
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "LinearLR",
    "CosineAnnealingLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "ChainedScheduler",
    "SequentialLR",
]
