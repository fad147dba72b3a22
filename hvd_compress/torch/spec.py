"""Build codecs from spec strings: ``"qsgd:bits=4,bucket_size=512"``, ``"doublesqueeze:codec=onebit"``."""
from __future__ import annotations

import inspect
from typing import Any, Dict

from hvd_compress.torch.codecs.base import Codec

COMMON_OPTIONS = ("min_numel", "compress_1d", "exchange", "nonfinite", "seed")


def registry() -> Dict[str, type]:
    from hvd_compress.torch import codecs as c
    return {"none": c.NoCompression, "fp16": c.FP16, "bf16": c.BF16, "qsgd": c.QSGD,
            "terngrad": c.TernGrad, "onebit": c.OneBit, "efsign": c.EFSign, "signsgd": c.SignSGD,
            "topk": c.TopK, "doublesqueeze": c.DoubleSqueeze, "lattice": c.Lattice}


def _value(text: str) -> Any:
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


def _accepted(cls) -> set:
    names = set(COMMON_OPTIONS)
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            params = inspect.signature(klass.__init__).parameters.values()
            names |= {p.name for p in params if p.name not in ("self", "inner")
                      and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names


def from_spec(spec: "str | Codec") -> Codec:
    """Build a codec from a string: ``name`` or ``name:key=value,key=value``.

    >>> from_spec("qsgd:bits=4,bucket_size=512")
    qsgd(bits=4,bucket_size=512,norm=max)
    >>> from_spec("doublesqueeze:codec=onebit")
    doublesqueeze(onebit(bucket_size=1024))

    For ``doublesqueeze`` the keys after ``codec=`` that the inner codec accepts go to it:
    ``doublesqueeze:codec=qsgd,bits=4``. Common options (``min_numel``, ``compress_1d``,
    ``exchange``, ``nonfinite``, ``seed``) go to the outer codec.
    """
    if isinstance(spec, Codec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"codec spec must be a non-empty string, got {spec!r}")
    known = registry()
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in known:
        raise ValueError(f"unknown codec {name!r} in spec {spec!r}; available: {', '.join(sorted(known))} "
                         "(e.g. 'qsgd:bits=4,bucket_size=512', 'terngrad:clip=2.5', 'topk:ratio=0.01', "
                         "'doublesqueeze:codec=onebit')")
    kwargs: Dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"bad item {item!r} in codec spec {spec!r}: expected key=value")
        kwargs[key.strip()] = _value(val)
    cls = known[name]
    if name == "doublesqueeze":
        inner_name = kwargs.pop("codec", "onebit")
        inner_cls = known.get(str(inner_name))
        if inner_cls is None or inner_cls is cls:
            raise ValueError(f"doublesqueeze needs codec=<one of {', '.join(sorted(set(known) - {name}))}>, "
                             f"got {inner_name!r}")
        inner_keys = _accepted(inner_cls) - set(COMMON_OPTIONS)
        inner_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in inner_keys}
        inner = _build(inner_cls, inner_kwargs, spec)
        return _build(cls, dict(kwargs, codec=inner), spec)
    return _build(cls, kwargs, spec)


def _build(cls, kwargs, spec):
    accepted = _accepted(cls) | {"codec"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise ValueError(f"codec spec {spec!r}: {cls.__name__} does not take {sorted(unknown)}; "
                         f"it takes {sorted(accepted - {'codec'})}")
    return cls(**kwargs)
