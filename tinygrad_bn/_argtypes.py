"""argparse value types shared by the command line and the benchmarks: bad values become
one-line errors that say what was expected and what was got."""

import argparse
import math

from ._ext import MAX_THREADS


def _number(text, convert, expected):
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def int_at_least(minimum):
    """A type for integers >= minimum."""
    expected = f"an integer >= {minimum}"

    def parse(text):
        value = _number(text, int, expected)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def thread_count(text):
    """A type for --threads: the bound of kernels.set_num_threads, 1..MAX_THREADS."""
    value = _number(text, int, f"an integer in [1, {MAX_THREADS}]")
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected an integer in [1, {MAX_THREADS}] (got {value})")
    return value


def positive_float(text):
    value = _number(text, float, "a number > 0")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def probability(text):
    value = _number(text, float, "a probability in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {value}")
    return value
