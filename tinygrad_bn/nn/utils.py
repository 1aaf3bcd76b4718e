"""BatchNorm utilities for inference: folding into the layer before, exact population stats."""

import copy

import numpy as np

from ..tensor import Tensor, no_grad
from .batchnorm import BatchNorm1d, BatchNorm2d, _BatchNorm
from .layers import Conv2d, Identity, Linear, Sequential
from .module import Module, Parameter

_FOLDABLE = ((Linear, BatchNorm1d), (Conv2d, BatchNorm2d))


def _fold_pair(layer, bn):
    """Fold bn's eval-mode affine map into layer's weight and bias, in place (float64 math).

    y = gamma (W x + b - mean) / sqrt(var + eps) + beta
      = (W * s) x + ((b - mean) * s + beta),   s = gamma / sqrt(var + eps) per output unit.
    """
    c = bn.num_features
    gamma = bn.weight.data.astype(np.float64) if bn.affine else np.ones(c)
    beta = bn.bias.data.astype(np.float64) if bn.affine else np.zeros(c)
    scale = gamma / np.sqrt(bn.running_var.data.astype(np.float64) + bn.eps)
    dtype = layer.weight.dtype
    w = layer.weight.data.astype(np.float64)
    b = layer.bias.data.astype(np.float64) if layer.bias is not None else np.zeros(c)
    w *= scale.reshape((-1,) + (1,) * (w.ndim - 1))
    layer.weight.data[...] = w
    new_bias = (b - bn.running_mean.data.astype(np.float64)) * scale + beta
    if layer.bias is None:
        layer.bias = Parameter(new_bias.astype(dtype))
    else:
        layer.bias.data[...] = new_bias


def fold_batchnorm(model):
    """A new eval-mode model where each BatchNorm right after a Linear/Conv2d is folded in.

    Inside every Sequential (recursively), a Linear followed by a BatchNorm1d, or a Conv2d
    followed by a BatchNorm2d, becomes one layer with W' = W * gamma / sqrt(var + eps)
    (per output unit) and b' = (b - mean) * gamma / sqrt(var + eps) + beta; the BatchNorm is
    replaced by Identity. `model` itself is not modified. A Linear -> BatchNorm1d pair is
    folded only when the BatchNorm normalizes the Linear's outputs, i.e. for (N, features)
    inputs (num_features == out_features); BatchNorms without running statistics
    (track_running_stats=False) use batch statistics at inference and are left as they are.
    Raises TypeError if `model` is not a Module.
    """
    if not isinstance(model, Module):
        raise TypeError(f"fold_batchnorm: expected a Module, got {type(model).__name__}")
    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, Sequential):
            continue
        names = list(seq._modules)
        for prev_name, name in zip(names, names[1:]):
            layer, bn = seq._modules[prev_name], seq._modules[name]
            if not any(isinstance(layer, lt) and isinstance(bn, bt) for lt, bt in _FOLDABLE):
                continue
            out = layer.out_features if isinstance(layer, Linear) else layer.out_channels
            if not bn.track_running_stats or bn.num_features != out:
                continue
            with no_grad():
                _fold_pair(layer, bn)
            setattr(seq, name, Identity())
    return folded.eval()  # the new Identity layers too


def _first(batch):
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x))


def recompute_batchnorm_stats(model, batches):
    """Reset every BatchNorm's running statistics and recompute them exactly over `batches`.

    `batches` is an iterable of inputs (Tensors or arrays) or of (x, y) pairs (x is used).
    Each batch is run forward in training mode under no_grad with momentum=None, so the
    running estimates become the cumulative averages of the batch means and of the
    unbiased batch variances (Algorithm 2 of Ioffe & Szegedy 2015). Each BatchNorm's
    momentum and every module's training flag are restored afterwards. Returns `model`.
    Raises TypeError if `model` is not a Module, ValueError if `batches` is empty.
    """
    if not isinstance(model, Module):
        raise TypeError(f"recompute_batchnorm_stats: expected a Module, got {type(model).__name__}")
    batches = iter(batches)
    try:
        first = next(batches)
    except StopIteration:
        raise ValueError(
            "recompute_batchnorm_stats: `batches` is empty; at least one batch is needed"
        ) from None
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(bn, bn.momentum) for bn in bns]
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        with no_grad():
            model(_first(first))
            for batch in batches:
                model(_first(batch))
    finally:
        for bn, momentum in momenta:
            bn.momentum = momentum
        for m, mode in modes:
            m.training = mode
    return model
