"""Direct calls of the compiled modules (tinygrad_bn._ext.conv2d, pool, batchnorm, _config),
past the kernel door: every bad argument is a TypeError or ValueError, never a read out of
bounds. Short tuples crashed the process before they were checked, so every case runs in
one child process (python this_file.py), which reports per case what was raised.
"""

import direct_calls
import numpy as np
import pytest

from tinygrad_bn import kernels as K

K.require_extension()


def _cases():
    """name -> a call that must raise TypeError or ValueError."""
    from tinygrad_bn._ext import _config, batchnorm, conv2d, elementwise, pool

    f4 = np.ones((2, 3, 5, 5), np.float32)
    w4 = np.ones((4, 3, 3, 3), np.float32)
    g4 = np.ones((2, 4, 3, 3), np.float32)
    big = f4.astype(">f4")
    strided = np.ones((2, 3, 5, 10), np.float32)[..., ::2]
    x2, c3 = np.ones((4, 3)), np.ones(3)
    p_y, p_arg = pool.max_pool2d_forward(f4, (2, 2), (2, 2), (0, 0))
    return {
        # conv2d
        "conv short stride": lambda: conv2d.conv2d_forward(f4, w4, (1,), (0,)),
        "conv short padding": lambda: conv2d.conv2d_forward(f4, w4, (1, 1), (0,)),
        "conv stride not ints": lambda: conv2d.conv2d_forward(f4, w4, "ab", (0, 0)),
        "conv stride 0": lambda: conv2d.conv2d_forward(f4, w4, (0, 1), (0, 0)),
        "conv negative padding": lambda: conv2d.conv2d_forward(f4, w4, (1, 1), (-3, 0)),
        "conv big-endian input": lambda: conv2d.conv2d_forward(big, w4, (1, 1), (0, 0)),
        "conv 3D input": lambda: conv2d.conv2d_forward(f4[0], w4, (1, 1), (0, 0)),
        "conv strided input": lambda: conv2d.conv2d_forward(strided, w4, (1, 1), (0, 0)),
        "conv mixed dtypes": lambda: conv2d.conv2d_forward(
            f4, w4.astype(np.float64), (1,) * 2, (0,) * 2
        ),
        "conv channels": lambda: conv2d.conv2d_forward(f4, w4[:, :2].copy(), (1, 1), (0, 0)),
        "conv window too big": lambda: conv2d.conv2d_forward(
            f4, np.ones((4, 3, 7, 7), np.float32), (1, 1), (0, 0)
        ),
        "conv not an array": lambda: conv2d.conv2d_forward(f4.tolist(), w4, (1, 1), (0, 0)),
        "conv backward grad shape": lambda: conv2d.conv2d_backward(
            f4, w4, g4[:, :, :2].copy(), (1, 1), (0, 0)
        ),
        "conv backward grad dtype": lambda: conv2d.conv2d_backward(
            f4, w4, g4.astype(np.float64), (1, 1), (0, 0)
        ),
        "conv backward short tuple": lambda: conv2d.conv2d_backward(f4, w4, g4, (1,), (0, 0)),
        "conv backward short mask": lambda: conv2d.conv2d_backward(
            f4, w4, g4, (1, 1), (0, 0), (True,)
        ),
        # pool
        "pool short kernel": lambda: pool.max_pool2d_forward(f4, (2,), (2, 2), (0, 0)),
        "pool short stride": lambda: pool.max_pool2d_forward(f4, (2, 2), (2,), (0, 0)),
        "pool short padding": lambda: pool.max_pool2d_forward(f4, (2, 2), (2, 2), (0,)),
        "pool padding over half": lambda: pool.max_pool2d_forward(f4, (2, 2), (1, 1), (2, 2)),
        "pool kernel too big": lambda: pool.max_pool2d_forward(f4, (9, 9), (1, 1), (0, 0)),
        "pool big-endian": lambda: pool.max_pool2d_forward(big, (2, 2), (2, 2), (0, 0)),
        "pool 3D": lambda: pool.max_pool2d_forward(f4[0], (2, 2), (2, 2), (0, 0)),
        "pool strided": lambda: pool.max_pool2d_forward(strided, (2, 2), (2, 2), (0, 0)),
        "pool backward int32 argmax": lambda: pool.max_pool2d_backward(
            p_y, p_arg.astype(np.int32), f4.shape
        ),
        "pool backward big-endian argmax": lambda: pool.max_pool2d_backward(
            p_y, p_arg.astype(">i8"), f4.shape
        ),
        "pool backward argmax shape": lambda: pool.max_pool2d_backward(
            p_y, p_arg[:, :1].copy(), f4.shape
        ),
        "pool backward short shape": lambda: pool.max_pool2d_backward(p_y, p_arg, (2, 3, 5)),
        "pool backward other planes": lambda: pool.max_pool2d_backward(p_y, p_arg, (2, 4, 5, 5)),
        "pool backward int grad": lambda: pool.max_pool2d_backward(p_arg, p_arg, f4.shape),
        # batchnorm
        "bn big-endian input": lambda: batchnorm.batch_norm_forward_train(
            x2.astype(">f8"), c3, c3, 1e-5
        ),
        "bn big-endian weight": lambda: batchnorm.batch_norm_forward_train(
            x2, c3.astype(">f8"), c3, 1e-5
        ),
        "bn short weight": lambda: batchnorm.batch_norm_forward_train(x2, c3[:2].copy(), c3, 1e-5),
        "bn 2D weight": lambda: batchnorm.batch_norm_forward_train(x2, x2, c3, 1e-5),
        "bn 1D input": lambda: batchnorm.batch_norm_forward_train(c3, c3, c3, 1e-5),
        "bn strided input": lambda: batchnorm.batch_norm_forward_train(
            np.ones((4, 6))[:, ::2], c3, c3, 1e-5
        ),
        "bn strided weight": lambda: batchnorm.batch_norm_forward_train(
            x2, np.ones(6)[::2], c3, 1e-5
        ),
        "bn empty channels": lambda: batchnorm.batch_norm_forward_train(
            np.ones((0, 3)), c3, c3, 1e-5
        ),
        "bn backward grad shape": lambda: batchnorm.batch_norm_backward(
            np.ones((5, 3)), x2, c3, c3, c3
        ),
        "bn backward short mean": lambda: batchnorm.batch_norm_backward(
            x2, x2, c3[:1].copy(), c3, c3
        ),
        "bn backward big-endian grad": lambda: batchnorm.batch_norm_backward(
            x2.astype(">f8"), x2, c3, c3, c3
        ),
        "bn backward short mask": lambda: batchnorm.batch_norm_backward(x2, x2, c3, c3, c3, (1, 1)),
        "bn eval short var": lambda: batchnorm.batch_norm_forward_eval(
            x2, c3, c3[:2].copy(), c3, c3, 1e-5
        ),
        "bn eval big-endian bias": lambda: batchnorm.batch_norm_forward_eval(
            x2, c3, c3, c3, c3.astype(">f8"), 1e-5
        ),
        "bn bad activation": lambda: batchnorm.batch_norm_forward_train(x2, c3, c3, 1e-5, "gelu"),
        # elementwise
        "act not an array": lambda: elementwise.activation_forward([1.0], "relu"),
        "act bad name": lambda: elementwise.activation_forward(x2, "gelu"),
        "act big-endian": lambda: elementwise.activation_forward(x2.astype(">f8"), "relu"),
        "act strided": lambda: elementwise.activation_forward(np.ones((4, 6))[:, ::2], "relu"),
        "act int": lambda: elementwise.activation_forward(np.ones(3, np.int64), "relu"),
        "act backward shape": lambda: elementwise.activation_backward(x2, c3, "sigmoid"),
        "act backward long grad": lambda: elementwise.activation_backward(
            np.ones(30), np.ones(3), "tanh"
        ),
        "act backward dtypes": lambda: elementwise.activation_backward(
            x2.astype(np.float32), x2, "relu"
        ),
        "bias act short bias": lambda: elementwise.bias_activation(
            x2.copy(), c3[:2].copy(), "relu"
        ),
        "bias act 2D bias": lambda: elementwise.bias_activation(x2.copy(), x2, "relu"),
        "running 2D": lambda: batchnorm.running_average(x2.copy(), x2, 0.9, 0.1),
        "running short stat": lambda: batchnorm.running_average(c3.copy(), c3[:2], 0.9, 0.1),
        "running dtypes": lambda: batchnorm.running_average(
            c3.copy(), c3.astype(np.float32), 0.9, 0.1
        ),
        "running read-only": lambda: batchnorm.running_average(
            np.frombuffer(bytes(24)), c3, 0.9, 0.1
        ),
        "running not an array": lambda: batchnorm.running_average([0.0] * 3, c3, 0.9, 0.1),
        "sum rows 1D": lambda: elementwise.sum_rows(c3),
        "sum rows 3D": lambda: elementwise.sum_rows(f4[0]),
        "sum rows strided": lambda: elementwise.sum_rows(np.ones((4, 6))[:, ::2]),
        "sum rows int": lambda: elementwise.sum_rows(np.ones((2, 3), np.int64)),
        "sum rows big-endian": lambda: elementwise.sum_rows(x2.astype(">f8")),
        "sum rows not an array": lambda: elementwise.sum_rows([[1.0]]),
        "bias act 1D input": lambda: elementwise.bias_activation(c3.copy(), c3, "relu"),
        "bias act 4D input": lambda: elementwise.bias_activation(f4.copy(), None, "relu"),
        "bias act strided": lambda: elementwise.bias_activation(
            np.ones((4, 6))[:, ::2], c3, "relu"
        ),
        "bias act read-only": lambda: elementwise.bias_activation(
            np.frombuffer(bytes(96)).reshape(4, 3), c3, "relu"
        ),
        "bias act dtypes": lambda: elementwise.bias_activation(
            x2.astype(np.float32), c3, "sigmoid"
        ),
        # _config
        "threads 0": lambda: _config.set_num_threads(0),
        "threads 100000": lambda: _config.set_num_threads(100000),
        "threads 2**31": lambda: _config.set_num_threads(2**31),
        "threads 1.5": lambda: _config.set_num_threads(1.5),
        "threads str": lambda: _config.set_num_threads("2"),
    }


def test_direct_calls_raise_never_crash():
    got = direct_calls.run(__file__)
    assert got.pop("threads unchanged") is True
    assert not direct_calls.not_raised_cleanly(got), got
    assert len(got) >= 60


@pytest.mark.parametrize("op", ["conv", "pool", "bn"])
def test_door_rejects_big_endian_with_a_type_error(op):
    """The door's contract: native byte order (a '>f4' array once gave garbage)."""
    x = np.ones((2, 3, 4, 4), ">f4")
    with pytest.raises(TypeError, match="native byte order"):
        if op == "conv":
            K.conv2d_forward(x, np.ones((1, 3, 3, 3), ">f4"))
        elif op == "pool":
            K.max_pool2d_forward(x, 2)
        else:
            K.batch_norm_forward_train(x[:, :, 0], np.ones(3, ">f4"), np.ones(3, ">f4"), 1e-5)


def test_door_passes_strided_arrays_as_contiguous_copies():
    """Non-contiguous inputs are the door's to copy; the results match contiguous ones."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 12))[..., ::2]
    w = rng.standard_normal((4, 3, 3, 3))
    with K.backend("cython"):
        np.testing.assert_array_equal(
            K.conv2d_forward(x, w, 1, 1), K.conv2d_forward(x.copy(), w, 1, 1)
        )
        np.testing.assert_array_equal(
            K.max_pool2d_forward(x, 2)[0], K.max_pool2d_forward(x.copy(), 2)[0]
        )
        xb = rng.standard_normal((8, 10))[:, ::2]
        c = np.ones(5)
        np.testing.assert_array_equal(
            K.batch_norm_forward_train(xb, c, c, 1e-5)[0],
            K.batch_norm_forward_train(xb.copy(), c, c, 1e-5)[0],
        )


if __name__ == "__main__":
    from tinygrad_bn._ext import _config

    before = _config.get_num_threads()
    unchanged = {"threads unchanged": lambda: _config.get_num_threads() == before}
    direct_calls.report(_cases(), **unchanged)
