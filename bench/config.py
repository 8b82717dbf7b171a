"""One config path for attacks and defenses: values converted by the config dataclass's type hints.

A config is a frozen dataclass whose fields carry type hints (``eps: float``, ``seed: int | None``,
``gamma: tuple[float, ...] | None``). :func:`coerce_config` takes what a user gives (Python values, the JSON
values of ``--set KEY=VALUE``, or plain strings) and converts each to its field's type with
:func:`coerce`, read through :func:`typing.get_type_hints`:

* ``float``: a real number (int, float, numpy scalar), or a string such as ``"0.1"`` or ``"8/255"``;
* ``int``: an integer (numpy's too), or a string of digits (a float is refused: ``steps=7.5`` is a
  mistake, not a 7);
* ``bool``: a bool, or the strings ``true`` / ``false``;
* ``str``: a string;
* ``tuple[T, ...]``: a list or tuple (each item converted), a JSON list ``"[1, 1.5]"``, a comma list
  ``"1,1.5"``, or a single value (a 1-tuple);
* ``X | None``: ``None``, or the strings ``none`` / ``null`` / ``""``, or an ``X``;
* ``A | B``: kept as is when it already is one of them, else the first that converts;
* ``Any``: kept as is.

A value that does not convert raises :class:`~neokd_bench.errors.UsageError` in one line naming the
owner, the field, the value, the type expected and an example (the field's default). Range checks stay
with each config (``validate``); conversion is done here only.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from fractions import Fraction
from typing import Any, Union

from .errors import UsageError

_NONE_STRINGS = ("none", "null", "")


class _NoConversion(Exception):
    """A value does not convert to a type (internal; turned into a UsageError by :func:`coerce`)."""


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type hint}`` of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def describe_type(tp: Any) -> str:
    """What a user must type for ``tp``, in words (``a number``, ``an integer or null``, ...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        words = " or ".join(describe_type(a) for a in members)
        return words + (" or null" if len(members) < len(args) else "")
    if origin is tuple:
        inner = args[0] if args else Any
        return f"a list of {_plural(describe_type(inner))}"
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _plural(words: str) -> str:
    return {"a number": "numbers", "an integer": "integers", "a string": "strings",
            "true or false": "booleans"}.get(words, words)


def _convert(tp: Any, value: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str)
                                                     and value.strip().lower() in _NONE_STRINGS)):
            return None
        members = [a for a in args if a is not type(None)]
        for a in members:  # already one of the members: keep it (a str stays a str in `str | int`)
            if _is_instance(value, a):
                return _convert(a, value)
        for a in members:
            try:
                return _convert(a, value)
            except _NoConversion:
                continue
        raise _NoConversion
    if origin is tuple:
        return _to_tuple(args, value)
    if value is None:
        raise _NoConversion
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _NoConversion
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # numpy integers too
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value.strip())
        raise _NoConversion
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return _parse_float(value)
        raise _NoConversion
    if tp is str:
        if isinstance(value, str):
            return value
        raise _NoConversion
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _NoConversion


def _is_instance(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if typing.get_origin(tp) is tuple:
        return isinstance(value, (tuple, list))
    if tp in (int, float) and isinstance(value, bool):
        return False
    if tp is int:
        return isinstance(value, numbers.Integral)
    return isinstance(tp, type) and isinstance(value, tp)


def _parse_float(text: str) -> float:
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        return float(Fraction(s))  # "8/255"
    except (ValueError, ZeroDivisionError):
        raise _NoConversion from None


def _to_tuple(args: tuple[Any, ...], value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            from .safe_io import NotJSONError, loads_json

            try:
                value = loads_json(s, "a list value")
            except NotJSONError:
                raise _NoConversion from None
        else:
            value = [t.strip() for t in s.split(",")] if s else []
    if isinstance(value, dict) or value is None:
        raise _NoConversion
    if not isinstance(value, (list, tuple)):
        value = [value]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v) for v in value)
    if args and len(args) != len(value):
        raise _NoConversion
    return tuple(_convert(a, v) for a, v in zip(args, value)) if args else tuple(value)


def coerce(owner: str, name: str, tp: Any, value: Any, default: Any = dataclasses.MISSING) -> Any:
    """``value`` converted to ``tp``, or a one-line :class:`UsageError` naming ``owner`` and the field."""
    try:
        return _convert(tp, value)
    except _NoConversion:
        shown = list(value) if isinstance(value, tuple) else value
        example = ""
        if default is not dataclasses.MISSING and default is not None:
            ex = json.dumps(list(default) if isinstance(default, tuple) else default)
            example = f"; e.g. {name}={ex}"
        raise UsageError(f"{owner}: {name}={json.dumps(shown, default=repr)} is not valid; "
                         f"give {describe_type(tp)}{example}") from None


def coerce_config(cls: type, owner: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every value converted by the type hints of the config dataclass ``cls`` (build the
    config with ``cls(**result)``). An unknown field is a one-line :class:`UsageError` listing the fields."""
    types_ = field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise UsageError(f"{owner} has no option {unknown[0]!r}; its options are: {', '.join(types_)}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return {k: coerce(owner, k, types_[k], v, defaults.get(k, dataclasses.MISSING)) for k, v in values.items()}


__all__ = ["coerce_config", "coerce", "describe_type", "field_types"]
