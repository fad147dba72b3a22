"""Spec name -> torch codec class, and building a codec from a spec string with it.

:func:`hvd_compress.torch.from_spec` is :func:`from_spec_with`. The table lives here, in the codec
layer, because GradiVeQ builds its ``fallback`` and ``sampler`` codecs from spec strings too. It is
not written out: on first use, every module of this package is imported and each ``Codec``
subclass whose ``name`` is a built-in codec's registered name is the class for that name
(:mod:`hvd_compress._discover`). A new codec is its own file here, nothing else. The modules are
imported when a spec is first built, not when this module is imported, so GradiVeQ's module can
import this one.
"""

from __future__ import annotations

import functools
import os
from typing import Dict

from hvd_compress._discover import codec_classes as _discover
from hvd_compress._discover import named_codecs
from hvd_compress.core.registry import builtin_names
from hvd_compress.spec import build
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.codecs.reference import ReferenceCodec


@functools.lru_cache(maxsize=None)
def _named() -> Dict[str, type]:
    classes = _discover(__package__ or "hvd_compress.torch.codecs", [os.path.dirname(__file__)], Codec)
    return named_codecs(classes.values(), builtin_names())


def codec_classes() -> Dict[str, type]:
    """Every spec name this framework builds, and its class."""
    return dict(_named())


def from_spec_with(spec: "str | Codec") -> Codec:
    """``hvd_compress.torch.from_spec(spec)`` (see there)."""
    return build(spec, _named(), Codec, ReferenceCodec)
