"""Importing tinygrad_bn: one warning, with its cause and its fix, when the compiled kernels
are missing, instead of a silent fall back to the NumPy reference kernels."""

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import tinygrad_bn

PACKAGE = Path(tinygrad_bn.__file__).resolve().parent

# Counts the warnings of `import tinygrad_bn` (and of more imports after it: still one).
PROBE = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import tinygrad_bn
    from tinygrad_bn import kernels, nn
    import tinygrad_bn.functional
print(len(caught))
for w in caught:
    print(w.category.__name__, w.message)
print("fallback:", kernels.info()["numpy_fallback"])
"""

# Hides the compiled modules, as an unbuilt source tree has none.
BLOCKER = """
import sys
class HideExtension:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("tinygrad_bn._ext."):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
sys.meta_path.insert(0, HideExtension())
"""


def _probe(code, pythonpath, no_site=False):
    """Run `code` in a fresh interpreter; with no_site, without site's .pth files (an editable
    install's finder among them), so that only `pythonpath` and site-packages are searched."""
    path = [str(pythonpath)] + (site.getsitepackages() if no_site else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    flags = ["-S"] if no_site else []
    proc = subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=pythonpath,  # `-c` puts the working directory first on sys.path
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_no_warning_when_the_kernels_are_built():
    out = _probe(PROBE, PACKAGE.parent)
    assert out.startswith("0\n") and "fallback: []" in out, out


def test_unbuilt_source_tree_warns_once_with_the_fix():
    out = _probe(BLOCKER + PROBE, PACKAGE.parent)
    count, warning = out.splitlines()[:2]
    assert count == "1", out
    assert warning.startswith("RuntimeWarning tinygrad_bn: compiled kernels missing")
    assert "unbuilt source tree" in warning and str(PACKAGE.parent) in warning
    assert "pip install -e ." in warning and "python setup.py build_ext --inplace" in warning
    assert "fallback: ['matmul'" in out  # and kernels.info() still says what fell back


def test_installed_copy_without_kernels_says_reinstall(tmp_path):
    # a copy of the package without its compiled modules and with no setup.py beside it
    shutil.copytree(
        PACKAGE,
        tmp_path / "site" / "tinygrad_bn",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "mnist_data"),
    )
    out = _probe(PROBE, tmp_path / "site", no_site=True)
    count, warning = out.splitlines()[:2]
    assert count == "1", out
    assert "no working compiled kernels" in warning and "reinstall" in warning
