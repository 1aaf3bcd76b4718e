"""tg.gradcheck itself: it passes correct backwards and catches wrong ones."""

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.function import Function


class WrongSquare(Function):
    """x**2 with a deliberately wrong backward (3x instead of 2x)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return (grad * 3 * self.x,)


def test_gradcheck_passes_correct_ops():
    x = tg.Tensor(np.random.default_rng(0).standard_normal((3, 2)), requires_grad=True)
    assert tg.gradcheck(lambda t: (t * t).sum(axis=1), [x]) is True


def test_gradcheck_names_input_index_and_values():
    x = tg.Tensor(np.array([[1.0, 2.0]]), requires_grad=True)
    y = tg.Tensor(np.array([0.5]), requires_grad=True)
    with pytest.raises(tg.GradcheckError) as e:
        tg.gradcheck(lambda a, b: WrongSquare.apply(a) * b, [x, y])
    msg = str(e.value)
    assert "input 0" in msg and "index (0, 1)" in msg and "analytic" in msg and "numerical" in msg


def test_gradcheck_checks_only_inputs_requiring_grad_and_runs_in_float64():
    x = tg.Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    c = tg.Tensor(np.array([3.0, 4.0], np.float32))
    seen = []

    def fn(a, b):
        seen.append(a.dtype)
        return a * b

    assert tg.gradcheck(fn, [x, c])
    assert set(seen) == {np.dtype(np.float64)}


def test_gradcheck_bad_usage():
    with pytest.raises(ValueError, match="requires_grad"):
        tg.gradcheck(lambda a: a * 2, [tg.Tensor([1.0])])
    with pytest.raises(TypeError, match="expected fn to return a Tensor"):
        tg.gradcheck(lambda a: 3.0, [tg.Tensor([1.0], requires_grad=True)])
