"""Typed checks of config values, so that a bad experiment file is one line naming the file,
the key, the value and what is expected (``train.batch_size = 2.5: expected an integer``).

:func:`typed` checks a value against a dataclass field's annotation and converts it (int ->
float, list -> tuple, str -> Enum); :func:`require` checks a range; :func:`within` names the
table an error is in; :func:`reject_unknown` refuses unknown keys with a "did you mean".
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import functools
import json
import types
import typing
from typing import Any, Iterator

from sepvae.errors import SepvaeError


class ConfigValueError(SepvaeError):
    """A config value of the wrong type or range: ``key = value: expected ...``."""

    def __init__(self, key: str, value: Any, expected: str):
        super().__init__(f"{key} = {shown(value)}: expected {expected}")
        self.key, self.value, self.expected = key, value, expected


def require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigValueError(key, value, expected)


@contextlib.contextmanager
def within(where: str) -> Iterator[None]:
    """Name the table an error is in: ``train`` + ``batch_size = 0: ...`` ->
    ``train.batch_size = 0: ...``; other errors get ``train: `` in front."""
    if not where:
        yield
        return
    try:
        yield
    except ConfigValueError as exc:
        raise ConfigValueError(f"{where}.{exc.key}", exc.value, exc.expected) from None
    except SepvaeError as exc:
        raise SepvaeError(f"{where}: {exc}") from None


def shown(value: Any) -> str:
    """A value as TOML writes it ("zero", 2.5, [0.0, 5.0], true), cut short if long."""
    try:
        text = json.dumps(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.cache
def field_types(cls) -> dict[str, Any]:
    """Field name -> resolved annotation of the fields ``cls()`` takes."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def reject_unknown(data: dict[str, Any], known: list[str], what: str) -> None:
    unknown = sorted(set(data) - set(known))
    if not unknown:
        return
    guesses = [(key, difflib.get_close_matches(key, known, n=1)) for key in unknown]
    hint = ", ".join(f"{match[0]} for {key}" for key, match in guesses if match)
    raise SepvaeError(
        f"unknown {what}(s): {', '.join(unknown)}" + (f" (did you mean {hint}?)" if hint else "")
        + f"; known: {', '.join(known)}"
    )


def typed(key: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against a field's annotation and converted to it (int -> float,
    list -> tuple, str -> Enum); ConfigValueError if it does not fit."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # X | None (None from JSON; TOML has none)
        if value is None and type(None) in args:
            return None
        return typed(key, value, next(a for a in args if a is not type(None)))
    if annotation is bool:
        require(isinstance(value, bool), key, value, "true or false")
    elif annotation is int:
        require(type(value) is int, key, value, "an integer")
    elif annotation is float:
        require(type(value) in (int, float), key, value, "a number")
        return float(value)
    elif annotation is str:
        require(isinstance(value, str), key, value, "a string")
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        choices = [member.value for member in annotation]
        require(isinstance(value, str) and value in choices, key, value, "one of " + ", ".join(map(repr, choices)))
        return annotation(value)
    elif origin is tuple and args[-1] is not Ellipsis:  # a fixed-size pair such as [lo, hi]
        require(isinstance(value, (list, tuple)) and len(value) == len(args), key, value, f"a list of {len(args)} values")
        return tuple(typed(key, item, arg) for item, arg in zip(value, args))
    elif origin is tuple:  # layer sizes: the class checks them (positive integers)
        return tuple(value) if isinstance(value, list) else value
    elif annotation in (dict, list):
        require(isinstance(value, annotation), key, value, _TABLE_KINDS[annotation].format(key=key))
    return value


_TABLE_KINDS = {dict: "a table ([{key}])", list: "an array of tables ([[{key}]] entries)"}
