"""argparse value types shared by the command line and the benchmarks: bad values become
one-line errors (exit status 2) that say what was expected and what was got."""

import argparse
import math
import os

from ._threads import MAX_THREADS

# Bounds shared by the size options of every command, said in --help: beyond them a run
# would never end.
MAX_STEPS = 10_000_000
MAX_SEEDS = 100
MAX_SEED = 2**32 - 1


def _number(text, convert, expected):
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected} (got {text!r})") from None


def int_in_range(minimum, maximum=None):
    """A type for integers in [minimum, maximum] (no upper bound when maximum is None)."""
    expected = (
        f"an integer >= {minimum}"
        if maximum is None
        else f"an integer from {minimum} to {maximum:,}"
    )

    def parse(text):
        value = _number(text, int, expected)
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected} (got {value})")
        return value

    return parse


def int_at_least(minimum):
    """A type for integers >= minimum."""
    return int_in_range(minimum)


positive_int = int_at_least(1)


def thread_count(text):
    """A type for --threads: the bound of kernels.set_num_threads, 1..MAX_THREADS."""
    value = _number(text, int, f"an integer in [1, {MAX_THREADS}]")
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected an integer in [1, {MAX_THREADS}] (got {value})")
    return value


def positive_float(text):
    value = _number(text, float, "a number > 0")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0 (got {text})")
    return value


def fraction(text):
    """A type for numbers in [0, 1): dropout probabilities, momentum."""
    value = _number(text, float, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) (got {text})")
    return value


def existing_dir(text):
    """A type for a directory that must exist (an input folder)."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected an existing directory (got {text})")
    return text


def output_dir(text):
    """A type for an output folder: it may not exist yet, but must not be a file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a directory, got the file {text}")
    return text


def new_file(text):
    """A type for an output file path whose folder exists: checked before any work is done."""
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a file path, got the directory {text}")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"expected a file in an existing folder (got {text})")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"expected a writable folder (got {text})")
    return text
