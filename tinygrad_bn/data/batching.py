"""Mini-batches and preprocessing for in-memory NumPy datasets."""

import operator

import numpy as np


def batches(x, y, batch_size, shuffle=True, seed=None, drop_last=False):
    """Iterate once (one epoch) over ``(xb, yb)`` mini-batches of ``x`` (N, ...) and ``y`` (N, ...).

    ``shuffle`` draws one permutation per call from ``numpy.random.default_rng(seed)``: an int
    seed gives the same order every call; a ``numpy.random.Generator`` is used (and advanced)
    as is, so successive epochs differ but the whole run is reproducible; None draws fresh
    entropy. Batches are new arrays (writing to them never changes ``x`` or ``y``); the last
    one is smaller when N is not a multiple of ``batch_size``, unless ``drop_last``.
    Raises (at the call, not at the first ``next``) TypeError for a non-integer batch_size or a
    bad seed, ValueError for batch_size < 1, 0-d inputs, or len(x) != len(y).
    """
    x, y = np.asarray(x), np.asarray(y)
    if isinstance(batch_size, bool):
        raise TypeError("batches: batch_size must be an int (got bool)")
    try:
        batch_size = operator.index(batch_size)
    except TypeError:
        raise TypeError(
            f"batches: batch_size must be an int (got {type(batch_size).__name__})"
        ) from None
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be >= 1 (got {batch_size})")
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(
            f"batches: x and y must have a leading batch axis (got shapes {x.shape} and {y.shape})"
        )
    if len(x) != len(y):
        raise ValueError(f"batches: x and y must have the same length (got {len(x)} and {len(y)})")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer, np.random.Generator))
    ):
        raise TypeError(
            "batches: seed must be None, an int or a numpy.random.Generator "
            f"(got {type(seed).__name__})"
        )
    n = len(x)
    # The order is drawn now, not at the first next(): the RNG state after the call is defined.
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return _iterate(x, y, order, batch_size, stop)


def _iterate(x, y, order, batch_size, stop):
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def to_float(images, dtype=np.float32):
    """Scale uint8 images (any shape) to floats in [0, 1]: ``images / 255`` as ``dtype``.

    Raises TypeError unless ``images`` is uint8 and ``dtype`` is a floating dtype.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"to_float: expected uint8 images (got {images.dtype})")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"to_float: dtype must be a floating dtype such as float32 (got {dtype})")
    out = images.astype(dtype)
    out /= 255  # division, not * (1/255): 255 maps to exactly 1.0
    return out


def flatten(images):
    """Reshape (N, H, W) (or any (N, ...)) to (N, H*W); a view when possible, like torch.flatten.

    Raises ValueError for fewer than 2 dimensions.
    """
    images = np.asarray(images)
    if images.ndim < 2:
        raise ValueError(
            f"flatten: expected images of shape (N, H, W) or (N, ...) (got shape {images.shape})"
        )
    # Explicit size, not -1: reshape(0, -1) is ambiguous and fails on an empty batch.
    return images.reshape(len(images), int(np.prod(images.shape[1:])))
