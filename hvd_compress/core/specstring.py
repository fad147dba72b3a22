"""Spec strings: ``"qsgd:bits=4,bucket_size=512"`` -> ``("qsgd", {"bits": 4, "bucket_size": 512})``.

Plain Python, shared by the registry (:func:`hvd_compress.reference`) and both frameworks'
``from_spec`` (through :mod:`hvd_compress.spec`).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple


def _value(text: str) -> Any:
    """A spec value: bool, None, int, float, else the stripped text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse(spec: str) -> Tuple[str, Dict[str, Any]]:
    """``"qsgd:bits=4,bucket_size=512"`` -> ``("qsgd", {"bits": 4, "bucket_size": 512})``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"codec spec must be a non-empty string, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    kwargs: Dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"bad item {item!r} in codec spec {spec!r}: expected key=value")
        kwargs[key.strip()] = _value(val)
    return name.strip().lower(), kwargs
