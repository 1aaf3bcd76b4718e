"""ModuleList and ModuleDict: sub-modules held in a list or a dict, registered so that
parameters(), state_dict(), train()/eval() and repr see them. Neither has a forward."""

import operator

from .module import Module


class ModuleList(Module):
    """A list of modules: indexing (int, slice), len, iteration, ``append``, ``extend``,
    ``insert``, ``del``, ``+=``. The children are named "0", "1", …, renumbered after an
    insert or a deletion, as in PyTorch."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _index(self, idx):
        n = len(self._modules)
        try:
            idx = operator.index(idx)
        except TypeError:
            raise TypeError(
                f"ModuleList indices must be integers or slices, not {type(idx).__name__}"
            ) from None
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for a ModuleList of length {n}")
        return idx % n

    def _renumber(self, modules):
        for key in list(self._modules):
            delattr(self, key)
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[str(self._index(idx))]

    def __setitem__(self, idx, module):
        setattr(self, str(self._index(idx)), module)

    def __delitem__(self, idx):
        modules = list(self._modules.values())
        if isinstance(idx, slice):
            del modules[idx]
        else:
            del modules[self._index(idx)]
        self._renumber(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return ModuleList(list(self) + list(other))

    def append(self, module):
        """Add `module` at the end; returns self."""
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        """Append each module of an iterable; returns self."""
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        """Insert `module` before position `index` (list.insert's rule)."""
        modules = list(self._modules.values())
        modules.insert(operator.index(index), module)
        self._renumber(modules)

    def pop(self, index=-1):
        module = self[index]
        del self[index]
        return module


class ModuleDict(Module):
    """An ordered dict of modules: ``md[key]``, ``md[key] = m``, ``del``, ``in``, len,
    iteration over keys, ``keys()``, ``values()``, ``items()``, ``update()``, ``pop()``,
    ``clear()``. Keys are strings (valid attribute names without ".")."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        if key not in self._modules:
            raise KeyError(key)
        delattr(self, key)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def clear(self):
        for key in list(self._modules):
            delattr(self, key)

    def pop(self, key):
        module = self[key]
        del self[key]
        return module

    def update(self, modules):
        """Add (key, module) pairs from a mapping or an iterable of pairs, in order."""
        if hasattr(modules, "items"):
            pairs = modules.items()
        else:
            pairs = []
            for i, pair in enumerate(modules):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise ValueError(
                        f"ModuleDict.update: element #{i} should be a (key, module) pair, "
                        f"got {pair!r}"
                    )
                pairs.append(pair)
        for key, module in pairs:
            self[key] = module
