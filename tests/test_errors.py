"""Bad input raises ValueError / TypeError / RuntimeError that says what was expected and got."""

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import kernels, nn


def test_shape_mismatches():
    with pytest.raises(
        ValueError, match=r"add: expected shapes that broadcast \(got \(2, 3\) and \(4,\)\)"
    ):
        tg.ones(2, 3) + tg.ones(4)
    with pytest.raises(
        ValueError, match=r"matmul: expected inner dims to match \(got \(3, 4\) @ \(5, 2\)\)"
    ):
        tg.ones(3, 4) @ tg.ones(5, 2)
    with pytest.raises(ValueError, match="matmul: expected batch dims that broadcast"):
        tg.ones(2, 3, 4) @ tg.ones(3, 4, 2)
    with pytest.raises(ValueError, match=r"reshape: expected a shape with 6 elements \(got \(4,\)"):
        tg.ones(2, 3).reshape(4)
    with pytest.raises(ValueError, match="permute: expected a permutation"):
        tg.ones(2, 3).permute(0, 0)
    with pytest.raises(ValueError, match=r"dim: expected a dim in \[-2, 1\] \(got 2"):
        tg.ones(2, 3).sum(axis=2)
    with pytest.raises(IndexError, match=r"index: expected an index valid for shape \(2, 3\)"):
        tg.ones(2, 3)[5]
    with pytest.raises(
        ValueError,
        match=r"cat: expected shapes equal to \(2, 3\) except along axis 0 \(got \(2, 4\)",
    ):
        tg.cat([tg.ones(2, 3), tg.ones(2, 4)])


def test_conv_and_pool_errors():
    x = tg.ones(1, 3, 5, 5)
    with pytest.raises(
        ValueError, match=r"conv2d: expected 4D input \(N, C, H, W\) \(got 3D input\)"
    ):
        F.conv2d(tg.ones(3, 5, 5), tg.ones(2, 3, 3, 3))
    with pytest.raises(
        ValueError,
        match=r"conv2d: expected input with 4 channels, as weight \(2, 4, 3, 3\) \(got 3",
    ):
        F.conv2d(x, tg.ones(2, 4, 3, 3))
    with pytest.raises(
        ValueError, match=r"conv2d: expected a window \(7, 7\) .* that fits the input size \(5, 5\)"
    ):
        F.conv2d(x, tg.ones(2, 3, 7, 7))
    with pytest.raises(
        ValueError, match=r"conv2d: expected stride to be an integer >= 1 \(got 0\)"
    ):
        F.conv2d(x, tg.ones(2, 3, 3, 3), stride=0)
    with pytest.raises(ValueError, match=r"conv2d: expected bias of shape \(2,\) \(got \(3,\)\)"):
        F.conv2d(x, tg.ones(2, 3, 3, 3), tg.ones(3))
    with pytest.raises(ValueError, match=r"conv2d: expected input with 9 channels, as weight"):
        F.conv2d(x, tg.ones(2, 3, 3, 3), groups=3)
    with pytest.raises(
        ValueError, match=r"max_pool2d: expected padding at most half the kernel size \(2, 2\)"
    ):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="max_pool2d: expected 4D input"):
        F.max_pool2d(tg.ones(5, 5), 2)


def test_loss_errors():
    logits = tg.ones(3, 4)
    with pytest.raises(
        ValueError, match=r"cross_entropy: expected target of shape \(3,\) \(got \(2,\)\)"
    ):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"expected target values in \[0, 4\) \(got \[0, 4\]\)"):
        F.cross_entropy(logits, np.array([0, 1, 4]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(logits, np.array([0.5, 1, 2]))
    with pytest.raises(
        ValueError, match=r"cross_entropy: expected input \(C,\), \(N, C\) or .* \(got 0D input\)"
    ):
        F.cross_entropy(tg.Tensor(1.0), np.array(0))
    with pytest.raises(
        ValueError, match=r"cross_entropy: expected target of shape \(\) \(got \(1,\)\)"
    ):
        F.cross_entropy(tg.ones(4), np.array([0]))
    with pytest.raises(ValueError, match=r"nll_loss: expected target of shape \(3,\)"):
        F.nll_loss(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, np.array([0, 1, 2]), reduction="avg")


def test_dtype_and_value_errors():
    with pytest.raises(TypeError, match="expected dtype float32, float64, bool"):
        tg.Tensor(np.ones(2), dtype=np.complex64)
    with pytest.raises(TypeError, match="pow: expected a number, array or Tensor exponent"):
        tg.ones(2) ** "2"
    with pytest.raises(
        ValueError, match=r"dropout: expected a probability p between 0 and 1 \(got 1.5\)"
    ):
        F.dropout(tg.ones(2), p=1.5)
    with pytest.raises(TypeError, match="expected axis= or dim=, not both"):
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


# ------------------------------------------------- every user path refuses before the kernels

_x4 = tg.ones(1, 3, 5, 5)
USER_PATHS = [  # (what the user calls, error type, the message it must give)
    (lambda: tg.ones(3, 4) @ tg.ones(5, 2), ValueError, r"matmul: expected inner dims"),
    (lambda: tg.ones(3, 4).matmul(tg.ones(5)), ValueError, r"matmul: expected inner dims"),
    (lambda: np.ones((2, 3)) @ tg.ones(4, 2), ValueError, r"matmul: expected inner dims"),
    (lambda: tg.ones(3) @ tg.Tensor(2.0), ValueError, r"matmul: expected operands with at least"),
    (lambda: tg.ones(2, 3, 4) @ tg.ones(3, 4, 2), ValueError, r"matmul: expected batch dims"),
    (lambda: F.linear(tg.ones(4, 5), tg.ones(2, 3)), ValueError, r"linear: expected input's last"),
    (lambda: nn.Linear(3, 2)(tg.ones(4, 5)), ValueError, r"linear: expected input's last dim"),
    (lambda: F.linear(tg.ones(4, 3), tg.ones(2, 3), tg.ones(3)), ValueError, r"linear: .*bias"),
    (lambda: F.linear(tg.ones(4, 3), tg.ones(3)), ValueError, r"linear: expected input \(\*"),
    (lambda: F.conv2d(_x4, tg.ones(2, 4, 3, 3)), ValueError, r"conv2d: expected input with 4 ch"),
    (lambda: F.conv2d(_x4, tg.ones(2, 3, 7, 7)), ValueError, r"conv2d: expected a window"),
    (lambda: nn.Conv2d(3, 2, 7)(_x4), ValueError, r"conv2d: expected a window"),
    (lambda: F.conv2d(_x4, tg.ones(2, 3, 3, 3), stride=0), ValueError, r"conv2d: .*stride"),
    (lambda: F.conv2d(_x4, tg.ones(2, 3, 3, 3), padding=-1), ValueError, r"conv2d: .*padding"),
    (lambda: F.conv2d(_x4, tg.ones(2, 3, 3, 3), stride=(1, 2, 3)), ValueError, r"conv2d: .*pair"),
    (lambda: F.conv2d(_x4, tg.ones(2, 3, 3)), ValueError, r"conv2d: expected 4D weight"),
    (lambda: F.max_pool2d(_x4, 2, padding=2), ValueError, r"max_pool2d: expected padding at"),
    (lambda: F.max_pool2d(_x4, 7), ValueError, r"max_pool2d: expected a window"),
    (lambda: nn.MaxPool2d(7)(_x4), ValueError, r"max_pool2d: expected a window"),
    (lambda: F.max_pool2d(_x4, 0), ValueError, r"max_pool2d: expected kernel_size to be an"),
    (lambda: F.max_pool2d(_x4, 2, stride=0), ValueError, r"max_pool2d: expected stride to be an"),
    (lambda: F.batch_norm(tg.ones(1, 3), None, None, training=True), ValueError, r"1 value per"),
    (lambda: nn.BatchNorm1d(3)(tg.ones(1, 3)), ValueError, r"batch_norm: expected more than 1"),
    (lambda: nn.BatchNorm2d(3)(tg.ones(1, 3, 1, 1)), ValueError, r"expected more than 1 value"),
    (lambda: F.batch_norm(tg.ones(4, 3), None, None, training=True, eps=0), ValueError, "eps"),
    (
        lambda: F.batch_norm(tg.ones(4, 3), tg.zeros(3), tg.ones(3), training=False, eps=0.0),
        ValueError,
        r"batch_norm: expected eps to be a number > 0 \(got 0.0\)",
    ),
    (lambda: nn.BatchNorm1d(4, eps=0), ValueError, r"BatchNorm1d: expected eps to be a number > 0"),
    (lambda: nn.BatchNorm1d(3)(tg.ones(4, 5)), ValueError, r"BatchNorm1d: expected 3 channels"),
]


@pytest.mark.parametrize("call, error, message", USER_PATHS)
def test_user_layer_refuses_bad_input_before_any_kernel(call, error, message, monkeypatch):
    """The check lives at the layer the user called: no kernel is reached with bad input."""
    for name in kernels.KERNELS:

        def reached(*args, _name=name, **kwargs):
            raise AssertionError(f"kernel {_name} reached with bad input")

        monkeypatch.setattr(kernels, name, reached)
    with pytest.raises(error, match=message):
        call()
