"""How a settings section declares its keys (each field with its default and its valid values),
and how a value read from YAML is checked against a field's type.

A section is a frozen dataclass whose fields are made with ``setting(default, choices=...,
minimum=..., ...)`` and whose ``__post_init__`` calls ``check_section(self, "name")``. So a value
is checked where it is declared, whoever builds the section: ``bridgeseg.config`` when a YAML
file or a ``--set`` override loads, or a caller constructing it in Python. The error names the
dotted key (``instance.nms_threshold``) and what it accepts.

The option lists themselves (``choices``) come from the modules that implement the options
(``models.backbone.DEPTHS``, ``data.registry.DATASETS``, ...), so a new option is added in one
place. This module imports nothing of bridgeseg's.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A config file, override or setting is wrong; the message names the key and the fix.

    ``keys``: the dotted keys whose values are at fault, where known (so that the error can say
    whether they came from a file or a ``--set`` override).
    """

    def __init__(self, message: str, *keys: str) -> None:
        super().__init__(message)
        self.keys = keys


def setting(default: Any, *, choices=None, minimum: float | None = None, maximum: float | None = None,
            above: float | None = None, below: float | None = None, doc: str = "") -> Any:
    """A dataclass field with its valid values.

    Args:
        default: the default value (immutable: tuples, not lists).
        choices: the values allowed (any iterable; its order is the one shown in errors).
        minimum, maximum: inclusive bounds for numbers; ``above``, ``below``: exclusive bounds.
            ``None`` values of an optional field are not bounded.
        doc: one line for the reader of the dataclass (the docstring says more).
    """
    rules = {"choices": tuple(choices) if choices is not None else None, "minimum": minimum,
             "maximum": maximum, "above": above, "below": below, "doc": doc}
    return dataclasses.field(default=default, metadata=rules)


def _bound_problem(value: Any, rules: dict) -> str | None:
    """What is wrong with a number under ``rules`` (its bounds), or None."""
    for key, fails, words in (("minimum", lambda v, b: v < b, ">="), ("above", lambda v, b: v <= b, ">"),
                              ("maximum", lambda v, b: v > b, "<="), ("below", lambda v, b: v >= b, "<")):
        bound = rules.get(key)
        if bound is not None and fails(value, bound):
            return f"it must be {words} {bound}"
    return None


def check_value(dotted: str, value: Any, rules: dict) -> None:
    """Raise ``ConfigError`` naming ``dotted`` when ``value`` breaks ``rules`` (a field's metadata)."""
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{dotted} = {value!r} is not valid; choose one of {list(choices)}", dotted)
    if value is None or isinstance(value, (bool, str)):
        return
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{dotted} = {value!r} is not valid: it must be a finite number", dotted)
        problem = _bound_problem(item, rules)
        if problem:
            raise ConfigError(f"{dotted} = {value!r} is out of range: {problem}", dotted)


def check_section(section: Any, name: str) -> None:
    """Check every field of a section dataclass against the rules it was declared with."""
    for field in dataclasses.fields(section):
        check_value(f"{name}.{field.name}", getattr(section, field.name), field.metadata)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def coerce(dotted: str, value: Any, annotation: Any) -> Any:
    """``value`` (as YAML reads it) checked against a field's type annotation, named ``dotted`` in
    errors; ints are accepted for floats, lists for tuples, a number for a one-element tuple."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [option for option in options if option is not type(None)]
        for option in inner[:-1]:  # e.g. ``int | str``: a number, else a word
            try:
                return coerce(dotted, value, option)
            except ConfigError:
                pass
        try:
            return coerce(dotted, value, inner[-1])
        except ConfigError:
            if len(inner) == 1:
                raise
            names = " or ".join(_type_name(option) for option in inner)
            raise ConfigError(f"{dotted} must be {names}, got {value!r}", dotted) from None
    if origin is tuple and typing.get_args(annotation)[-1] is Ellipsis:
        item_type = typing.get_args(annotation)[0]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{dotted} must be a non-empty list of numbers, got {value!r}", dotted)
        return tuple(coerce(dotted, item, item_type) for item in value)
    if origin is tuple:
        item_types = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise ConfigError(f"{dotted} must be a list of {len(item_types)} numbers, got {value!r}", dotted)
        return tuple(coerce(dotted, item, item_type) for item, item_type in zip(value, item_types))
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{dotted} must be {_type_name(annotation)}, got {value!r}", dotted)
