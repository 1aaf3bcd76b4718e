"""Direct calls of the compiled functions, each case run in a child process, because a
memory-safety bug crashes the process instead of failing an assert.

A test file defines ``_cases()`` ({name: zero-argument call}), ends with
``if __name__ == "__main__": direct_calls.report(_cases())``, and its test asserts on
``direct_calls.run(__file__)``: {name: the exception class name, or "no error"}.
"""

import json
import subprocess
import sys

RAISED_CLEANLY = ("TypeError", "ValueError")


def report(cases, **extra):
    """The child: run every case, print the outcome of each as one JSON line."""
    out = {}
    for name, call in cases.items():
        try:
            call()
            out[name] = "no error"
        except Exception as e:  # noqa: BLE001 - the type is what the parent checks
            out[name] = type(e).__name__
    out.update({name: value() for name, value in extra.items()})
    print(json.dumps(out))


def run(test_file):
    """The parent: run `test_file` as the child; its outcomes, after asserting it did not crash."""
    proc = subprocess.run([sys.executable, test_file], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"child crashed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def not_raised_cleanly(outcomes):
    """The cases that did something other than raise TypeError or ValueError."""
    return {k: v for k, v in outcomes.items() if v not in RAISED_CLEANLY}
