"""Small frozen config objects chosen by name: parameter checking, coercion from text, dict round trips.

A registry maps a name to a frozen dataclass with a ``name`` ClassVar; its ``init`` fields are the parameters
(a field with ``init=False`` is state derived from them, e.g. ``OptimalDensity.tracker``, and is left out).
``build`` makes one from a name and parameters (strings from a command line are coerced to the field's
type), ``config_to_dict`` / ``config_from_dict`` round-trip it through plain JSON types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import Field, fields
from typing import Any

from diffloss.errors import DifflossError, unknown_name


def _coerce(value: Any, annotation: str, what: str) -> Any:
    """``value`` as the type named by a field annotation (``float``, ``int``, ``bool``, ``str``, tuples as is)."""
    kind = annotation.split("[")[0].split("|")[0].strip()
    try:
        if kind == "float":
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text in ("true", "1", "yes")
        if kind == "tuple":
            return tuple(float(v) for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise DifflossError(f"{what}: {value!r} is not a valid {kind}") from None


def build(registry: Mapping[str, type], kind: str, name: str, params: Mapping[str, Any], aliases=None) -> Any:
    """The config object registered as ``name`` (or an alias of it) with ``params``."""
    key = (aliases or {}).get(name, name)
    if key not in registry:
        raise unknown_name(kind, name, registry)
    cls = registry[key]
    allowed = {f.name: f for f in parameters(cls)}
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise DifflossError(
            f"{kind} {key!r} has no parameter(s) {', '.join(extra)}; "
            f"its parameters are: {', '.join(sorted(allowed)) or 'none'}"
        )
    kwargs = {k: _coerce(v, str(allowed[k].type), f"{kind} {key!r} parameter {k!r}") for k, v in params.items()}
    return cls(**kwargs)


def parameters(cls_or_obj: Any) -> tuple[Field, ...]:
    """The parameter fields of a config class or object: its dataclass fields with ``init=True``."""
    return tuple(f for f in fields(cls_or_obj) if f.init)


def config_to_dict(obj: Any) -> dict[str, Any]:
    """``{"name": ..., **parameters}`` with tuples as lists (plain JSON types)."""
    values = {f.name: getattr(obj, f.name) for f in parameters(obj)}
    return {"name": obj.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}


def config_from_dict(registry: Mapping[str, type], kind: str, d: Mapping[str, Any], aliases=None) -> Any:
    """Inverse of ``config_to_dict``."""
    d = dict(d)
    if "name" not in d:
        raise DifflossError(f"a {kind} config needs a 'name' key")
    return build(registry, kind, d.pop("name"), d, aliases)


def parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """``"name:key=value,key=value"`` -> (name, {key: value}); a bare ``"name"`` has no parameters."""
    name, _, rest = text.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DifflossError(f"{text!r}: parameters are written key=value, e.g. min-snr:gamma=5")
        params[key.strip().replace("-", "_")] = value.strip()
    if not name:
        raise DifflossError(f"{text!r}: give a name, e.g. min-snr or min-snr:gamma=5")
    return name, params
