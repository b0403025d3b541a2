"""Plug-in registries (datasets, backbones, strategies) and the validation of their parameters.

Each plug-in is a callable whose keyword-only parameters with defaults are its user-facing
parameters: the suite loader checks names, types and ranges against that signature, so a parameter
is declared exactly once, where it is used. A numeric parameter states its valid values on its own
annotation, `lr: Annotated[float, Range("> 0")] = 0.05`, and `check_params` checks every number of
a value against it (each item of a list, each value of a mapping).

Annotations are evaluated one parameter at a time, so a plug-in module may name in its other
annotations (the context argument, the return type) classes it imports only where it builds: the
modules that declare plug-ins import no torch at their top level, and `bench validate` none at all.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Iterator

YAML_BOOL_HINT = (" (YAML 1.1 reads an unquoted yes, no, on, off, true or false as a boolean: quote it, "
                  "as in 'no')")


YAML_NUMBER_HINT = (" (YAML 1.1 reads {0} as a string, not a number: write an exponent with a dot before it and a "
                    "sign, as in 1.0e-3, or the plain number, as in 0.001)")


def _number_text(value: Any) -> str | None:
    """The first string in `value` (itself, or an item of a list or a value of a mapping) that Python reads
    as a number while YAML 1.1 did not (`1e-3`, `5E4`), None when there is none."""
    if isinstance(value, str):
        try:
            return value if math.isfinite(float(value)) else None  # 'nan': YAML's own spelling is .nan
        except ValueError:
            return None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return next((t for t in map(_number_text, items) if t is not None), None)


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric setting, in interval notation: "[0, 1)", "(0, 1]", "> 0", ">= 1".

    `x in Range("[0, 1)")` is True for finite numbers inside it; NaN and infinities are never inside.
    A malformed text is a ValueError when the module declaring it is imported.
    """

    text: str
    lo: float = field(init=False, default=-math.inf)
    hi: float = field(init=False, default=math.inf)
    lo_open: bool = field(init=False, default=False)
    hi_open: bool = field(init=False, default=False)

    _BOUND = re.compile(r"^(>=|>|<=|<)\s*(\S+)$")
    _INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")

    def __post_init__(self) -> None:
        text = self.text.strip()
        if m := self._INTERVAL.match(text):
            values = {"lo": float(m[2]), "hi": float(m[3]), "lo_open": m[1] == "(", "hi_open": m[4] == ")"}
        elif m := self._BOUND.match(text):
            side = "lo" if m[1][0] == ">" else "hi"
            values = {side: float(m[2]), f"{side}_open": len(m[1]) == 1}
        else:
            raise ValueError(f"Range({self.text!r}): expected '[a, b]', '(a, b)', '[a, b)', '> a', '>= a', '< b' "
                             "or '<= b'")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __contains__(self, x: Any) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            return False
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below

    def __str__(self) -> str:
        return self.text


SEEDS = Range("[0, 4294967295]")  # numpy's seeds are unsigned 32-bit integers


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


def param_hints(fn: Callable) -> dict[str, Any]:
    """The type hints of a plug-in's declared parameters, with their `Annotated` extras (ranges).

    Only those annotations are evaluated, each in the namespace of the module that wrote it: a
    dataclass's fields over its bases, else the callable's own (a plain class: its __init__'s)."""
    known = declared_params(fn)
    sources = [c for c in reversed(fn.__mro__) if c is not object] if isinstance(fn, type) else []
    sources.append(fn.__init__ if isinstance(fn, type) else fn)
    hints: dict[str, Any] = {}
    for source in sources:
        module = sys.modules.get(getattr(source, "__module__", None) or "")
        namespace = vars(module) if module else getattr(source, "__globals__", {})
        for name, ann in inspect.get_annotations(source).items():
            if name in known and name not in hints:
                hints[name] = eval(ann, namespace) if isinstance(ann, str) else ann  # noqa: S307 (our own source)
    return hints


def check_params(fn: Callable, params: dict[str, Any], where: str) -> None:
    """Raise ValueError naming `where` if `params` has an unknown name, a wrongly typed value, or a
    number outside its parameter's declared Range."""
    known = declared_params(fn)
    hints = param_hints(fn)
    for key, value in params.items():
        if key not in known:
            raise ValueError(
                f"{where}.{key}: unknown parameter; valid: {', '.join(sorted(known)) or '(none)'}"
            )
        hint = hints.get(key)
        if hint is not None:
            check_value(value, hint, f"{where}.{key}")


def check_value(value: Any, hint: Any, where: str) -> None:
    """ValueError naming `where` when `value` does not have type `hint` or breaks its Range."""
    base, ranges = unannotated(hint)
    if not matches_hint(value, base):
        number = _number_text(value) if "float" in _hint_name(base) or "int" in _hint_name(base) else None
        hint_text = (YAML_BOOL_HINT if _has_bool(value) and "str" in _hint_name(base) else
                     YAML_NUMBER_HINT.format(number) if number is not None else "")
        raise ValueError(f"{where}: expected {_hint_name(base)}, got {value!r}{hint_text}")
    for valid in ranges:
        for path, x in _numbers(value):
            if x not in valid:
                raise ValueError(f"{where}{path}: {x!r} is out of range; valid: {valid}")


def unannotated(hint: Any) -> tuple[Any, list[Range]]:
    """(the type without Annotated, the Ranges it carried)."""
    if typing.get_origin(hint) is Annotated:
        return hint.__origin__, [m for m in hint.__metadata__ if isinstance(m, Range)]
    return hint, []


def _numbers(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every number in `value` with its path below the setting: "" itself, "[1]" a list item, ".a" a value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_bool(v) for v in value)
    if isinstance(value, dict):
        return any(_has_bool(k) or _has_bool(v) for k, v in value.items())
    return False


def matches_hint(value: Any, hint: Any) -> bool:
    """Does `value` (parsed YAML or JSON) have type `hint` (its Annotated extras aside)? Items of
    lists, tuples and dicts too; bool is not an int or a float here, as YAML's `yes` must not pass
    for a number."""
    hint = unannotated(hint)[0]
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
