"""MNIST: find the four IDX files, download the missing ones, verify them, and load them.

MNIST itself ships with the package (``BUNDLED``: Yann LeCun and Corinna Cortes's MNIST,
CC BY-SA 3.0, see the README.txt there), so ``load_mnist()`` works offline; a directory
given by argument or by $TINYGRAD_BN_DATA wins over it.

Any directory holding the four standard file names loads the same way, so Fashion-MNIST,
KMNIST and other MNIST-format datasets work too; only files that claim to be MNIST (one of
them matches a known checksum) must all be MNIST.
"""

import hashlib
import http.client
import os
import sys
import time
import urllib.request
import warnings
from typing import NamedTuple

import numpy as np

from .._atomic import atomic_write
from .idx import GZIP_MAGIC, decompress, parse_idx

# Tried in order; each must serve <mirror><name>.gz. Tests point this at a file:// directory.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
DOWNLOAD_TIMEOUT = 30  # seconds per attempt
# The copy shipped as package data (the wheel and the sdist carry it).
BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_data")

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# SHA-256 of the DECOMPRESSED files: gzip output varies with the compressor, the IDX bytes do not.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_KNOWN = {digest: name for name, digest in SHA256.items()}
# Their sizes in bytes: what a download may inflate to, at most.
SIZES = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}


class DatasetError(ValueError):
    """A dataset directory holds a damaged or altered MNIST file, or files that do not fit."""


class DatasetNotVerifiedWarning(UserWarning):
    """The files match no known MNIST checksum: another MNIST-format dataset, not verified."""


class Split(NamedTuple):
    """One split: ``images`` uint8 (N, H, W), ``labels`` int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __repr__(self):
        return (
            f"Split(images={self.images.dtype}{self.images.shape}, "
            f"labels={self.labels.dtype}{self.labels.shape})"
        )


class MNIST(NamedTuple):
    """The two splits; unpacks as ``(x_train, y_train), (x_test, y_test)``.

    Also readable as ``ds.train.images`` or ``ds.train_images`` (and likewise for the rest).
    """

    train: Split
    test: Split

    @property
    def train_images(self):
        return self.train.images

    @property
    def train_labels(self):
        return self.train.labels

    @property
    def test_images(self):
        return self.test.images

    @property
    def test_labels(self):
        return self.test.labels


def mnist_root(root=None):
    """The dataset directory: ``root``, else $TINYGRAD_BN_DATA, else the bundled copy.

    The bundled copy is ``BUNDLED`` inside the installed package. Only when it is incomplete
    (a build that left the package data out) does the default fall back to the per-user cache
    directory, where missing files are downloaded: ``$XDG_CACHE_HOME/tinygrad_bn/mnist``, or
    ``~/.cache/tinygrad_bn/mnist`` when XDG_CACHE_HOME is unset or not absolute (as the XDG
    spec says).
    """
    if root is None:
        root = os.environ.get("TINYGRAD_BN_DATA") or None
    if root is None and all(_find(BUNDLED, name) for name in FILES):
        return BUNDLED
    if root is None:
        cache = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(cache):
            cache = os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(cache, "tinygrad_bn", "mnist")
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def load_mnist(root=None, download=True):
    """Load MNIST (or any MNIST-format dataset) from a directory of the four standard IDX files.

    Returns ``MNIST(train=Split(images, labels), test=Split(images, labels))`` with images uint8
    (N, H, W) and labels int64 (N,) (int64 like torchvision's targets: ready to index with).
    Files may be gzipped (``<name>.gz``) or raw (``<name>``); raw wins when both exist.
    ``root`` is resolved by mnist_root: the argument, else $TINYGRAD_BN_DATA, else the copy
    bundled with the package. With ``download=True`` files missing from ``root`` (an empty
    directory given as ``root``, say) are fetched from MIRRORS into it (atomically, checksum
    verified before they are kept).

    Verification judges the directory as a whole, by the SHA-256 of the decompressed files: if any
    file matches a known MNIST checksum, all four must match their own; if none does, the files are
    loaded as another MNIST-format dataset with a DatasetNotVerifiedWarning (warnings.warn).
    Raises FileNotFoundError (saying where to put which files) when files are missing and cannot
    be downloaded; DatasetError (a ValueError) naming the file for an altered MNIST file or for
    images/labels that do not fit together; IDXError (a ValueError) naming a malformed file.
    """
    root = mnist_root(root)
    if os.path.exists(root) and not os.path.isdir(root):
        raise NotADirectoryError(f"load_mnist: dataset root {root} is not a directory")
    paths = {name: _find(root, name) for name in FILES}
    missing = [name for name in FILES if paths[name] is None]
    if missing and not download:
        raise FileNotFoundError(_missing_message(root, missing))
    contents = {name: _read_and_hash(path) for name, path in paths.items() if path is not None}
    if missing:
        foreign = [paths[n] for n, (_, digest) in contents.items() if digest not in _KNOWN]
        if foreign:
            raise FileNotFoundError(
                _missing_message(root, missing)
                + f"\nNot downloading MNIST there: {', '.join(foreign)} matches no MNIST "
                "checksum (another dataset, or a damaged file)."
            )
        for name in missing:
            paths[name], contents[name] = _download(root, name, missing)
    _verify(root, paths, {name: digest for name, (_, digest) in contents.items()})
    arrays = {}
    for name in FILES:  # pop: each file's bytes are freed once parsed, halving peak memory
        arrays[name] = parse_idx(contents.pop(name)[0], name=paths[name])
    train = _split(paths, arrays, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    test = _split(paths, arrays, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DatasetError(
            f"{root}: train images are {train.images.shape[1:]} but test images are "
            f"{test.images.shape[1:]}; expected the same (H, W)"
        )
    return MNIST(train, test)


def _find(root, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    return None


# Digest cache keyed by the file's identity and stat times: a file changed after hashing gets a
# new ctime (which, unlike mtime, cannot be set back). Files changed within the last
# _RACY_SECONDS are not cached, as git does for its index: a change within the same timestamp
# tick could otherwise leave the stat unchanged.
_DIGEST_CACHE = {}
_RACY_SECONDS = 2.0


def _stat_key(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_and_hash(path):
    """Return (decompressed content, its SHA-256 hex digest) of ``path``."""
    with open(path, "rb") as f:
        before = _stat_key(os.fstat(f.fileno()))
        raw = f.read()
        after = _stat_key(os.fstat(f.fileno()))
    data = decompress(raw, name=path)
    if before != after:  # changed while read: a digest cached for `before` may not be of `data`
        return data, hashlib.sha256(data).hexdigest()
    digest = _DIGEST_CACHE.get(before)
    if digest is None:
        digest = hashlib.sha256(data).hexdigest()
        if time.time_ns() - max(before[3], before[4]) > _RACY_SECONDS * 1e9:
            _DIGEST_CACHE[before] = digest
    return data, digest


def _verify(root, paths, digests):
    if not any(digest in _KNOWN for digest in digests.values()):
        warnings.warn(
            f"{root}: files match no known MNIST checksum; loading them as an unverified "
            "MNIST-format dataset",
            DatasetNotVerifiedWarning,
            stacklevel=3,
        )
        return
    bad = []
    for name in FILES:
        digest = digests[name]
        if digest != SHA256[name]:
            hint = f" (that is MNIST's {_KNOWN[digest]})" if digest in _KNOWN else ""
            bad.append(f"  {paths[name]}: SHA-256 {digest}{hint}, expected {SHA256[name]}")
    if bad:
        fix = (
            "reinstall tinygrad_bn (pip install --force-reinstall tinygrad_bn), or set "
            "TINYGRAD_BN_DATA to a directory with good copies"
            if root == BUNDLED
            else "delete and re-download"
        )
        raise DatasetError(
            f"{root} holds MNIST files, but {len(bad)} of them is damaged or altered "
            f"(SHA-256 of the decompressed content differs); {fix}:\n" + "\n".join(bad)
        )


def _split(paths, arrays, images_name, labels_name):
    images, labels = arrays[images_name], arrays[labels_name]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"{paths[images_name]}: expected uint8 images of shape (N, H, W), "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"{paths[labels_name]}: expected integer labels of shape (N,), "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{paths[images_name]} has {len(images)} images but {paths[labels_name]} has "
            f"{len(labels)} labels; expected the same N"
        )
    return Split(images, labels.astype(np.int64))


def _download(root, name, missing):
    """Fetch ``<name>.gz`` from the first mirror with the right content: (path, (data, digest))."""
    errors = []
    limit = SIZES[name] + SIZES[name] // 1000 + 1024  # gzip's worst case adds ~0.03%
    for mirror in MIRRORS:
        url = mirror.rstrip("/") + "/" + name + ".gz"
        print(f"tinygrad_bn: downloading {url}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
                raw = response.read(limit + 1)  # bounded: a mirror could send without end
            if len(raw) > limit:
                raise ValueError(f"expected at most {limit} bytes (got more)")
            data = decompress(raw, name=url, max_size=SIZES[name])
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError is an OSError
            errors.append(f"  {url}: {e}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[name]:
            errors.append(f"  {url}: SHA-256 {digest}, expected {SHA256[name]}")
            continue
        os.makedirs(root, exist_ok=True)  # only now: a failed download leaves no empty directory
        path = os.path.join(root, name + (".gz" if raw[:2] == GZIP_MAGIC else ""))
        with atomic_write(path) as f:
            f.write(raw)
        return path, (data, digest)
    raise FileNotFoundError(
        _missing_message(root, missing)
        + f"\nDownloading {name}.gz failed from every mirror:\n"
        + "\n".join(errors)
    )


def _missing_message(root, missing):
    names = "\n".join(f"  {name}.gz" for name in FILES)
    return (
        f"MNIST files missing from {root}: {', '.join(missing)} (download failed or off; "
        f"put the files there, or set TINYGRAD_BN_DATA to a directory that has them).\n"
        f"Put these four files (gzipped as listed, or decompressed without .gz) in {root}:\n"
        f"{names}\n"
        "or pass load_mnist(root=...) or set TINYGRAD_BN_DATA to the directory that holds them."
    )
