"""Bad input raises ValueError / TypeError / RuntimeError that says what was expected and got."""

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import kernels


def test_shape_mismatches():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) are not broadcastable"):
        tg.ones(2, 3) + tg.ones(4)
    with pytest.raises(ValueError, match=r"matmul: \(3, 4\) @ \(5, 2\): inner dims 4 != 5"):
        tg.ones(3, 4) @ tg.ones(5, 2)
    with pytest.raises(ValueError, match="batch dims"):
        tg.ones(2, 3, 4) @ tg.ones(3, 4, 2)
    with pytest.raises(ValueError, match=r"cannot reshape \(2, 3\) \(6 elements\) into \(4,\)"):
        tg.ones(2, 3).reshape(4)
    with pytest.raises(ValueError, match="permutation"):
        tg.ones(2, 3).permute(0, 0)
    with pytest.raises(ValueError, match="out of range"):
        tg.ones(2, 3).sum(axis=2)
    with pytest.raises(IndexError, match=r"shape \(2, 3\)"):
        tg.ones(2, 3)[5]
    with pytest.raises(ValueError, match="except along axis 0"):
        tg.cat([tg.ones(2, 3), tg.ones(2, 4)])


def test_conv_and_pool_errors():
    x = tg.ones(1, 3, 5, 5)
    with pytest.raises(ValueError, match=r"expected 4D input \(N, C, H, W\), got 3D"):
        F.conv2d(tg.ones(3, 5, 5), tg.ones(2, 3, 3, 3))
    with pytest.raises(ValueError, match="input has 3 channels but weight"):
        F.conv2d(x, tg.ones(2, 4, 3, 3))
    with pytest.raises(ValueError, match="does not fit"):
        F.conv2d(x, tg.ones(2, 3, 7, 7))
    with pytest.raises(ValueError, match="stride: expected an int >= 1"):
        F.conv2d(x, tg.ones(2, 3, 3, 3), stride=0)
    with pytest.raises(ValueError, match="bias of shape"):
        F.conv2d(x, tg.ones(2, 3, 3, 3), tg.ones(3))
    with pytest.raises(NotImplementedError, match="groups"):
        F.conv2d(x, tg.ones(2, 3, 3, 3), groups=3)
    with pytest.raises(ValueError, match="at most half the kernel size"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="expected 4D input"):
        F.max_pool2d(tg.ones(5, 5), 2)


def test_loss_errors():
    logits = tg.ones(3, 4)
    with pytest.raises(ValueError, match=r"expected target of shape \(3,\), got \(2,\)"):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 4\)"):
        F.cross_entropy(logits, np.array([0, 1, 4]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(logits, np.array([0.5, 1, 2]))
    with pytest.raises(ValueError, match=r"expected 2D input \(N, C\), got 1D"):
        F.cross_entropy(tg.ones(4), np.array([0]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, np.array([0, 1, 2]), reduction="avg")


def test_dtype_and_value_errors():
    with pytest.raises(TypeError, match="only float tensors|float32 or float64"):
        tg.Tensor(np.ones(2, dtype=np.int64), dtype=np.int64)
    with pytest.raises(TypeError, match="exponent must be"):
        tg.ones(2) ** tg.ones(2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(tg.ones(2), p=1.5)
    with pytest.raises(TypeError, match="pass either axis= or dim="):
        tg.ones(2, 2).sum(axis=0, dim=1)


def test_kernel_dispatch_validates_before_compiled_code():
    a32, a64 = np.ones((2, 3), np.float32), np.ones((3, 2), np.float64)
    with pytest.raises(TypeError, match=r"one dtype \(got a=float32, b=float64\)"):
        kernels.matmul(a32, a64)
    with pytest.raises(TypeError, match=r"float32 or float64 in native byte order \(got <i8\)"):
        kernels.matmul(np.ones((2, 2), np.int64), np.ones((2, 2), np.int64))
    with pytest.raises(ValueError, match="inner dims"):
        kernels.matmul(a32, a32)
    with pytest.raises(ValueError, match=r"weight: expected shape \(3,\) \(got \(2,\)\)"):
        kernels.batch_norm_forward_train(a32, np.ones(2, np.float32), np.ones(3, np.float32), 1e-5)
    with pytest.raises(ValueError, match=r"argmax: expected values in \[0, 4\)"):
        kernels.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), 9), (1, 1, 2, 2))
    with pytest.raises(ValueError, match="set_backend"):
        kernels.set_backend("fortran")
    with pytest.raises(ValueError, match="set_num_threads"):
        kernels.set_num_threads(0)
