"""Keep docs/tour.md, docs/api.md and README.md true.

- Every ```python block runs, in order, in one namespace per file. A block right after an
  ``<!-- excerpt: PATH -->`` line is a copy of source code instead: it must still match PATH
  (each run of lines between ``...`` lines verbatim, in order), and is not run.
- Every relative link points at a file or directory that exists.
- api.md mentions every public name of each documented namespace in that namespace's section,
  and every ``name(params)`` entry there lists the parameters the code really has.
- api.md's command-line section names every ``tinygrad-bn`` subcommand and option.
"""

import contextlib
import inspect
import io
import re
import traceback
from pathlib import Path

import pytest

import tinygrad_bn as tg
import tinygrad_bn.function  # noqa: F401  (documented modules that `import tinygrad_bn`
import tinygrad_bn.testing  # noqa: F401   does not load by itself)
from tinygrad_bn import kernels

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# file (relative to the repository) -> the directory its relative links start from
FILES = {"docs/tour.md": DOCS, "docs/api.md": DOCS, "README.md": ROOT}
EXCERPT = re.compile(r"<!--\s*excerpt:\s*(\S+)\s*-->")


def blocks(path):
    """(line number, code, excerpt source or None) for each ```python block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            prev = lines[i - 1].strip() if i else ""
            m = EXCERPT.fullmatch(prev)
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"{path.name}:{start + 1}: unterminated code block"
            out.append((start + 1, "\n".join(body), m and m.group(1)))
        i += 1
    return out


@contextlib.contextmanager
def restored_global_state():
    """Leave the kernel backend, thread count and default generator as they were."""
    from tinygrad_bn import tensor

    backend, threads = kernels.get_backend(), kernels.get_num_threads()
    rng = tensor._default_rng
    # One thread: on a busy 2-core machine spinning OpenMP threads made the tour's training
    # block 25x slower (0.5 s -> 13 s); the results do not depend on the thread count.
    kernels.set_num_threads(1)
    try:
        yield
    finally:
        kernels.set_backend(backend)
        kernels.set_num_threads(threads)
        tensor._default_rng = rng


@pytest.mark.parametrize("name", sorted(FILES))
def test_python_blocks_run(name):
    path = ROOT / name
    runnable = [(line, code) for line, code, src in blocks(path) if src is None]
    assert runnable, f"{name} has no runnable python block"
    namespace = {"__name__": f"docs_{name.replace('.', '_')}"}
    with restored_global_state(), contextlib.redirect_stdout(io.StringIO()):
        for line, code in runnable:
            try:
                exec(compile(code, f"{path}:{line}", "exec"), namespace)
            except Exception as e:
                where = [
                    f
                    for f in traceback.extract_tb(e.__traceback__)
                    if f.filename == f"{path}:{line}"
                ]
                at = line + where[-1].lineno if where else line
                raise AssertionError(
                    f"{name}: line {at} (in the python block at line {line}) "
                    f"failed: {type(e).__name__}: {e}"
                ) from e


@pytest.mark.parametrize("name", sorted(FILES))
def test_excerpts_match_their_source(name):
    path = ROOT / name
    for line, code, src in blocks(path):
        if src is None:
            continue
        source = (FILES[name] / src).read_text(encoding="utf-8")
        pos = 0
        for chunk in re.split(r"\n[ \t]*\.\.\.[ \t]*(?:\n|$)", code):
            if not chunk.strip():
                continue
            found = source.find(chunk, pos)
            assert found >= 0, (
                f"{name}:{line}: excerpt no longer matches {src} (from here):\n{chunk}"
            )
            pos = found + len(chunk)


def test_tour_has_excerpts_and_runnable_blocks():
    kinds = [src is not None for _, _, src in blocks(DOCS / "tour.md")]
    assert sum(kinds) >= 3 and kinds.count(False) >= 8


@pytest.mark.parametrize("name", sorted(FILES))
def test_relative_links_exist(name):
    path = ROOT / name
    text = path.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text) + EXCERPT.findall(text)
    relative = [u.split("#")[0] for u in links if not re.match(r"[a-z]+:", u)]
    assert relative, f"{name} links to no file of the project"
    for target in relative:
        if target:
            assert (FILES[name] / target).exists(), f"{name}: broken link {target}"


# ---------------------------------------------------------------- api.md coverage


def _sections():
    """{heading text inside backticks: section text} for api.md's '## `name`' headings."""
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    parts = re.split(r"^## (.*)$", text, flags=re.M)
    return {
        (re.findall(r"`([^`]+)`", h) or [h])[0]: body for h, body in zip(parts[1::2], parts[2::2])
    }


def _resolve(dotted):
    obj = tg
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def _defined_here(module):
    """Public functions and classes a module defines (or lists in __all__)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return set(names)
    return {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and v.__module__ == module.__name__
    }


def _package_names():
    """tg.*: public functions/classes defined anywhere in the package, and its subpackages."""
    names = {
        n
        for n, v in vars(tg).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and v.__module__.startswith("tinygrad_bn")
    }
    return names | {"functional", "nn", "optim", "data", "kernels", "testing"}


def _members(cls):
    return {n for n in dir(cls) if not n.startswith("_") and n not in dir(object)}


NAMESPACES = {
    "tinygrad_bn": _package_names,
    "tinygrad_bn.Tensor": lambda: _members(tg.Tensor),
    "tinygrad_bn.function": lambda: _defined_here(tg.function),
    "tinygrad_bn.functional": lambda: _defined_here(tg.functional),
    "tinygrad_bn.nn": lambda: _defined_here(tg.nn),
    "tinygrad_bn.nn.Module": lambda: _members(tg.nn.Module),
    "tinygrad_bn.nn.init": lambda: _defined_here(tg.nn.init),
    "tinygrad_bn.nn.utils": lambda: _defined_here(tg.nn.utils),
    "tinygrad_bn.optim": lambda: (
        _defined_here(tg.optim) | _members(tg.optim.Optimizer) | _members(tg.optim.LRScheduler)
    ),
    "tinygrad_bn.data": lambda: _defined_here(tg.data),
    "tinygrad_bn.kernels": lambda: _defined_here(tg.kernels),
    "tinygrad_bn.testing": lambda: _defined_here(tg.testing),
}


@pytest.mark.parametrize("namespace", sorted(NAMESPACES))
def test_api_mentions_every_public_name(namespace):
    sections = _sections()
    assert namespace in sections, f"api.md has no section '## `{namespace}`'"
    body = sections[namespace]
    names = NAMESPACES[namespace]()
    assert names
    missing = sorted(n for n in names if not re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", body))
    assert not missing, f"api.md section {namespace} does not mention {missing}"


def _top_level_split(params):
    parts, depth, cur = [], 0, ""
    for ch in params:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur] if cur.strip() else parts


def _entries(body):
    """(qualified name, [parameter names]) for every '- `name(params)`' entry."""
    for m in re.finditer(r"^- `([A-Za-z_][\w.]*)\((.*?)\)`", body, flags=re.M):
        params = [
            re.split(r"[=:]", p.strip())[0].lstrip("*").strip()
            for p in _top_level_split(m.group(2))
        ]
        yield m.group(1), [p for p in params if p]


def _real_params(obj):
    return [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]


def test_api_signatures_match_the_code():
    checked = 0
    for namespace, body in _sections().items():
        if not namespace.startswith("tinygrad_bn"):
            continue
        base = _resolve(namespace)
        for qual, params in _entries(body):
            obj, parts = base, qual.split(".")
            if inspect.isclass(base) and parts[0] == base.__name__:
                parts = parts[1:]  # `Tensor.sum(...)` in the Tensor section
            for part in parts:
                obj = getattr(obj, part)
            if isinstance(obj, property):
                continue
            assert params == _real_params(obj), (
                f"api.md {namespace}: {qual}({', '.join(params)}) but the code has "
                f"({', '.join(_real_params(obj))})"
            )
            checked += 1
    assert checked >= 100


def test_api_documents_the_command_line():
    from tinygrad_bn import bench, cli

    body = _sections()["tinygrad-bn"]
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    options = {}
    for command, p in sub.choices.items():
        assert f"tinygrad-bn {command}" in body, f"api.md: no 'tinygrad-bn {command}'"
        options[command] = {
            o
            for a in p._actions
            for o in a.option_strings
            if o.startswith("--") and a.help != "==SUPPRESS=="
        }
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        bench.parse_args(["--help"])
    options["bench"] |= set(re.findall(r"(--[\w-]+)", out.getvalue()))
    for command, opts in options.items():
        missing = sorted(
            o for o in opts - {"--help"} if not re.search(rf"{re.escape(o)}(?![\w-])", body)
        )
        assert not missing, f"api.md: tinygrad-bn {command} options not documented: {missing}"


def test_blocks_parser_finds_what_it_should(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n```python\na = 1\n```\n<!-- excerpt: f.py -->\n```python\nb\n```\n```bash\nls\n```\n"
    )
    assert blocks(doc) == [(2, "a = 1", None), (6, "b", "f.py")]
    assert list(_entries("- `f(a, b=(1, 2), *, c=None, **kw)` -- x\n- `g()`\n")) == [
        ("f", ["a", "b", "c", "kw"]),
        ("g", []),
    ]
