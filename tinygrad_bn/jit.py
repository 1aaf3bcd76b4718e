"""tg.jit: record a whole training step once, replay it without the Python engine.

The first call of a ``@tg.jit`` function with a new *signature* (the arguments' shapes,
dtypes, requires_grad and memory order, other arguments by value, and the grad mode) runs
eagerly with a recorder switched on. The recorder notes, in order, every op's forward
(``Function.apply``), the backward walk (``Tensor.backward``), and every *replayed host call*:
functions marked ``@replayed`` that change state outside the ops (``optimizer.step()``,
``zero_grad()``, BatchNorm's batch counter) or turn an argument into an op's parameter (the
label check of ``cross_entropy``). A *plan* is that list, with each array named by a slot: an
argument, an earlier result, or a constant array bound by identity (parameters, buffers).

A later call with the same signature replays the plan: each op's forward and backward runs on
arrays again, in the recorded order, with the same arithmetic, so results (outputs,
parameters, running statistics, optimizer state, gradients) are bit-identical to eager.
One peephole pass fuses an activation into the op before it (see ``_fuse``): the same
element functions in one pass instead of two, so the bits stay those of eager. There
are no Tensor objects but the returned ones and the new ``.grad``s, no topological sort and no
graph. A plan is used only while its *guards* hold: the same modules in the same train/eval
mode, and every bound array still the ``.data`` of its Tensor (``model.double()`` records
anew). Up to ``cache_size`` plans are kept, least recently used dropped first.

What a replay does *not* do: Python side effects inside the function (prints, appends,
counters, ``p.grad = None``, writing into ``.data`` by hand, ``scheduler.step()``) happen only
on the recording call; Python values (floats, ints) are baked in as recorded; the Tensors a
replay returns carry no graph (call backward inside the function). What the
recorder cannot capture makes that signature run eagerly from then on, with one warning saying
why: reading an intermediate's value on the host (``.item()``, ``.numpy()``, ``.tolist()``,
``np.asarray``: Python control flow on tensor values needs one), ``backward(grad=...)``, a
second backward, backward through a graph built outside the function, an argument that reaches
no op unchanged (e.g. ``Tensor(uint8 array)`` copies it), a return value that is not a Tensor,
and BatchNorm with ``momentum=None`` (its factor is read on the host). Reading ``.data``
directly is not seen: a value read that way is baked in, so use ``.item()`` or ``.numpy()``.
"""

import functools
import warnings

import numpy as np

from .tensor import Tensor, _topological_order, is_grad_enabled

# The recorder of the call being recorded, or None. The engine's hooks test it first, so
# eager code pays one global lookup per op. Recording is not thread-safe: record on one thread.
recorder = None


def host_read(what):
    """Called where a value reaches Python: inside a recording that cannot be captured."""
    if recorder is not None:
        recorder.give_up(f"reads a tensor's value on the host ({what})")


def replayed(fn):
    """Mark a host function that a plan must re-run on replay (state changes, argument checks).

    Its array arguments are resolved like op inputs; it returns None or one ndarray, which
    later ops may use. Ops it calls itself are not recorded: the replay re-runs the function.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if recorder is None:
            return fn(*args, **kwargs)
        return recorder.host_call(fn, args, kwargs)

    return wrapper


# ---------------------------------------------------------------- the decorator


def jit(fn=None, *, cache_size=8):
    """Compile `fn` by recording its first call per signature and replaying it afterwards.

    Use as ``@tg.jit`` or ``@tg.jit(cache_size=4)``. See the module docstring for what is
    replayed and what is not: in short, the ops, backward, optimizer steps and zero_grad are;
    other Python side effects inside `fn` are not.

    >>> @tg.jit
    ... def train_step(x, y):
    ...     loss = F.cross_entropy(model(tg.Tensor(x)), y)
    ...     opt.zero_grad(); loss.backward(); opt.step()
    ...     return loss
    """
    if fn is None:
        return lambda f: JitFunction(f, cache_size)
    return JitFunction(fn, cache_size)


class JitFunction:
    """A function compiled by tg.jit: a cache of plans, most recently used first."""

    def __init__(self, fn, cache_size=8):
        if not callable(fn):
            raise TypeError(f"jit: expected a callable (got {type(fn).__name__})")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"jit: cache_size must be an integer >= 1 (got {cache_size!r})")
        functools.update_wrapper(self, fn)
        self.fn, self.cache_size = fn, cache_size
        self.plans = []  # [(signature, plan)]
        self.eager = {}  # signature -> why it runs eagerly (at most cache_size of them)
        self.warned = False

    def __get__(self, obj, objtype=None):
        """As a method: the instance becomes the first argument (a plan per instance)."""
        return self if obj is None else functools.partial(self, obj)

    def __call__(self, *args, **kwargs):
        if recorder is not None:  # inside another jit's recording: its recorder sees our ops
            return self.fn(*args, **kwargs)
        values = args + tuple(kwargs.values()) if kwargs else args
        key = _signature(values, tuple(kwargs))
        plans = self.plans
        for i, (k, plan) in enumerate(plans):
            if k == key and plan.valid():
                if i:
                    plans.insert(0, plans.pop(i))
                return plan.replay(values)
        if key in self.eager:
            return self.fn(*args, **kwargs)
        return self._record(key, args, kwargs, values)

    def _record(self, key, args, kwargs, values):
        global recorder
        rec = recorder = _Recorder(values)
        try:
            result = self.fn(*args, **kwargs)
        finally:
            recorder = None
        plan = None if rec.failed else rec.plan(result)
        if rec.failed:
            self.eager[key] = rec.failed
            while len(self.eager) > self.cache_size:
                del self.eager[next(iter(self.eager))]
            if not self.warned:
                self.warned = True
                warnings.warn(
                    f"tg.jit: {getattr(self.fn, '__qualname__', 'function')} runs eagerly for "
                    f"this signature: it {rec.failed}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return result
        self.plans.insert(0, (key, plan))
        del self.plans[self.cache_size :]
        return result


def _signature(values, names):
    """What a plan is specialised on, besides its guards."""
    parts = [is_grad_enabled(), names]
    for a in values:
        if isinstance(a, Tensor):
            d = a.data
            parts.append((d.shape, d.dtype, d.flags.c_contiguous, a.requires_grad))
        elif isinstance(a, np.ndarray):
            parts.append((a.shape, a.dtype, a.flags.c_contiguous))
        else:
            try:
                hash(a)
                parts.append((type(a), a))
            except TypeError:
                parts.append(("id", id(a)))  # the plan keeps the object alive
    return tuple(parts)


# ---------------------------------------------------------------- recording

_CONST, _ARRAY, _TENSOR = 0, 1, 2  # how a host call's argument is found on replay


class _Run:
    """One execution of a plan: its slots, op contexts, the call's arguments."""

    __slots__ = ("buf", "ctxs", "args", "claimed")

    def __init__(self, buf, ctxs, args):
        self.buf, self.ctxs, self.args, self.claimed = buf, ctxs, args, set()


class _Recorder:
    """Builds a plan while the function runs eagerly. A step of the plan is a closure
    ``step(run)``; backward steps are executed by the recording itself, so the recorded
    backward and its replays share one code path."""

    def __init__(self, args):
        self.failed = None  # why the call cannot be captured, once known
        self.steps = []
        self.consts = {}  # slot -> constant array
        self.slot_of_tensor = {}  # id(Tensor) -> slot of its data
        self.slot_of_array = {}  # id(ndarray) -> slot
        self.ctx_index = {}  # id(op context) -> index in run.ctxs
        self.keep = []  # keeps every object whose id is a key above alive
        self.bound = []  # (Tensor, array) bound as constants: guarded by identity
        self.modules = {}  # id(module) -> (module, training)
        self.backward_done = False
        self.run = _Run([], [], args)
        self.arg_slots = []  # (slot, position in args)
        self.arg_pos = {}  # id(Tensor argument) -> position
        for pos, a in enumerate(args):
            if isinstance(a, (Tensor, np.ndarray)):
                slot = self._new_slot(a.data if isinstance(a, Tensor) else a)
                self.arg_slots.append((slot, pos))
                if isinstance(a, Tensor):
                    self.slot_of_tensor[id(a)] = slot
                    self.arg_pos[id(a)] = pos
        self.unused = {slot for slot, _ in self.arg_slots}

    def give_up(self, why):
        """Stop recording; the call goes on eagerly and its signature stays eager."""
        global recorder
        if self.failed is None:
            self.failed = why
        recorder = None

    def _new_slot(self, array=None):
        slot = len(self.run.buf)
        self.run.buf.append(array)
        if array is not None:
            self.slot_of_array[id(array)] = slot
            self.keep.append(array)
        return slot

    def _array_slot(self, array, owner=None):
        """Slot of an array: an argument or an earlier result, else a new constant."""
        slot = self.slot_of_array.get(id(array))
        if slot is not None:
            self.unused.discard(slot)
            return slot
        slot = self._new_slot(array)
        self.consts[slot] = array
        self.bound.append((owner, array))
        return slot

    def _tensor_slot(self, t):
        slot = self.slot_of_tensor.get(id(t))
        if slot is not None:
            self.unused.discard(slot)
            return slot
        self.keep.append(t)
        slot = self.slot_of_tensor[id(t)] = self._array_slot(t.data, owner=t)
        return slot

    def _host_arg(self, v):
        if isinstance(v, np.ndarray):
            return _ARRAY, self._array_slot(v)
        if isinstance(v, Tensor):
            pos = self.arg_pos.get(id(v))
            if pos is not None:
                self.unused.discard(self.slot_of_tensor[id(v)])
                return _TENSOR, -1 - pos  # negative: the argument Tensor itself
            return _TENSOR, self._tensor_slot(v)
        return _CONST, v

    # ------------------------------------------------------------ hooks
    def op(self, cls, inputs, params, out):
        """Function.apply ran: note the op, its input slots, parameters and output slot."""
        ins = tuple([self._tensor_slot(t) for t in inputs])
        needs = tuple([t.requires_grad for t in inputs])
        static, dynamic = {}, []
        for name, v in params.items():
            if isinstance(v, np.ndarray):  # a buffer updated in place, labels, ...
                dynamic.append((name, self._array_slot(v)))
            else:
                static[name] = v
        o = self._new_slot(out.data)
        self.slot_of_tensor[id(out)] = o
        self.keep.append(out)
        k = -1
        if out._ctx is not None:
            k = len(self.run.ctxs)
            self.run.ctxs.append(out._ctx)
            self.ctx_index[id(out._ctx)] = k
        self.steps.append(_op_step(cls, needs, ins, static, tuple(dynamic), o, k))

    def host_call(self, fn, args, kwargs):
        """A @replayed function: run it unrecorded, note it as one step."""
        global recorder
        spec = tuple([self._host_arg(a) for a in args])
        kspec = tuple([(name, *self._host_arg(v)) for name, v in kwargs.items()])
        recorder = None  # the ops fn runs are re-done by re-running fn
        try:
            result = fn(*args, **kwargs)
        finally:
            recorder = self
        if result is not None and not isinstance(result, np.ndarray):
            self.give_up(f"calls {fn.__qualname__}, which returned a {type(result).__name__}")
            return result
        o = -1 if result is None else self._new_slot(result)
        self.steps.append(_host_step(fn, spec, kspec, o))
        return result

    def module(self, m):
        """Module.__call__: the plan holds while every module keeps its train/eval mode."""
        if id(m) in self.modules:
            return
        self.modules[id(m)] = (m, m.training)
        self.keep.append(m)
        from .nn.batchnorm import _BatchNorm

        if isinstance(m, _BatchNorm) and m.momentum is None and m.training:
            if m.track_running_stats:
                self.give_up(f"uses {type(m).__name__} with momentum=None (read on the host)")

    def backward(self, root, grad):
        """Tensor.backward: walk the graph as eager does, as plan steps. False: not captured
        (the caller then runs the eager backward)."""
        if grad is None and root.data.size != 1:
            return False  # the eager backward raises its error
        if grad is not None:
            self.give_up("calls backward(grad=...) (the gradient would be baked in)")
        elif self.backward_done:
            self.give_up("calls backward() twice")
        order = _topological_order(root) if self.failed is None else ()
        if any(n._ctx is not None and id(n._ctx) not in self.ctx_index for n in order):
            self.give_up("calls backward() through a graph built outside the function")
        if self.failed is not None:
            return False
        self.backward_done = True
        gslot = {}  # id(node) -> slot of its gradient, as eager's `grads` dict

        def slot_for(node):
            if id(node) not in gslot:
                gslot[id(node)] = self._new_slot()
            return gslot[id(node)]

        self._emit(_seed_step(self._tensor_slot(root), slot_for(root), root.data))
        for node in reversed(order):
            g = gslot.get(id(node))
            if g is None:
                continue
            if node._ctx is None:
                pos = self.arg_pos.get(id(node))
                self._emit(_leaf_step(g, node if pos is None else None, pos))
                continue
            routes = []

            def route(grads, parents=node._ctx.parents, routes=routes):
                for j, (parent, pg) in enumerate(zip(parents, grads)):
                    if pg is not None and parent.requires_grad:
                        first = id(parent) not in gslot
                        routes.append((j, slot_for(parent), first))

            self._emit(_backward_step(self.ctx_index[id(node._ctx)], g, routes, route))
        return True

    def _emit(self, step):
        self.steps.append(step)
        step(self.run)

    def plan(self, result):
        """The finished plan; None (and `failed` set) if the call cannot be replayed."""
        out = _output_spec(result, self)
        if self.unused and self.failed is None:
            pos = min(p for s, p in self.arg_slots if s in self.unused)
            self.give_up(
                f"gets argument {pos}, which reaches no op unchanged (converted, e.g. by "
                f"Tensor() of a non-float array, or only read on the host)"
            )
        if self.failed is not None:
            return None
        owners = {}
        for m, _ in self.modules.values():
            for t in (*m._parameters.values(), *m._buffers.values()):
                if t is not None:
                    owners[id(t.data)] = t
        guards = {}
        for t, a in self.bound:
            for holder in (t, owners.get(id(a))):
                if holder is not None:
                    guards[id(holder)] = (holder, a)
        return _Plan(self, tuple(guards.values()), out)


def _output_spec(value, rec):
    """How a replay rebuilds the return value: None, Tensors in tuples, lists and dicts."""
    if value is None:
        return ("none",)
    if isinstance(value, Tensor):
        if id(value) in rec.arg_pos:
            return ("arg", rec.arg_pos[id(value)])
        slot = rec.slot_of_tensor.get(id(value))
        return ("const", value) if slot is None else ("tensor", slot)
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_output_spec(v, rec) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _output_spec(v, rec)) for k, v in value.items()))
    rec.give_up(f"returns a {type(value).__name__} (a plan returns Tensors, tuples, lists, dicts)")
    return ("none",)


def _build_output(spec, run):
    kind = spec[0]
    if kind == "tensor":
        return Tensor._from_op(run.buf[spec[1]], None)
    if kind == "none":
        return None
    if kind == "arg":
        return run.args[spec[1]]
    if kind == "const":
        return spec[1]
    if kind == "dict":
        return {k: _build_output(s, run) for k, s in spec[1]}
    return kind(_build_output(s, run) for s in spec[1])


# ---------------------------------------------------------------- plan steps


def _op_step(cls, needs, ins, static, dynamic, o, k):
    """One op's forward: a fresh context, forward on the input slots, output into slot o."""

    forward, ndarray, asarray = cls.forward, np.ndarray, np.asarray

    def step(run):
        buf = run.buf
        ctx = cls()
        ctx.needs_input_grad = needs
        params = static
        if dynamic:
            params = dict(static)
            for name, slot in dynamic:
                params[name] = buf[slot]
        out = forward(ctx, *[buf[i] for i in ins], **params)
        buf[o] = out if type(out) is ndarray else asarray(out)  # as Tensor._from_op
        if k >= 0:
            run.ctxs[k] = ctx

    step.op = (cls, needs, ins, static, dynamic, o, k)  # what _fuse reads
    step.reads = ins + tuple([slot for _, slot in dynamic])
    return step


def _host_step(fn, spec, kspec, o):
    def value(run, kind, v):
        if kind == _CONST:
            return v
        if kind == _ARRAY:
            return run.buf[v]
        return run.args[-1 - v] if v < 0 else Tensor._from_op(run.buf[v], None)

    if not kspec and o < 0 and all(kind == _CONST for kind, _ in spec):
        consts = tuple([v for _, v in spec])

        def step(run):  # the common case, optimizer.step() and zero_grad(): no lookups
            fn(*consts)

    elif not kspec:

        def step(run):  # BatchNorm's batch counter, label conversions: no kwargs
            result = fn(*[value(run, kind, v) for kind, v in spec])
            if o >= 0:
                run.buf[o] = result

    else:

        def step(run):
            result = fn(
                *[value(run, kind, v) for kind, v in spec],
                **{name: value(run, kind, v) for name, kind, v in kspec},
            )
            if o >= 0:
                run.buf[o] = result

    step.reads = tuple([v for kind, v in spec if kind != _CONST and v >= 0]) + tuple(
        [v for _, kind, v in kspec if kind != _CONST and v >= 0]
    )
    return step


def _seed_step(root, g, like):
    """backward's seed, ones like the root: a copy of ones made once (the root's shape and
    dtype are the signature's), as a later step may keep the array it is given (a leaf
    root's .grad). 0.1 us instead of np.ones_like's 0.8."""
    ones = np.ones_like(like)

    def step(run):
        run.buf[g] = ones.copy()

    step.reads = (root,)
    return step


def _backward_step(k, g, routes, route):
    """ctx.backward(grad) of one node; its parents' gradients are set, or summed, into their
    slots as Tensor.backward does. `route` fills `routes` on the recording run."""
    pending = [route]

    def step(run):
        buf = run.buf
        grads = run.ctxs[k].backward(buf[g])
        buf[g] = None  # eager pops it too: the memory goes early
        if pending:
            pending.pop()(grads)
        for j, dst, first in routes:
            buf[dst] = grads[j] if first else buf[dst] + grads[j]

    step.reads = (g,)  # gradient slots: never an op's output
    return step


def _leaf_step(g, leaf, pos):
    """Into a leaf's .grad with Tensor._accumulate, as eager; `pos` names an argument Tensor
    (a new object every call), else the leaf itself (a parameter) is the target."""
    return _leaves_step(((g, leaf, pos),))


def _join_leaves(steps):
    """Consecutive leaf steps (a backward walk ends with the parameters') as one step that
    runs them in order: one call instead of one per parameter."""
    joined = []
    for step in steps:
        prev = joined[-1] if joined else None
        if hasattr(step, "leaves") and prev is not None and hasattr(prev, "leaves"):
            joined[-1] = _leaves_step(prev.leaves + step.leaves)
        else:
            joined.append(step)
    return joined


def _leaves_step(leaves):
    """The (g, leaf, pos) leaf steps in order (see _leaf_step); `leaves` is what _join_leaves
    reads to join the next ones."""

    def step(run):
        buf, args, claimed = run.buf, run.args, run.claimed
        for g, leaf, pos in leaves:
            (leaf if pos is None else args[pos])._accumulate(buf[g], claimed)
            buf[g] = None

    step.leaves = leaves
    step.reads = tuple([g for g, _, _ in leaves])
    return step


# ---------------------------------------------------------------- fusion
# The rule, in one place: an op step whose class has `fuses_activation` (Affine, Convolution,
# BatchNormTrain) and an activation step (ops._Activation: a class with an `activation` name)
# whose only input is the first step's output become one step, at the first one's place, when
# nothing else reads that output: no other step, host call or return value (its array is
# overwritten in place). Steps in between (BatchNorm's batch counter) do not read it, so
# running the activation earlier changes nothing they see. The fused step runs the
# producer's forward with activation=..., which applies the same element function in the
# producer's last pass (bias add, normalization), and fills both ops' contexts, so the
# recorded backward steps run unchanged. Results are bit-identical to the unfused steps
# (tests/test_jit_fusion.py); nothing else in the plan changes.


def _output_slots(spec):
    kind = spec[0]
    if kind == "tensor":
        yield spec[1]
    elif kind == "dict":
        for _, s in spec[1]:
            yield from _output_slots(s)
    elif kind not in ("none", "arg", "const"):
        for s in spec[1]:
            yield from _output_slots(s)


def _fuse(steps, out_spec):
    """The plan's steps with each fusable (producer, activation) pair as one fused step."""
    if not all(hasattr(step, "reads") for step in steps):
        return list(steps)  # a kind of step that does not say what it reads: fuse nothing
    reads = {}
    for step in steps:
        for slot in step.reads:
            reads[slot] = reads.get(slot, 0) + 1
    for slot in _output_slots(out_spec):
        reads[slot] = reads.get(slot, 0) + 1
    consumer = {}  # slot -> index of the activation step that is its only reader
    for j, step in enumerate(steps):
        op = getattr(step, "op", None)
        if op is not None and isinstance(getattr(op[0], "activation", None), str):
            ins, static, dynamic = op[2], op[3], op[4]
            if len(ins) == 1 and not static and not dynamic and reads.get(ins[0]) == 1:
                consumer[ins[0]] = j
    fused, dropped = [], set()
    for i, step in enumerate(steps):
        if i in dropped:
            continue
        op = getattr(step, "op", None)
        j = consumer.get(op[5], -1) if op is not None else -1
        if j > i and getattr(op[0], "fuses_activation", False):
            fused.append(_fused_step(op, steps[j].op))
            dropped.add(j)
        else:
            fused.append(step)
    return fused


def _fused_step(producer, activation):
    """The producer's step with activation= (the activation's output slot), then the
    activation's context, filled as its forward would have."""
    cls, needs, ins, static, dynamic, _, k = producer
    act_cls, act_needs, _, _, _, o, act_k = activation
    produce = _op_step(cls, needs, ins, dict(static, activation=act_cls.activation), dynamic, o, k)

    def step(run):
        produce(run)
        if act_k >= 0:
            act = act_cls()
            act.needs_input_grad = act_needs
            act.out = run.buf[o]  # all an activation keeps (ops._Activation)
            run.ctxs[act_k] = act

    step.op = None  # a fused step is not fused again
    step.fused = (cls, act_cls)
    step.reads = produce.reads
    return step


class _Plan:
    __slots__ = ("steps", "template", "nctx", "arg_slots", "guards", "modules", "out")

    def __init__(self, rec, guards, out):
        self.steps = tuple(_join_leaves(_fuse(rec.steps, out)))
        self.template = [None] * len(rec.run.buf)
        for slot, a in rec.consts.items():
            self.template[slot] = a
        self.nctx = len(rec.run.ctxs)
        self.arg_slots = tuple(rec.arg_slots)
        self.guards, self.modules, self.out = guards, tuple(rec.modules.values()), out

    def valid(self):
        for m, training in self.modules:
            if m.training is not training:
                return False
        for t, a in self.guards:
            if t.data is not a:
                return False
        return True

    def replay(self, args):
        buf = self.template.copy()
        for slot, pos in self.arg_slots:
            a = args[pos]
            buf[slot] = a if type(a) is np.ndarray else a.data
        run = _Run(buf, [None] * self.nctx, args)
        for step in self.steps:
            step(run)
        return _build_output(self.out, run)
