"""Field checks for the model's JSON (encoder specs, ``bundle.json``): one error, one message form.

Every check raises :class:`ModelContractError` as ``"<where>: <what is wrong>"``, ``where`` naming
the file or spec, so a broken model reads the same whichever file of it is broken.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ModelContractError


def fail(where: str, msg: str) -> ModelContractError:
    """The error for ``msg`` about ``where`` (the caller raises it)."""
    return ModelContractError(f"{where}: {msg}")


def need(d: Any, key: str, types: type | tuple[type, ...], where: str) -> Any:
    """``d[key]`` when ``d`` is an object holding ``key`` of ``types`` (a bool is not an int)."""
    if not isinstance(d, dict):
        raise fail(where, f"expected an object, got {type(d).__name__}")
    if key not in d:
        raise fail(where, f"missing field '{key}'")
    v = d[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise fail(where, f"field '{key}' has the wrong type (bool)")
    if not isinstance(v, types):
        raise fail(where, f"field '{key}' has type {type(v).__name__}")
    return v


def finite_list(v: Any, n: int | None, where: str, key: str) -> list[float]:
    """``v`` as floats when it is a list of ``n`` (any number when None) finite numbers."""
    if not isinstance(v, list) or (n is not None and len(v) != n):
        raise fail(where, f"'{key}' must be a list of {n if n else 'some'} numbers")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise fail(where, f"'{key}' holds a non-finite or non-numeric value")
        out.append(float(x))
    return out
