"""Module and Parameter: the bookkeeping every layer shares, with PyTorch's names.

A Module keeps its Parameters, buffers (non-learned state such as BatchNorm's running
statistics) and sub-Modules in three ordered dicts, filled by plain attribute assignment
(``self.weight = Parameter(...)``). Each one is *also* stored as an ordinary instance
attribute, so reading ``self.weight`` in ``forward`` is a plain attribute lookup: the
training loop pays nothing for the bookkeeping.
"""

from collections import namedtuple

import numpy as np

from .. import jit as _jit
from ..tensor import Tensor
from . import hooks as _hooks


class Parameter(Tensor):
    """A Tensor that a Module registers as learnable; requires_grad=True by default.

    ``Parameter(t)`` shares ``t``'s memory when ``t`` is a Tensor or float ndarray.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True, dtype=None):
        if data is None:
            data = np.empty(0, dtype=dtype or np.float32)
        super().__init__(data, dtype=dtype, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _check_name(kind, name):
    if not isinstance(name, str):
        raise TypeError(f"{kind} name: expected a str (got {type(name).__name__})")
    if not name or "." in name:
        raise ValueError(f'{kind} name: expected a non-empty name without "." (got {name!r})')


class Module:
    """Base class of every layer: ``__call__`` runs ``forward``; parameters, buffers and
    sub-modules are registered by assigning them as attributes."""

    training = True  # class default, so a subclass that forgets super().__init__ still reads
    _has_hooks = False  # one attribute read keeps __call__ cheap for the (usual) hook-free case

    def __init__(self):
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = {}
        d["_buffers"] = {}
        d["_modules"] = {}

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}: expected a forward() (got none)")

    def __call__(self, *args, **kwargs):
        if _jit.recorder is not None:  # a tg.jit plan holds only in this train/eval mode
            _jit.recorder.module(self)
        if not self._has_hooks:
            return self.forward(*args, **kwargs)
        return self._call_with_hooks(args, kwargs)

    # ------------------------------------------------------------ hooks
    def _hook_dict(self, name):
        d = self.__dict__
        if name not in d:
            d[name] = {}
        return d[name]

    def _hooks_changed(self):
        d = self.__dict__
        d["_has_hooks"] = any(
            d.get(n) for n in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks")
        )

    def _add_hook(self, name, hook, prepend, flags):
        if not callable(hook):
            raise TypeError(f"{name[1:-1]}: hook must be callable (got {type(hook).__name__})")
        hooks = self._hook_dict(name)
        handle = _hooks.RemovableHandle(hooks, self._hooks_changed)
        hooks[handle.id] = (hook, flags)
        if prepend:
            hooks.update({k: hooks.pop(k) for k in [k for k in hooks if k != handle.id]})
        self._hooks_changed()
        return handle

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call ``hook(module, args)`` before each forward (``hook(module, args, kwargs)``
        with ``with_kwargs``). A non-None result replaces the input: a tuple, or a single
        value taken as a 1-tuple (with_kwargs: an ``(args, kwargs)`` pair). ``prepend``
        runs it before the hooks already registered. Returns a handle; ``.remove()``."""
        return self._add_hook("_forward_pre_hooks", hook, prepend, (bool(with_kwargs), False))

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """Call ``hook(module, args, output)`` after each forward (``hook(module, args,
        kwargs, output)`` with ``with_kwargs``); a non-None result replaces the output.
        ``always_call`` runs it even when forward raises. Returns a handle; ``.remove()``."""
        return self._add_hook(
            "_forward_hooks", hook, prepend, (bool(with_kwargs), bool(always_call))
        )

    def register_full_backward_hook(self, hook, prepend=False):
        """Call ``hook(module, grad_input, grad_output)`` when the gradients w.r.t. this
        call's positional inputs are computed: tuples of Tensors (None for an input or
        output without a gradient). A non-None result (a tuple as long as grad_input)
        replaces grad_input. Returns a handle; ``.remove()``."""
        return self._add_hook("_backward_hooks", hook, prepend, (False, False))

    def _call_with_hooks(self, args, kwargs):
        d = self.__dict__
        for hook, (with_kwargs, _) in list(d.get("_forward_pre_hooks", {}).values()):
            if with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(
                            "forward pre-hook with with_kwargs=True must return None or "
                            f"a tuple of (new_args, new_kwargs) (got {result!r})"
                        )
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        backward = [h for h, _ in d.get("_backward_hooks", {}).values()]
        state = None
        if backward:
            args, state = _hooks.gate_inputs(self, backward, args)
        forward_hooks = list(d.get("_forward_hooks", {}).values())
        try:
            output = self.forward(*args, **kwargs)
        except Exception:
            for hook, (with_kwargs, always_call) in forward_hooks:
                if always_call:
                    try:
                        hook(self, args, kwargs, None) if with_kwargs else hook(self, args, None)
                    except Exception:
                        pass  # the forward's own error is the one to see
            raise
        for hook, (with_kwargs, _) in forward_hooks:
            result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args, output)
            if result is not None:
                output = result
        return _hooks.tap_outputs(state, output)

    # ------------------------------------------------------------ registration
    def _registries(self):
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(
                f"{type(self).__name__}: cannot assign parameters, buffers or modules before "
                f"Module.__init__() call: expected super().__init__() first"
            )
        return d["_parameters"], d["_buffers"], d["_modules"]

    def __setattr__(self, name, value):
        d = self.__dict__
        if isinstance(value, Parameter):
            params, buffers, modules = self._registries()
            buffers.pop(name, None)
            modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params, buffers, modules = self._registries()
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        elif name in d.get("_parameters", ()):
            if value is not None:
                raise TypeError(
                    f"parameter {name!r}: expected nn.Parameter or None "
                    f"(got {type(value).__name__})"
                )
            d["_parameters"][name] = None
        elif name in d.get("_modules", ()):
            if value is not None:
                raise TypeError(
                    f"child module {name!r}: expected nn.Module or None "
                    f"(got {type(value).__name__})"
                )
            d["_modules"][name] = None
        elif name in d.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"buffer {name!r}: expected a Tensor or None (got {type(value).__name__})"
                )
            d["_buffers"][name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            self.__dict__.get(registry, {}).pop(name, None)
        object.__delattr__(self, name)

    def _check_new_name(self, kind, name):
        _check_name(kind, name)
        if hasattr(self, name) and not any(name in r for r in self._registries()):
            raise ValueError(
                f"{type(self).__name__}: expected a new name (got {name!r}, which already exists)"
            )

    def register_parameter(self, name, param):
        """Add a Parameter (or None, a declared but absent parameter) under `name`."""
        self._registries()
        self._check_new_name("parameter", name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"parameter {name!r}: expected nn.Parameter or None (got {type(param).__name__})"
            )
        if param is None:
            self._buffers.pop(name, None)
            self._modules.pop(name, None)
            self._parameters[name] = None
        setattr(self, name, param)

    def register_buffer(self, name, tensor):
        """Add non-learned state (a Tensor, or None) saved in state_dict, e.g. running_mean."""
        params, buffers, modules = self._registries()
        self._check_new_name("buffer", name)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"buffer {name!r}: expected a Tensor or None (got {type(tensor).__name__})"
            )
        if isinstance(tensor, Parameter):
            raise TypeError(f"buffer {name!r}: expected a plain Tensor (got a Parameter)")
        params.pop(name, None)
        modules.pop(name, None)
        buffers[name] = tensor
        object.__setattr__(self, name, tensor)

    def add_module(self, name, module):
        """Add a child module (or None) under `name`."""
        self._registries()
        self._check_new_name("module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(
                f"module {name!r}: expected nn.Module or None (got {type(module).__name__})"
            )
        if module is None:
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            self._modules[name] = None
        setattr(self, name, module)

    register_module = add_module

    # ------------------------------------------------------------ traversal
    def named_modules(self, prefix="", memo=None):
        """(dotted name, module) for self and every descendant, each module once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self):
        for _, child in self.named_children():
            yield child

    def _named_members(self, registry, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter) in registration order, depth first; shared ones once."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # ------------------------------------------------------------ modes and helpers
    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode on self and all descendants."""
        if not isinstance(mode, bool):
            raise TypeError(f"train: expected mode to be a bool (got {type(mode).__name__})")
        for m in self.modules():
            m.__dict__["training"] = mode
        return self

    def eval(self):
        return self.train(False)

    @_jit.replayed
    def zero_grad(self, set_to_none=True):
        """Drop every parameter's gradient (or zero it in place with set_to_none=False)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def apply(self, fn):
        """Call fn(module) on every descendant (children first), then on self; return self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    _fixed_dtype_buffers = ()  # buffers that keep their dtype in float()/double(), e.g. counters

    def _cast(self, dtype):
        """Convert every parameter and buffer to `dtype` in place (same objects, new .data)."""
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = p.data.astype(dtype, copy=False)
                    p.grad = None if p.grad is None else type(p.grad)(p.grad.data.astype(dtype))
            for name, b in m._buffers.items():
                if b is not None and name not in m._fixed_dtype_buffers:
                    b.data = b.data.astype(dtype, copy=False)
        return self

    def float(self):
        """Make every parameter and buffer float32 (in place); returns self."""
        return self._cast(np.float32)

    def double(self):
        """Make every parameter and buffer float64 (in place); returns self."""
        return self._cast(np.float64)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    # ------------------------------------------------------------ state dict
    def _state_items(self):
        """(dotted key, Tensor) for every parameter and buffer, as state_dict orders them."""
        for prefix, module in self.named_modules():
            head = prefix + "." if prefix else ""
            for registry in (module._parameters, module._buffers):
                for name, value in registry.items():
                    if value is not None:
                        yield head + name, value

    def state_dict(self, prefix="", keep_vars=False):
        """{dotted name: Tensor} for every parameter and buffer (``0.weight``,
        ``1.running_mean`` …), each key preceded by `prefix`. The values are detached
        *copies*, so later training does not change a saved state_dict; with
        ``keep_vars=True`` they are the module's own Parameters and buffers instead."""
        if keep_vars:
            return {prefix + key: value for key, value in self._state_items()}
        return {prefix + key: Tensor(value.data.copy()) for key, value in self._state_items()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy values (Tensors or ndarrays) into this module's parameters and buffers, in place.

        Shapes must match exactly; with ``strict=True`` the keys must match exactly too.
        Nothing is changed unless every check passes. Returns
        ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        Raises ValueError naming missing/unexpected keys or mismatched shapes; TypeError
        for a value that is not numeric.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict (got {type(state_dict).__name__})")
        own = dict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and missing:
            errors.append("missing key(s): " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            errors.append("unexpected key(s): " + ", ".join(repr(k) for k in unexpected))
        values = {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            raw = state_dict[key]
            value = np.asarray(raw.data if isinstance(raw, Tensor) else raw)
            if value.dtype.kind not in "biuf":
                raise TypeError(
                    f"load_state_dict: expected {key!r} to be numeric (got dtype {value.dtype})"
                )
            if value.shape != target.shape:
                errors.append(
                    f"size mismatch for {key!r}: expected shape {target.shape} (this model) "
                    f"(got {value.shape} in state_dict)"
                )
            values[key] = value
        if errors:
            raise ValueError(
                f"Error(s) in loading state_dict for {type(self).__name__}: " + "; ".join(errors)
            )
        for key, value in values.items():
            np.copyto(own[key].data, value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ repr
    def extra_repr(self):
        """This layer's settings, shown inside the parentheses of repr()."""
        return ""

    def __repr__(self):
        lines = self.extra_repr().split("\n") if self.extra_repr() else []
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        if not lines:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not self._modules:
            return f"{type(self).__name__}({lines[0]})"
        return type(self).__name__ + "(\n  " + "\n  ".join(lines) + "\n)"
