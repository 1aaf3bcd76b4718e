"""``tinygrad_bn.nn.functional``: the same functions as ``tinygrad_bn.functional``, so the
PyTorch habit ``import tinygrad_bn.nn.functional as F`` works too."""

from ..functional import (  # noqa: F401  (re-exports)
    batch_norm,
    conv1d,
    conv2d,
    cross_entropy,
    dropout,
    embedding,
    group_norm,
    instance_norm,
    layer_norm,
    linear,
    log_softmax,
    max_pool2d,
    mse_loss,
    nll_loss,
    relu,
    sigmoid,
    softmax,
    tanh,
)
