"""Run the kernel benchmarks from a checkout: python benchmarks/run.py [--quick] [--json PATH].

The benchmark code lives in the package (tinygrad_bn/bench.py) so that `tinygrad-bn bench`
works after a plain install; this script only makes the checkout importable and calls it.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from tinygrad_bn.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
