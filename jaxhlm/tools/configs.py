"""TOML configuration files read into typed, frozen dataclasses, checked key by key.

A schema is a frozen dataclass: each field is a key, its annotation the type the
value must have, its default (if any) makes the key optional, and
``field(metadata=check(predicate, "what"))`` adds a range check (``nonempty(...)``:
an array that must not be empty).  Types understood:
``bool``, ``int``, ``float`` (an integer is accepted and converted), ``str``,
``Literal[...]`` (one of the listed values), ``tuple[T, ...]`` (a TOML array),
``dict[str, T]`` (a TOML table) and a nested schema (a table, or with ``tuple[...]``
an array of tables).  Anything else in the file is an error that names the key:
an unknown key (with the nearest known one suggested), a missing required key, a
value of the wrong type or out of range.  ``bench`` and ``study`` read their configs
with :func:`load`.

Example::

    @dataclasses.dataclass(frozen=True)
    class Grid:
        name: str
        reps: int = dataclasses.field(default=5, metadata=check(lambda v: v >= 1, "at least 1"))

    grid = load("configs/bench/smoke.toml", Grid)
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import JaxhlmError

T = TypeVar("T")


class ConfigError(JaxhlmError, ValueError):
    """A configuration file that cannot be read or does not match its schema."""


def check(predicate: Callable[[Any], bool], what: str) -> dict:
    """Field metadata: every value (each element of an array) must satisfy ``predicate``;
    ``what`` says how in the error (``"at least 1"``)."""
    return {"check": (predicate, what)}


def positive(nonempty: bool = False) -> dict:
    """Integers at least 1 (and, with ``nonempty``, an array of at least one)."""
    return {**check(lambda v: v >= 1, "at least 1"), "nonempty": nonempty}


def nonempty(meta: dict | None = None) -> dict:
    """An array that must hold at least one value (plus the checks in ``meta``)."""
    return {**(meta or {}), "nonempty": True}


def load(path: str | Path, schema: type[T]) -> T:
    """Read the TOML file ``path`` into ``schema`` (a frozen dataclass), checking every key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no such config file: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return convert(data, schema, str(path))


def convert(data: Any, schema: type[T], where: str, key: str = "") -> T:
    """``data`` (parsed TOML) as an instance of ``schema``; errors say ``where: key``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {_name(key)} must be a table, got {_shown(data)}")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for name in data:
        if name not in fields:
            near = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"{where}: unknown key '{_join(key, name)}'{hint}; "
                              f"{_name(key)} takes: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        full = _join(key, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing required key '{full}'")
            continue
        value = _value(data[name], hints[name], where, full)
        if f.metadata.get("nonempty") and not value:
            raise ConfigError(f"{where}: '{full}' must not be empty")
        if "check" in f.metadata:
            predicate, what = f.metadata["check"]
            for v in value if isinstance(value, tuple) else (value,):
                if not predicate(v):
                    raise ConfigError(f"{where}: '{full}' must be {what}, got {v!r}")
        values[name] = value
    return schema(**values)


def _value(value: Any, hint: Any, where: str, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return convert(value, hint, where, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{key}' must be {_describe(hint)}, got {_shown(value)}")
        return tuple(_value(v, args[0], where, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be {_describe(hint)}, got {_shown(value)}")
        return {k: _value(v, args[1], where, f"{key}.{k}") for k, v in value.items()}
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: '{key}' must be {_describe(hint)}, got {value!r}")
        return value
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[hint]
    if not ok(value):
        raise ConfigError(f"{where}: '{key}' must be {_describe(hint)}, got {_shown(value)}")
    return float(value) if hint is float else value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return "a table"
    if origin is tuple:
        inner = _describe(args[0])
        return "an array of tables" if inner == "a table" else f"an array of {_plural(inner)}"
    if origin is dict:
        return f"a table of {_plural(_describe(args[1]))}"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _plural(text: str) -> str:
    if text.startswith("one of "):
        return "values from " + text[len("one of "):]
    word = text.split(" ", 1)[1]
    return {"true or false": "booleans"}.get(text, word + "s")


def _shown(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})" if not isinstance(value, (list, dict)) else kind


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _name(key: str) -> str:
    return f"[{key}]" if key else "the top level"
