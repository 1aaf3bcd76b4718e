"""Shared test setup: hypothesis profiles and kernel fixtures.

HYPOTHESIS_PROFILE picks the profile: "dev" (fast, the default), "ci" (thorough and
derandomized, used by .ci/run) or "explore" (many fresh random examples).
MNIST comes from the copy bundled with the package (tinygrad_bn/data/mnist_data), or from
$TINYGRAD_BN_DATA when that is set: the tests need nothing outside the clone.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# ci is derandomized: the same examples on every run, so a red CI is reproducible
# and never a coin toss; "explore" draws fresh random examples (use it locally).
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    print_blob=True,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

import pytest  # noqa: E402

from tinygrad_bn import kernels  # noqa: E402


@pytest.fixture(scope="module", params=["cython", "numpy"])
def each_backend(request):
    """Run a whole test module once per kernel backend; a missing build fails here."""
    with kernels.backend(request.param):
        yield request.param


@pytest.fixture(scope="module", params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Run a kernel test module with the compiled backend on 1 and on 2 OpenMP threads."""
    before = kernels.get_num_threads()
    kernels.set_num_threads(request.param)
    with kernels.backend("cython"):
        yield request.param
    kernels.set_num_threads(before)
