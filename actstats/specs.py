"""One grammar for every named, parameterised choice: ``NAME[:key=value,...]``.

Used for weight and bias inits (``normal:std=0.01``, ``kaiming_normal:mode=fan_out``) and for
activations (``leaky_relu:negative_slope=0.2``). YAML may give the same thing as a mapping
``{name: normal, std: 0.01}``. A parsed spec is a ``Spec(name, params)`` whose ``str()`` is canonical,
so the same choice always prints, names folders and compares the same way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError, did_you_mean, show

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Spec:
    name: str
    params: tuple[tuple[str, Any], ...] = field(default=())  # sorted (key, value) pairs

    def get(self, key: str, default=None):
        return dict(self.params).get(key, default)

    def as_dict(self) -> dict:
        return dict(self.params)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in self.params)


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _value(text: str, where: str):
    """A spec value: a number (int or float), true/false, or a bare word such as fan_out."""
    t = text.strip()
    if t == "":
        raise ConfigError(f"{where}: empty value.")
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        number = float(t)
    except ValueError:
        if not _NAME.match(t):
            raise ConfigError(f"{where}: value '{show(t)}' is neither a number nor a word.") from None
        return t
    return number


def parse(spec: "str | Mapping | Spec", what: str = "init") -> Spec:
    """Parse ``NAME[:key=value,...]`` (or a YAML mapping with ``name``) into a Spec.

    Only the shape is checked here; whether the name and keys exist is the caller's registry's job.
    """
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Mapping):
        items = dict(spec)
        if "name" not in items:
            raise ConfigError(f"{what} spec {items!r} has no 'name' key.")
        name = items.pop("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{what} spec: name {show(repr(name))} is not a valid name.")
        params = {}
        for key, val in items.items():
            if not isinstance(key, str) or not _NAME.match(key):
                raise ConfigError(f"{what} spec '{name}': key {show(repr(key))} is not a valid name.")
            if isinstance(val, str):
                val = _value(val, f"{what} spec '{name}', key '{key}'")
            elif isinstance(val, (int, float)) and not isinstance(val, bool):
                val = float(val)
            elif not isinstance(val, bool):
                raise ConfigError(
                    f"{what} spec '{name}', key '{key}': expected a number or a word, "
                    f"got {type(val).__name__}."
                )
            params[key] = val
        return Spec(name.lower(), tuple(sorted(params.items())))
    if not isinstance(spec, str):
        raise ConfigError(f"{what} spec must be a string such as 'normal:std=0.01', got {show(repr(spec))}.")
    text = spec.strip()
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        if not text:  # an empty --init "" has no ':' to speak of
            raise ConfigError(f"empty {what} spec: expected NAME[:key=value,...].")
        raise ConfigError(f"malformed {what} spec '{show(spec)}': missing name before ':'.")
    if not _NAME.match(name):
        raise ConfigError(
            f"malformed {what} spec '{show(spec)}': '{show(name)}' is not a name "
            "(expected NAME[:key=value,...])."
        )
    params: dict[str, Any] = {}
    if rest.strip():
        for part in rest.split(","):
            key, eq, val = part.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ConfigError(
                    f"malformed {what} spec '{show(spec)}': '{show(part.strip())}' is not key=value."
                )
            if not _NAME.match(key):
                raise ConfigError(f"malformed {what} spec '{show(spec)}': '{show(key)}' is not a valid key.")
            if key in params:
                raise ConfigError(f"malformed {what} spec '{show(spec)}': key '{key}' given twice.")
            params[key] = _value(val, f"{what} spec '{show(spec)}', key '{key}'")
    elif ":" in text:
        raise ConfigError(f"malformed {what} spec '{show(spec)}': nothing after ':'.")
    return Spec(name.lower(), tuple(sorted(params.items())))


def check_keys(spec: Spec, allowed: Mapping[str, Any], what: str = "init") -> dict:
    """Defaults merged with the spec's params; an unknown key is an error naming the valid ones."""
    values = dict(allowed)
    for key, val in spec.params:
        if key not in allowed:
            if allowed:
                hint = did_you_mean(key, allowed)
            else:
                hint = "; it takes no parameters."
            raise ConfigError(f"{what} '{spec.name}' has no parameter '{key}'{hint}")
        values[key] = val
    return values


def number(values: dict, key: str, spec: Spec, what: str = "init", *, positive=False,
           nonneg=False) -> float:
    """values[key] as a finite float, with a clear error otherwise."""
    val = values[key]
    if val is None:
        raise ConfigError(f"{what} '{spec.name}' needs {key}=..., e.g. '{spec.name}:{key}=0.5'.")
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        raise ConfigError(f"{what} '{spec.name}': {key} must be a number, got '{show(val)}'.")
    val = float(val)
    if not math.isfinite(val):
        raise ConfigError(f"{what} '{spec.name}': {key} == {val}, must be finite.")
    if positive and val <= 0:
        raise ConfigError(f"{what} '{spec.name}': {key} == {_fmt(val)}, must be > 0.")
    if nonneg and val < 0:
        raise ConfigError(f"{what} '{spec.name}': {key} == {_fmt(val)}, must be >= 0.")
    return val


def choice(values: dict, key: str, options, spec: Spec, what: str = "init") -> str:
    val = values[key]
    if not isinstance(val, str) or val not in options:
        raise ConfigError(
            f"{what} '{spec.name}': {key} '{show(val)}' is not valid{did_you_mean(str(val), options)}"
        )
    return val
