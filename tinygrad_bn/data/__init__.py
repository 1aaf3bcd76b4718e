"""Data: the IDX file format, MNIST (and MNIST-format datasets), mini-batches and preprocessing."""

from .batching import batches, flatten, to_float
from .idx import IDXError, read_idx, write_idx
from .mnist import (  # the mirror list is tinygrad_bn.data.mnist.MIRRORS (patch it there)
    MNIST,
    DatasetError,
    DatasetNotVerifiedWarning,
    Split,
    load_mnist,
    mnist_root,
)

__all__ = [
    "MNIST",
    "DatasetError",
    "DatasetNotVerifiedWarning",
    "IDXError",
    "Split",
    "batches",
    "flatten",
    "load_mnist",
    "mnist_root",
    "read_idx",
    "to_float",
    "write_idx",
]
