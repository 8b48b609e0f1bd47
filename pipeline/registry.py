"""One registry helper for every plug-in kind: extractors, fusion heads, ensemble combiners,
fine-tune backbones and face detectors.

A :class:`Registry` maps a name to a class (its ``name`` attribute) and the class's options
dataclass (its ``Config`` attribute, ``None`` for a kind or class without options). Every kind
is found the same way:

- **built in**: the modules of one package that hold a class decorated with the registry's
  ``register`` (``@register`` or ``@SOMETHING.register``); their names are read from the source
  (:mod:`ast`, the class body's ``name = "..."``) without importing anything, so listing the
  names in ``--help`` loads no model library; so are the literal class attributes a kind's
  options are checked against (:meth:`Registry.attribute`: a fine-tune backbone's capabilities);
- **plug-ins**: entry points of installed packages in the kind's group (``fer_pipeline.<kind>s``,
  e.g. ``fer_pipeline.detectors``): ``NAME = "module.path"``, where importing the module
  registers the class called ``NAME``;
- **registered already**: whatever called ``register`` (a test, a script).

A module is imported when its class is asked for (:meth:`Registry.get`) or when every class is
(:meth:`Registry.classes`). A second class under a taken name is refused in one line naming
both; an unknown name is refused in one line with the choices and a did-you-mean
(:mod:`pipeline.suggest`). :meth:`Registry.summary` and :meth:`Registry.rows` give the one-line
descriptions that ``--help`` and ``--describe`` print.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys
from typing import Any, Callable, Generic, Iterable, TypeVar

from pipeline.errors import PipelineError
from pipeline.suggest import did_you_mean

__all__ = ["DuplicateName", "Registry", "UnknownName", "entry_points", "registered_classes",
           "registered_names", "summary"]

T = TypeVar("T", bound=type)


class DuplicateName(PipelineError, ValueError):
    """A second class registered under a taken name (a plug-in's clash is the user's to fix, so
    it is a one-line error, not a traceback)."""


class UnknownName(PipelineError, KeyError):
    """A name no class is registered under (a KeyError too, for callers that look names up)."""

    __str__ = Exception.__str__  # the message as given, not KeyError's repr of it


def entry_points(group: str) -> dict[str, str]:
    """Name -> module of the installed packages' entry points of ``group``."""
    return {ep.name: ep.module for ep in importlib.metadata.entry_points(group=group)}


def _is_registration(decorator: ast.expr) -> bool:
    """``@register`` or ``@X.register`` (the call form ``@register(...)`` is not used)."""
    return (isinstance(decorator, ast.Name) and decorator.id == "register") or (
        isinstance(decorator, ast.Attribute) and decorator.attr == "register")


def registered_classes(source: str) -> list[tuple[str | None, dict[str, Any]]]:
    """Each registered class defined in a module's source, in order: its ``name`` (``None`` when
    that is not a plain string in its body: found by importing) and the attributes its body
    assigns a literal (``ast.literal_eval``), read without importing anything."""
    found: list[tuple[str | None, dict[str, Any]]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef) or not any(map(_is_registration, node.decorator_list)):
            continue
        literals: dict[str, Any] = {}
        for statement in node.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
            else:  # an annotated assignment, or anything else (no target)
                target = getattr(statement, "target", None)
            value = getattr(statement, "value", None)
            if not isinstance(target, ast.Name) or value is None:
                continue
            try:
                literals[target.id] = ast.literal_eval(value)
            except ValueError:  # not a literal: known only by importing the class
                literals.pop(target.id, None)
        name = literals.get("name")
        found.append((name if isinstance(name, str) else None, literals))
    return found


def registered_names(source: str) -> list[str | None]:
    """``name`` of each registered class defined in a module's source, in order; ``None`` for a
    registered class whose ``name`` is not a plain string in its body (found by importing)."""
    return [name for name, _ in registered_classes(source)]


def summary(cls: type) -> str:
    """The first paragraph of a class's docstring, else of its module's, on one line."""
    doc = (cls.__doc__ or getattr(sys.modules.get(cls.__module__), "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


class Registry(Generic[T]):
    """The classes of one plug-in kind by name (see the module docstring).

    ``kind`` names it in messages ("unknown detector 'x'"); ``package`` is the dotted package
    whose modules hold the built-in classes; ``group`` the entry-point group of plug-ins;
    ``check`` (optional) is called with each class as it registers and raises ``ValueError`` for
    a class that breaks the kind's contract; ``order`` (optional) sorts :meth:`classes`
    (default: by name).
    """

    def __init__(self, kind: str, package: str, group: str,
                 check: Callable[[T], None] | None = None,
                 order: Callable[[tuple[str, T]], object] | None = None) -> None:
        self.kind, self.package, self.group = kind, package, group
        self._check, self._order = check, order
        self._classes: dict[str, T] = {}

    # -- registering

    def register(self, cls: T) -> T:
        """Class decorator: make ``cls`` available by its ``name``; a taken name is refused."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} {cls.__module__}.{cls.__qualname__}: no `name` (a "
                             "non-empty string class attribute) to register it by")
        old = self._classes.get(name)
        if old is not None and old is not cls:
            raise DuplicateName(f"{self.kind} {name!r} registered twice: "
                             f"{old.__module__}.{old.__qualname__} and {cls.__module__}.{cls.__qualname__}")
        if self._check is not None:
            self._check(cls)
        self._classes[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that register a class of their own remove it with this)."""
        self._classes.pop(name, None)

    # -- finding

    @functools.cached_property
    def _built_in(self) -> tuple[dict[str, str], frozenset[str], dict[str, dict[str, Any]]]:
        """(name -> module of ``package`` registering it, read from the sources; every module
        that registers a class, a class without a literal ``name`` included; name -> the
        literal attributes of its class body)."""
        names: dict[str, str] = {}
        modules: set[str] = set()
        literals: dict[str, dict[str, Any]] = {}
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            spec = importlib.util.find_spec(f"{self.package}.{info.name}")
            if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
                continue
            with open(spec.origin, encoding="utf-8") as f:
                found = registered_classes(f.read())
            if found:
                modules.add(spec.name)
            for name, attributes in found:
                if name is not None:
                    names[name], literals[name] = spec.name, attributes
        return names, frozenset(modules), literals

    def modules(self) -> dict[str, str]:
        """Name -> module that registers it: entry points, then built-ins (a built-in name wins
        over a plug-in's)."""
        return {**entry_points(self.group), **self._built_in[0]}

    def names(self) -> list[str]:
        """Every name (built in, from entry points, or registered already), sorted; imports
        nothing."""
        return sorted({*self.modules(), *self._classes})

    def load(self) -> None:
        """Import every module that registers a class of this kind."""
        for module in sorted({*self._built_in[1], *entry_points(self.group).values()}):
            importlib.import_module(module)

    def classes(self) -> dict[str, T]:
        """Every class by name (imports every module of this kind), in the kind's order."""
        self.load()
        return dict(sorted(self._classes.items(), key=self._order or (lambda item: item[0])))

    def is_known(self, name: str) -> bool:
        """Whether ``name`` is registered; imports every module only for a name not found
        cheaply."""
        return name in self._classes or name in self.modules() or name in self.classes()

    def get(self, name: str) -> T:
        """The class registered as ``name`` (imports only its module when the name was
        indexed); PipelineError for an unknown name, with the choices and a did-you-mean."""
        if name not in self._classes and name in self.modules():
            module = self.modules()[name]
            importlib.import_module(module)
            if name not in self._classes:  # an entry point whose name is not its class's
                where = (f"entry point {name} of group {self.group}" if module not in
                         self._built_in[1] else f"its source names {name!r}")
                raise PipelineError(
                    f"{self.kind} {name!r}: module {module} ({where}) registers no {self.kind} of "
                    f"that name; an entry point's name must be its class's `name` (registered "
                    f"now: {', '.join(sorted(self._classes))})")
        if name not in self._classes and not self.is_known(name):
            names = self.names()
            raise UnknownName(f"unknown {self.kind} {name!r}; choose from {', '.join(names)}"
                                f"{did_you_mean(name, names)}")
        return self._classes[name]

    def attribute(self, name: str, attribute: str, default: Any = None) -> Any:
        """Class attribute ``attribute`` of ``name`` (``default`` where the class has none): read
        from a built-in class's source where its body assigns it a literal (imports nothing);
        else from the class, imported (a plug-in, an inherited or computed value)."""
        if name not in self._classes:
            literals = self._built_in[2].get(name, {})
            if attribute in literals:
                return literals[attribute]
        return getattr(self.get(name), attribute, default)

    def having(self, attribute: str) -> list[str]:
        """The names whose class's ``attribute`` is true, in the kind's order (the order
        function's key read through :meth:`attribute`; imports only what the sources do not
        say)."""
        names = [n for n in self.names() if self.attribute(n, attribute)]
        if self._order is None:
            return names
        order = self._order
        return sorted(names, key=lambda n: order((n, _Attributes(self, n))))  # type: ignore

    def config(self, name: str) -> type | None:
        """The options dataclass of ``name`` (its class's ``Config``; ``None`` without one)."""
        return getattr(self.get(name), "Config", None)

    # -- describing

    def summary(self, name: str) -> str:
        """One line on what ``name`` is (its class's docstring, first paragraph)."""
        return summary(self.get(name))

    def rows(self, names: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(name, one-line summary) of every class, or of ``names``, for help and --describe."""
        classes = self.classes()
        return [(n, summary(classes[n])) for n in (classes if names is None else names)]

    def choices(self) -> str:
        """The names joined for a help line: ``"a, b, c"``."""
        return ", ".join(self.names())


class _Attributes:
    """A class's attributes as :meth:`Registry.attribute` reads them, for an ``order`` function
    (``getattr(cls, "order", 100)``) that should not import a class to sort it."""

    def __init__(self, registry: Registry, name: str) -> None:
        self._registry, self._name = registry, name

    def __getattr__(self, attribute: str) -> Any:
        missing = object()
        value = self._registry.attribute(self._name, attribute, missing)
        if value is missing:
            raise AttributeError(attribute)
        return value
