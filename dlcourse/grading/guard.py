"""Take a graded part's own mechanic out of reach of the student's function.

A part that asks the student to write the LSTM cell's backward pass forbids the library
implementations of that mechanic (`Part.forbids`: `dlcourse.nn.LSTMCell`, the step functions
behind it, and always `torch`). :func:`install` runs in a fresh process, after the package
is imported and BEFORE any student code runs (the probe process of `probe_runner.py`, and
`dlcourse check`), and replaces every forbidden object by a :class:`Forbidden` stand-in:

- in every loaded module's namespace where it appears (so `from dlcourse.nn import LSTMCell
  as L`, `importlib.import_module(...)`, `getattr(sys.modules[...], "LST" + "MCell")` and
  subclassing all reach the stand-in), and in ``sys.modules`` for forbidden modules;
- for modules, also every import of them from now on (a meta path finder at the front);
- the originals are then dropped and garbage-collected, so that walking ``gc`` or
  ``Module.__subclasses__()`` finds nothing (:func:`survivors` lets the tests prove it).

Calling, instantiating, subclassing or reading an attribute of a stand-in raises
:class:`ForbiddenMechanicError`, whose message names what was used and what the part asks
for. The student's code must be executed after `install`, so objects it captured earlier
(in the notebook's kernel) do not exist in this process. What this does not stop on its own
— reading the package's source files from disk and executing them — the grading sandbox
stops by hiding the package directory from the probe process (see sandbox.py).
"""
from __future__ import annotations

import gc
import importlib
import importlib.abc
import importlib.util
import sys
import types
import weakref

__all__ = ["ForbiddenMechanicError", "Forbidden", "resolve", "install", "survivors"]


class ForbiddenMechanicError(ImportError):
    """The student's function used a library implementation of what its part asks them to write.

    An ImportError, so that code which falls back when a library is missing (``try: import
    torch except ImportError: ...``) takes its own path rather than failing strangely.
    """


class Forbidden:
    """Stands where a forbidden class, function or module was; every use raises."""

    __slots__ = ("_name", "_message")

    def __init__(self, name: str, message: str):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_message", message)

    def _refuse(self, *args, **kwargs):
        raise ForbiddenMechanicError(object.__getattribute__(self, "_message"))

    __call__ = _refuse

    def __getattr__(self, attribute):
        if attribute.startswith("__") and attribute.endswith("__"):
            raise AttributeError(attribute)  # copy, pickle and IPython probe these; not a use
        self._refuse()

    def __mro_entries__(self, bases):   # `class MyCell(nn.LSTMCell)` is a use
        self._refuse()

    def __instancecheck__(self, instance):
        return False

    def __subclasscheck__(self, subclass):
        return False

    def __repr__(self):
        return f"<forbidden in this part: {object.__getattribute__(self, '_name')}>"


class _ForbiddenModule(types.ModuleType):
    """A forbidden module (`torch`): importing it works, using anything from it raises."""

    def __init__(self, name: str, message: str):
        super().__init__(name)
        self.__dict__["_dlcourse_message"] = message
        self.__path__ = []   # a package, so that `import torch.nn` asks our finder too

    def __getattr__(self, attribute):
        if attribute.startswith("__") and attribute.endswith("__"):
            raise AttributeError(attribute)
        raise ForbiddenMechanicError(self.__dict__["_dlcourse_message"])


class _ForbiddenFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """At the front of sys.meta_path: forbidden modules import as stand-ins, and a module
    that holds a forbidden attribute but was not loaded yet gets it replaced as it loads."""

    def __init__(self, modules: dict[str, str], pending: dict[str, str]):
        self.modules = modules   # forbidden module name -> message
        self.pending = pending   # forbidden "module.attribute" (module not loaded yet) -> message

    def _message_for(self, fullname: str):
        for name, message in {**self.modules, **self.pending}.items():
            if fullname == name or fullname.startswith(name + "."):
                return message
        return None

    def find_spec(self, fullname, path=None, target=None):
        if self._message_for(fullname) is not None:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        if any(name.rpartition(".")[0] == fullname for name in self.pending):
            return self._patched_spec(fullname, path, target)
        return None

    def _patched_spec(self, fullname, path, target):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            stand_ins = {}
            for name, message in self.pending.items():
                owner, _, attribute = name.rpartition(".")
                if owner == fullname and hasattr(module, attribute):
                    stand_ins[id(getattr(module, attribute))] = Forbidden(name, message)
            _replace_everywhere(stand_ins)
        spec.loader.exec_module = exec_module   # this loader object serves this module only
        return spec

    def create_module(self, spec):
        return _ForbiddenModule(spec.name, self._message_for(spec.name))

    def exec_module(self, module):
        pass


def _message(name: str, function: str, asks: str) -> str:
    return (f"{function} used {name}, a library implementation of what this part asks you to write "
            f"({asks}); write it yourself with NumPy (earlier parts and other layers are fine)")


def _is_module(name: str) -> bool:
    """Whether a dotted name is an importable module, without importing it (only its parents)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def resolve(name: str):
    """The module or object a dotted name denotes (importing it); LookupError when it names
    nothing, so that a typo in a Part's forbids fails the tests."""
    if _is_module(name):
        return importlib.import_module(name)
    owner, _, attribute = name.rpartition(".")
    if not owner or not _is_module(owner):
        raise LookupError(f"{name!r} names neither a module nor an attribute of one")
    try:
        return getattr(importlib.import_module(owner), attribute)
    except AttributeError:
        raise LookupError(f"{name!r}: {owner} has no attribute {attribute!r}") from None


def install(forbidden: tuple[str, ...], function: str, asks: str) -> list[weakref.ref]:
    """Replace every forbidden object by a stand-in everywhere; return weak references to
    the originals (for :func:`survivors`). Call before any student code runs.

    Nothing is imported here that was not loaded already: a forbidden module that is not
    loaded (torch) only ever imports as a stand-in, and a forbidden attribute of a module not
    loaded yet (scipy.optimize.approx_fprime) is replaced when that module loads."""
    modules: dict[str, str] = {}
    pending: dict[str, str] = {}
    objects: list[tuple[object, Forbidden]] = []
    for name in forbidden:
        message = _message(name, function, asks)
        owner, _, attribute = name.rpartition(".")
        if name in sys.modules:
            modules[name] = message
        elif owner and owner not in sys.modules:
            pending[name] = message   # replaced if and when its module loads (nothing imported now)
        elif _is_module(name):        # its package is loaded, so this imports nothing
            modules[name] = message
        elif owner:
            try:
                objects.append((getattr(sys.modules[owner], attribute), Forbidden(name, message)))
            except AttributeError:
                pending[name] = message
    _replace_modules(modules)
    stand_ins = {id(original): stand_in for original, stand_in in objects}
    _replace_everywhere(stand_ins)
    originals = _weak_references(original for original, _ in objects)
    sys.meta_path.insert(0, _ForbiddenFinder(modules, pending))
    importlib.invalidate_caches()
    del objects, stand_ins
    gc.collect()
    return originals


def _replace_modules(modules: dict[str, str]) -> None:
    doomed = [key for key in list(sys.modules)
              if any(key == name or key.startswith(name + ".") for name in modules)]
    by_identity = {id(sys.modules[key]): key for key in doomed if sys.modules[key] is not None}
    for key in doomed:
        message = next(m for name, m in modules.items() if key == name or key.startswith(name + "."))
        sys.modules[key] = _ForbiddenModule(key, message)
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attribute, value in list(namespace.items()):
            if id(value) in by_identity:
                namespace[attribute] = sys.modules[by_identity[id(value)]]
            elif isinstance(value, (type, types.FunctionType)) and vars(value).get("__module__") in doomed:
                # a class or function defined in a forbidden module, imported elsewhere
                namespace[attribute] = Forbidden(f"{value.__module__}.{getattr(value, '__qualname__', attribute)}",
                                                 sys.modules[value.__module__].__dict__["_dlcourse_message"])


def _scrubbed(value, stand_ins: dict, depth: int = 0):
    """`value` with every forbidden original in it replaced: the value itself, the entries
    of containers (dicts and lists in place, tuples rebuilt), a function's annotations and
    defaults, a class's attributes — a few levels deep, as module namespaces hold them."""
    stand_in = stand_ins.get(id(value))
    if stand_in is not None:
        return stand_in
    if depth >= 4:
        return value
    if isinstance(value, dict):
        for key, item in list(value.items()):
            new = _scrubbed(item, stand_ins, depth + 1)
            if new is not item:
                value[key] = new
    elif isinstance(value, list):
        value[:] = [_scrubbed(item, stand_ins, depth + 1) for item in value]
    elif isinstance(value, tuple) and not hasattr(value, "_fields"):
        items = tuple(_scrubbed(item, stand_ins, depth + 1) for item in value)
        if any(new is not old for new, old in zip(items, value)):
            return items
    elif isinstance(value, types.FunctionType):
        _scrubbed(value.__annotations__, stand_ins, depth + 1)
        if value.__defaults__:
            value.__defaults__ = _scrubbed(value.__defaults__, stand_ins, depth + 1)
        if value.__kwdefaults__:
            _scrubbed(value.__kwdefaults__, stand_ins, depth + 1)
    elif isinstance(value, type) and str(vars(value).get("__module__", "")).startswith("dlcourse"):
        for attribute, item in list(vars(value).items()):
            new = _scrubbed(item, stand_ins, depth + 1)
            if new is not item:
                setattr(value, attribute, new)
    return value


def _replace_everywhere(stand_ins: dict) -> None:
    """Put each stand-in wherever its original is held: deep in dlcourse's own modules,
    in the namespaces of every other module."""
    if not stand_ins:
        return
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        if name == "dlcourse" or name.startswith("dlcourse."):
            _scrubbed(namespace, stand_ins, depth=-1)   # our own hiding places, deeply
        else:   # other libraries: their module namespaces (a deep walk of scipy costs ~1 s)
            for attribute, value in list(namespace.items()):
                if id(value) in stand_ins:
                    namespace[attribute] = stand_ins[id(value)]


def _weak_references(originals) -> list[weakref.ref]:
    references = []
    for original in originals:
        try:
            references.append(weakref.ref(original))
        except TypeError:
            pass  # a NumPy ufunc or a builtin: no weak references; replaced in every namespace
    return references


def survivors(originals: list[weakref.ref]) -> list[object]:
    """The forbidden originals still alive (and so reachable through gc) after install."""
    gc.collect()
    return [ref() for ref in originals if ref() is not None]
