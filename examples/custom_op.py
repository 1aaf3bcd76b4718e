"""Write your own differentiable op and check it with tinygrad_bn.testing.

An op is a ``Function`` subclass: ``forward`` gets NumPy arrays and saves what ``backward``
needs on ``self``; ``backward`` gets d(loss)/d(output) and returns one gradient per input.
``Softplus.apply(x)`` runs it and records it in the graph. The check is about ten lines:
hypothesis draws tensors, ``assert_matches_numpy`` compares the forward with a NumPy
reference, ``assert_grad_close`` compares the backward with float64 central differences.
Then the same check is run on an op with a deliberate bug, to show what a failure says.

    python examples/custom_op.py                 # needs the test extra: pip install ".[test]"
    python examples/custom_op.py --examples 200
"""

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # a plain `pip install .` has no hypothesis: say what to install
    sys.exit(
        "custom_op.py needs hypothesis, which the test extra installs: "
        'pip install "tinygrad_bn[test]" (from a clone: pip install ".[test]")'
    )

try:
    import tinygrad_bn as tg
except ImportError:  # run from a source checkout without `pip install`: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tinygrad_bn as tg
from tinygrad_bn.function import Function
from tinygrad_bn.testing import GradcheckError, assert_grad_close, assert_matches_numpy, tensors


class Softplus(Function):
    """softplus(x) = log(1 + exp(x)), a smooth ReLU; its derivative is sigmoid(x)."""

    def forward(self, x):
        self.x = x
        return np.logaddexp(0, x)  # log(exp(0) + exp(x)) without overflow for large x

    def backward(self, grad):
        return (grad * (0.5 + 0.5 * np.tanh(0.5 * self.x)),)  # sigmoid(x), overflow-free


class BuggySoftplus(Softplus):
    def backward(self, grad):
        return (grad * np.exp(self.x) / (1 + np.exp(self.x)) ** 2,)  # sigmoid' by mistake


def softplus(x):
    return Softplus.apply(x)


def check(op, examples):
    """Forward against NumPy and backward against central differences, on drawn tensors."""

    @settings(max_examples=examples, deadline=None, database=None)
    @given(tensors(), st.sampled_from([np.float32, np.float64]))
    def run(x, dtype):
        assert_matches_numpy(op, lambda a: np.logaddexp(0, a), x.numpy().astype(dtype))
        assert_grad_close(op, x)

    run()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--examples", type=int, default=50, help="hypothesis examples per check")
    args = p.parse_args(argv)
    if args.examples < 1:
        p.error("--examples must be >= 1")

    x = tg.Tensor([-2.0, 0.0, 3.0], requires_grad=True)
    y = softplus(x)
    y.sum().backward()
    print(f"softplus({x.tolist()}) = {np.round(y.tolist(), 4).tolist()}")
    print(f"gradient (= sigmoid(x)):  {np.round(x.grad.tolist(), 4).tolist()}")

    check(softplus, args.examples)
    print(
        f"Softplus: forward matches NumPy and backward matches central differences "
        f"({args.examples} hypothesis examples)"
    )

    try:
        check(BuggySoftplus.apply, args.examples)
    except GradcheckError as e:
        print(f"BuggySoftplus: caught as expected:\n  {str(e).splitlines()[0]}")
    else:
        sys.exit("error: the gradient check missed the bug in BuggySoftplus")


if __name__ == "__main__":
    main()
