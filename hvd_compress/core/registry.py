"""One registry of codec specs: ``@hvd_compress.register_codec("name")``.

``from_spec`` in both frameworks, :func:`reference` and the conformance helper
(:mod:`hvd_compress.testing`) look names up here. A name that is not one of the built-in codecs
runs through the reference backend (the spec's numpy encode/decode on the host).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
from typing import Any, Callable, Dict, FrozenSet, Optional, Set, Tuple, Type, TypeVar, Union

from hvd_compress.common import COMMON_OPTIONS
from hvd_compress.core.spec import PATTERNS, CodecSpec
from hvd_compress.core.specstring import parse

# The built-in codecs' names are those their specs register with ``builtin=True`` (the modules of
# ``hvd_compress/codecs/``, imported on first need): the frameworks build them from their own
# classes (``hvd_compress/torch/codecs/``, ``hvd_compress/tensorflow/codecs/``), and a user codec
# may not take one. ``BUILTIN_NAMES`` (a module attribute, computed on access) is that set.
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SPECS: Dict[str, Type[CodecSpec]] = {}
_BUILTIN: Set[str] = set()
_BUILTINS_LOADED = False

S = TypeVar("S", bound=Type[CodecSpec])


def register_codec(name: str, *, builtin: bool = False) -> Callable[[S], S]:
    """Class decorator: register a :class:`CodecSpec` subclass under ``name`` (lower case, letters,
    digits, ``_``), which spec strings then use: ``hvd_compress.torch.from_spec("name:knob=1")``.

    Raises ``ValueError`` for a name already registered by another class or taken by a built-in
    codec, and ``TypeError`` for a class that is not a frozen dataclass subclass of ``CodecSpec``.
    Registering the same class again (same module and qualified name, e.g. a re-run notebook cell)
    replaces the earlier definition.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"codec name must match {_NAME.pattern} (spec strings are lower-cased), got {name!r}")
    if not builtin and name in builtin_names():
        raise ValueError(f"codec name {name!r} is a built-in codec; pick another name")

    def register(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, CodecSpec)):
            raise TypeError(f"register_codec({name!r}) decorates a CodecSpec subclass, got {cls!r}")
        if "__dataclass_fields__" not in cls.__dict__ or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(
                f"register_codec({name!r}): {cls.__qualname__} must be a frozen dataclass; "
                "put @dataclasses.dataclass(frozen=True) under @register_codec"
            )
        if cls.pattern not in PATTERNS:
            raise ValueError(f"{cls.__qualname__}.pattern must be one of {PATTERNS}, got {cls.pattern!r}")
        old = _SPECS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"codec name {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        cls.name = name
        _SPECS[name] = cls
        if builtin:
            _BUILTIN.add(name)
        return cls

    return register


def unregister_codec(name: str) -> None:
    """Remove a registered codec (tests register throwaway codecs)."""
    _SPECS.pop(name, None)


def _load_builtins() -> None:
    """Import the built-in specs (``hvd_compress.codecs``, numpy only) once, where they exist."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        if importlib.util.find_spec("hvd_compress.codecs") is not None:
            importlib.import_module("hvd_compress.codecs")


def builtin_names() -> FrozenSet[str]:
    """The built-in codecs' names: those registered with ``builtin=True`` by ``hvd_compress.codecs``
    (imported here if it was not yet)."""
    _load_builtins()
    return frozenset(_BUILTIN)


def every_builtin_codec(preferred: "list[str]", skip: Dict[str, str]) -> "list[str]":
    """The spec strings a demo or benchmark runs: ``preferred`` (chosen settings, in order), then
    the bare name of every other built-in codec, except those in ``skip`` (name -> why not). So a
    new built-in codec joins every such list without an edit, and leaving one out is written down.
    """
    unknown = sorted(({s.split(":")[0] for s in preferred} | set(skip)) - builtin_names())
    if unknown:
        raise ValueError(f"not built-in codecs: {unknown}")
    covered = {s.split(":")[0] for s in preferred} | set(skip)
    return list(preferred) + [name for name in sorted(builtin_names()) if name not in covered]


def __getattr__(attr: str) -> Any:
    if attr == "BUILTIN_NAMES":  # computed: importing this module does not import the built-in specs
        return builtin_names()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def registry() -> Dict[str, Type[CodecSpec]]:
    """Every registered codec: name -> spec class (built-in specs and the user's)."""
    _load_builtins()
    return dict(sorted(_SPECS.items()))


def lookup(name: str) -> Optional[Type[CodecSpec]]:
    """The spec class registered as ``name``, or ``None``."""
    _load_builtins()
    return _SPECS.get(name)


def knob_names(cls: Type[CodecSpec]) -> Tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def split_options(
    cls: Type[CodecSpec], kwargs: Dict[str, Any], spec: str, options: Tuple[str, ...] = COMMON_OPTIONS
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(knobs, common options)`` of a spec string's ``kwargs`` for ``cls``; ``ValueError``
    listing what the codec takes for any other key."""
    knobs = knob_names(cls)
    unknown = sorted(set(kwargs) - set(knobs) - set(options))
    if unknown:
        raise ValueError(
            f"codec spec {spec!r}: {cls.name} does not take {unknown}; its knobs are "
            f"{list(knobs) or 'none'} (and the common options {list(options)})"
        )
    return ({k: v for k, v in kwargs.items() if k in knobs}, {k: v for k, v in kwargs.items() if k not in knobs})


def instantiate(cls: Type[CodecSpec], knobs: Dict[str, Any], spec: str) -> CodecSpec:
    """``cls(**knobs)``; a missing required knob is a ``ValueError`` naming the knobs."""
    try:
        return cls(**knobs)
    except TypeError as exc:
        raise ValueError(f"codec spec {spec!r}: {exc}; {cls.name}'s knobs are {list(knob_names(cls))}") from exc


def reference(spec: Union[str, CodecSpec]) -> CodecSpec:
    """The numpy codec of a spec string: ``hvd_compress.reference("mycodec:bucket_size=128")``.

    Its ``encode(x, rng)`` / ``decode(payload, numel)`` are the wire format's definition. Common
    options (``min_numel``, ``seed``, ...) are accepted and ignored: they configure the framework
    codecs, not the format. Unknown names and knobs raise ``ValueError`` listing what exists.
    """
    if isinstance(spec, CodecSpec):
        return spec
    name, kwargs = parse(spec)
    cls = lookup(name)
    if cls is None:
        raise ValueError(
            f"no codec spec registered as {name!r} (spec {spec!r}); registered: "
            f"{', '.join(registry()) or 'none'}. Register one with @hvd_compress.register_codec"
        )
    if name == "doublesqueeze":  # a wrapper: the keys after codec= that the inner codec takes are its own
        inner_name = str(kwargs.pop("codec", "onebit"))
        inner_cls = lookup(inner_name)
        if inner_cls is None:
            raise ValueError(f"doublesqueeze needs codec=<one of {', '.join(registry())}>, got {inner_name!r}")
        inner_keys = set(knob_names(inner_cls))
        inner = instantiate(inner_cls, {k: kwargs.pop(k) for k in list(kwargs) if k in inner_keys}, spec)
        knobs, _ = split_options(cls, kwargs, spec)
        return instantiate(cls, dict(knobs, codec=inner), spec)
    knobs, _ = split_options(cls, kwargs, spec)
    return instantiate(cls, knobs, spec)
