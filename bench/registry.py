"""Plug-in registries (datasets, backbones, strategies) and the validation of their parameters.

Each plug-in is a callable whose keyword-only parameters with defaults are its user-facing
parameters: the suite loader checks names and types against that signature, so a parameter is
declared exactly once, where it is used.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable


class Registry:
    """A named set of plug-ins of one kind: `register(name)` refuses duplicates, `get` lists names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def add(fn: Callable) -> Callable:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return add

    def get(self, name: str) -> Callable:
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


def declared_params(fn: Callable) -> dict[str, inspect.Parameter]:
    """The user-facing parameters of a plug-in: keyword-only parameters that have a default."""
    sig = inspect.signature(fn)
    return {
        n: p
        for n, p in sig.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }


def check_params(fn: Callable, params: dict[str, Any], where: str) -> None:
    """Raise ValueError naming `where` if `params` has an unknown name or a wrongly typed value."""
    known = declared_params(fn)
    # A plain class declares its parameters on __init__; a dataclass's class annotations and its
    # generated __init__ agree, so both kinds of plug-in are checked the same way.
    hints = typing.get_type_hints(fn.__init__ if isinstance(fn, type) else fn)
    for key, value in params.items():
        if key not in known:
            raise ValueError(
                f"{where}.{key}: unknown parameter; valid: {', '.join(sorted(known)) or '(none)'}"
            )
        hint = hints.get(key)
        if hint is not None and not matches_hint(value, hint):
            raise ValueError(f"{where}.{key}: expected {_hint_name(hint)}, got {value!r}")


def matches_hint(value: Any, hint: Any) -> bool:
    """Does `value` (parsed YAML or JSON) have type `hint`? Items of lists, tuples and dicts too;
    bool is not an int or a float here, as YAML's `yes` must not pass for a number."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches_hint(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(
            matches_hint(v, args[0]) for v in value
        ) if args else isinstance(value, (list, tuple))
    if origin is dict:
        key, val = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(matches_hint(k, key) and matches_hint(v, val) for k, v in value.items())
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "")  # dict[str, float], not just dict
