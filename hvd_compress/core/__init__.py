"""The framework-neutral codec core (numpy only): :class:`CodecSpec`, the registry, the checked
numpy calls every backend uses. Imports flow one way: ``core`` imports nothing from the frameworks."""

from hvd_compress.core.registry import builtin_names, reference, register_codec, registry, unregister_codec
from hvd_compress.core.spec import CodecSpec

__all__ = ["CodecSpec", "register_codec", "unregister_codec", "registry", "reference", "BUILTIN_NAMES"]


def __getattr__(attr):
    if attr == "BUILTIN_NAMES":  # the built-in codecs' names, found by importing hvd_compress.codecs
        return builtin_names()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
