"""What both experiments share: data, curve statistics, output files."""

import json
import math
import os

import numpy as np

from .. import kernels
from .._atomic import write_text
from ..data import flatten, load_mnist, to_float


def load_data(data_dir, download, conv):
    """MNIST as float32 in [0, 1], converted once: ((x_train, y_train), (x_test, y_test)).

    Images are (N, 784) for the MLP or (N, 1, 28, 28) for the conv net; labels int64 (N,).
    """
    ds = load_mnist(root=data_dir, download=download)

    def prepare(images):
        x = to_float(images)
        return x[:, None] if conv else flatten(x)

    return ((prepare(ds.train.images), ds.train.labels), (prepare(ds.test.images), ds.test.labels))


def setup(out_dir, data_dir, download, threads, conv, eval_samples):
    """The start of every experiment: kernel threads, output folder, data, evaluation set.

    Returns (threads, (x_train, y_train), (x_eval, y_eval)); the evaluation set is the
    first `eval_samples` test images.
    """
    if threads is not None:
        kernels.set_num_threads(threads)
    os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
    train, (x_test, y_test) = load_data(data_dir, download, conv)
    n_eval = min(eval_samples, len(x_test))
    return (
        kernels.get_num_threads(),
        train,
        (np.ascontiguousarray(x_test[:n_eval]), y_test[:n_eval]),
    )


def steps_to_reach(steps, accs, target):
    """First evaluated step whose accuracy is >= target, or None."""
    for s, a in zip(steps, accs):
        if a >= target:
            return int(s)
    return None


def area_under_curve(steps, accs):
    """Mean accuracy over training (trapezoid rule, normalised by the step range): in [0, 1]."""
    steps, accs = np.asarray(steps, dtype=np.float64), np.asarray(accs, dtype=np.float64)
    if len(steps) < 2 or steps[-1] == steps[0]:
        return float(accs[-1]) if len(accs) else None
    area = np.sum((accs[1:] + accs[:-1]) / 2 * np.diff(steps))
    return float(area / (steps[-1] - steps[0]))


def json_safe(obj):
    """Replace NaN/inf by None and numpy scalars by Python ones, so json.dump writes valid JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path, obj):
    write_text(path, json.dumps(json_safe(obj), indent=1) + "\n")


def fmt_steps(s):
    return "not reached" if s is None else f"{s:,}"


def fmt_acc(a):
    return "n/a" if a is None else f"{100 * a:.2f}%"
