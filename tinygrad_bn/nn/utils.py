"""BatchNorm utilities for inference: folding into the layer before, exact population stats."""

import copy
import warnings

import numpy as np

from ..tensor import Tensor, no_grad
from .batchnorm import BatchNorm1d, BatchNorm2d, _BatchNorm
from .layers import Conv2d, Identity, Linear, Sequential
from .module import Module, Parameter

_FOLDABLE = ((Linear, BatchNorm1d), (Conv2d, BatchNorm2d))


class FoldedBatchNorm1d(Identity):
    """Stands where a BatchNorm1d was folded into the Linear before it; passes (N, F) through.

    The fold is exact only when the BatchNorm normalized the Linear's output features, that is
    for 2-D input: on (N, L, F) input BatchNorm1d normalizes dim 1 (L), not the features, so
    anything but 2-D input raises instead of computing something else.
    """

    def forward(self, x):
        if x.ndim != 2:
            raise ValueError(
                "FoldedBatchNorm1d: expected 2D input, as the folded Linear + BatchNorm1d was "
                f"(got {x.ndim}D input)"
            )
        return x


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


def _use_counts(model):
    """How often each module and each parameter is registered anywhere in ``model``."""
    counts = {}
    for m in model.modules():
        for child in list(m._modules.values()) + list(m._parameters.values()):
            if child is not None:
                counts[id(child)] = counts.get(id(child), 0) + 1
    return counts


def _why_not(seq, layer, bn, counts):
    """None when folding bn into layer provably keeps what seq computes, else the reason."""
    if type(seq).forward is not Sequential.forward:
        return f"{type(seq).__name__} overrides Sequential.forward"
    for m in (layer, bn):
        base = next(t for t in (Linear, Conv2d, BatchNorm1d, BatchNorm2d) if isinstance(m, t))
        if type(m).forward is not base.forward:
            return f"{type(m).__name__} overrides {base.__name__}.forward"
        if counts.get(id(m), 0) != 1:
            return f"the {type(m).__name__} is used more than once in the model"
    for p in layer._parameters.values():
        if p is not None and counts.get(id(p), 0) != 1:
            return f"the {type(layer).__name__}'s parameters are shared with another module"
    out = layer.out_features if isinstance(layer, Linear) else layer.out_channels
    if bn.num_features != out:
        return f"the {type(bn).__name__} has {bn.num_features} features, the layer {out} outputs"
    var = bn.running_var.data.astype(np.float64)
    stats = [bn.running_mean.data, var] + ([bn.weight.data, bn.bias.data] if bn.affine else [])
    if not all(np.isfinite(a).all() for a in stats) or not (var + bn.eps > 0).all():
        return "its running statistics or affine parameters are not finite, or var + eps <= 0"
    return None


def fold_batchnorm(model):
    """A new eval-mode model where each BatchNorm right after a Linear/Conv2d is folded in.

    Inside every Sequential (recursively), a Linear followed by a BatchNorm1d, or a Conv2d
    followed by a BatchNorm2d, becomes one layer with W' = W * gamma / sqrt(var + eps)
    (per output unit) and b' = (b - mean) * gamma / sqrt(var + eps) + beta. A BatchNorm2d is
    replaced by Identity; a BatchNorm1d by FoldedBatchNorm1d, which raises for anything but
    (N, features) input (on (N, L, F) input the BatchNorm normalized L, not the features).
    `model` itself is not modified. Only what provably computes the same is folded: both
    modules used once in the model (parameters not shared), neither (nor the Sequential)
    overriding forward, num_features == the layer's outputs, finite statistics with
    var + eps > 0. Any other pair is left as it is, with a UserWarning saying why; BatchNorms
    without running statistics (track_running_stats=False) use batch statistics at inference
    and are left as they are, silently.
    Raises TypeError if `model` is not a Module.
    """
    if not isinstance(model, Module):
        raise TypeError(f"fold_batchnorm: expected a Module (got {type(model).__name__})")
    folded = copy.deepcopy(model).eval()
    counts = _use_counts(folded)
    for seq_name, seq in list(folded.named_modules()):
        if not isinstance(seq, Sequential):
            continue
        names = list(seq._modules)
        for prev_name, name in zip(names, names[1:]):
            layer, bn = seq._modules[prev_name], seq._modules[name]
            if not any(isinstance(layer, lt) and isinstance(bn, bt) for lt, bt in _FOLDABLE):
                continue
            if not bn.track_running_stats:
                continue
            why = _why_not(seq, layer, bn, counts)
            if why is not None:
                where = f"{seq_name}.{prev_name}" if seq_name else prev_name
                warnings.warn(
                    f"fold_batchnorm: not folding the {type(bn).__name__} after {where}: {why}",
                    UserWarning,
                    stacklevel=2,
                )
                continue
            with no_grad():
                _fold_pair(layer, bn)
            setattr(seq, name, FoldedBatchNorm1d() if isinstance(bn, BatchNorm1d) else Identity())
    return folded.eval()  # the new Identity layers too


def _first(batch):
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x))


def _running_stats(bn):
    return (bn.running_mean, bn.running_var, bn.num_batches_tracked)


def recompute_batchnorm_stats(model, batches):
    """Reset every BatchNorm's running statistics and recompute them exactly over `batches`.

    `batches` is an iterable of inputs (Tensors or arrays) or of (x, y) pairs (x is used).
    Each batch is run forward in training mode under no_grad with momentum=None, so the
    running estimates become the cumulative averages of the batch means and of the
    unbiased batch variances (Algorithm 2 of Ioffe & Szegedy 2015). Each BatchNorm's
    momentum and every module's training flag are restored afterwards; if a batch fails, the
    running statistics are restored too, so the model is as it was. Returns `model`.
    Raises TypeError if `model` is not a Module, ValueError if `batches` is empty.
    """
    if not isinstance(model, Module):
        raise TypeError(
            f"recompute_batchnorm_stats: expected a Module (got {type(model).__name__})"
        )
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
    stats = [(buf, buf.data.copy()) for bn in bns for buf in _running_stats(bn)]
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        with no_grad():
            model(_first(first))
            for batch in batches:
                model(_first(batch))
    except BaseException:  # a bad batch, or Ctrl-C: the old statistics, not half-new ones
        for buf, saved in stats:
            buf.data[...] = saved
        raise
    finally:
        for bn, momentum in momenta:
            bn.momentum = momentum
        for m, mode in modes:
            m.training = mode
    return model
