"""Spec strings, framework-neutral: ``"qsgd:bits=4,bucket_size=512"``, ``"doublesqueeze:codec=onebit"``.

``hvd_compress.torch.from_spec`` and ``hvd_compress.tensorflow.from_spec`` both call :func:`build`
with their own registry of codec classes, so a spec means the same codec in both frameworks.
"""

from __future__ import annotations

import inspect
from typing import Dict

from hvd_compress.common import COMMON_OPTIONS
from hvd_compress.core.registry import builtin_names, instantiate, knob_names, lookup, registry, split_options
from hvd_compress.core.specstring import parse


def accepted(cls) -> set:
    """Keyword arguments a codec class takes (its own and its bases'), plus the common options."""
    names = set(COMMON_OPTIONS)
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            params = inspect.signature(klass.__init__).parameters.values()
            names |= {
                p.name
                for p in params
                if p.name not in ("self", "inner") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            }
    return names


def build(spec, known: Dict[str, type], base_cls: type, reference_cls: "type | None" = None):
    """Build a codec from a spec string with the classes in ``known`` (name -> class).

    For ``doublesqueeze`` the keys after ``codec=`` that the inner codec accepts go to it:
    ``doublesqueeze:codec=qsgd,bits=4``. Common options (``min_numel``, ``compress_1d``,
    ``exchange``, ``nonfinite``, ``seed``) go to the outer codec.

    A name not in ``known`` but registered with :func:`hvd_compress.register_codec` (alone or as
    ``codec=``) is built as ``reference_cls(spec, **common_options)``: the framework's reference
    backend running the spec's numpy encode/decode.
    """
    if isinstance(spec, base_cls):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"codec spec must be a non-empty string or an hvd_compress codec, got {spec!r}")
    name, kwargs = parse(spec)
    user = _user_spec(name, known, reference_cls)
    if name not in known and user is None:
        available = sorted(_user_names(known, reference_cls))
        raise ValueError(
            f"unknown codec {name!r} in spec {spec!r}; available: {', '.join(available)} "
            "(e.g. 'qsgd:bits=4,bucket_size=512', 'terngrad:clip=2.5', 'topk:ratio=0.01', "
            "'doublesqueeze:codec=onebit')"
        )
    if user is not None:
        knobs, options = split_options(user, kwargs, spec)
        return reference_cls(instantiate(user, knobs, spec), **options)  # type: ignore[misc]
    cls = known[name]
    if name == "doublesqueeze":
        inner_name = str(kwargs.pop("codec", "onebit"))
        inner_cls = known.get(inner_name)
        inner_user = _user_spec(inner_name, known, reference_cls)
        if (inner_cls is None and inner_user is None) or inner_cls is cls:
            choices = sorted(_user_names(known, reference_cls) - {name})
            raise ValueError(f"doublesqueeze needs codec=<one of {', '.join(choices)}>, got {inner_name!r}")
        if inner_user is not None:
            knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in knob_names(inner_user)}
            inner = reference_cls(instantiate(inner_user, knobs, spec))  # type: ignore[misc]
        else:
            inner_keys = accepted(inner_cls) - set(COMMON_OPTIONS)
            inner_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in inner_keys}
            inner = _build(inner_cls, inner_kwargs, spec)
        return _build(cls, dict(kwargs, codec=inner), spec)
    return _build(cls, kwargs, spec)


def _user_spec(name: str, known: Dict[str, type], reference_cls):
    """The registered spec class for a user's codec name the framework does not build itself, else
    None. A built-in name is never run through the reference backend: a framework that lacks one
    (TensorFlow has no ``lattice``) does not have it."""
    if name in known or name in builtin_names() or reference_cls is None:
        return None
    return lookup(name)


def _user_names(known: Dict[str, type], reference_cls) -> set:
    """The names a framework builds: its own classes and the registered user codecs."""
    if reference_cls is None:
        return set(known)
    return set(known) | (set(registry()) - builtin_names())


def _build(cls, kwargs, spec):
    ok = accepted(cls) | {"codec"}
    unknown = set(kwargs) - ok
    if unknown:
        raise ValueError(
            f"codec spec {spec!r}: {cls.__name__} does not take {sorted(unknown)}; "
            f"it takes {sorted(ok - {'codec'})}"
        )
    return cls(**kwargs)
