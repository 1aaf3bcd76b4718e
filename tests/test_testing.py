"""tinygrad_bn.testing, the toolkit users test their own ops with."""

import numpy as np
import pytest
from hypothesis import given

import tinygrad_bn as tg
from tinygrad_bn.function import Function
from tinygrad_bn.testing import (
    GradcheckError,
    arrays,
    assert_grad_close,
    assert_matches_numpy,
    broadcastable_shapes,
    shapes,
    tensors,
)


class Softplus(Function):
    """log(1 + exp(x)), written stably; the worked example of the docs."""

    def forward(self, x):
        self.x = x
        return np.logaddexp(0, x)

    def backward(self, grad):
        return (grad / (1 + np.exp(-self.x)),)


class BadSoftplus(Softplus):
    def backward(self, grad):
        return (grad * 0.5,)


@given(tensors())
def test_user_op_passes(x):
    assert_matches_numpy(Softplus.apply, lambda a: np.log1p(np.exp(a)), x.numpy())
    assert_grad_close(Softplus.apply, x)


def test_wrong_backward_is_caught_with_a_useful_message():
    x = tg.Tensor(np.array([[0.0, 2.0]]), requires_grad=True)
    with pytest.raises(AssertionError) as e:
        assert_grad_close(BadSoftplus.apply, x)
    assert isinstance(e.value, GradcheckError)
    assert "input 0" in str(e.value) and "index (0, 1)" in str(e.value)


def test_assert_matches_numpy_catches_value_shape_and_dtype():
    a = np.ones((2, 3))
    with pytest.raises(AssertionError):
        assert_matches_numpy(lambda t: t * 2, lambda x: x * 2.001, a)
    with pytest.raises(AssertionError, match="shape"):
        assert_matches_numpy(lambda t: t.sum(0), lambda x: x.sum(1), a)
    with pytest.raises(AssertionError, match="dtype"):
        assert_matches_numpy(lambda t: t.float(), lambda x: x, a)


@given(broadcastable_shapes())
def test_broadcastable_shapes_broadcast(pair):
    np.broadcast_shapes(*pair)


@given(shapes(), arrays(np.float32))
def test_strategies_are_bounded_and_finite(shape, a):
    assert all(1 <= s <= 4 for s in shape)
    assert a.dtype == np.float32 and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 3)
