"""Build torch codecs from spec strings: ``"qsgd:bits=4,bucket_size=512"``, ``"doublesqueeze:codec=onebit"``.

The parsing is framework-neutral (:mod:`hvd_compress.spec`, shared with ``hvd_compress.tensorflow``).
"""

from __future__ import annotations

from typing import Dict

from hvd_compress.common import COMMON_OPTIONS  # noqa: F401 (re-exported)
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.codecs.catalog import codec_classes, from_spec_with


def registry() -> Dict[str, type]:
    return codec_classes()


def from_spec(spec: "str | Codec") -> Codec:
    """Build a codec from a string: ``name`` or ``name:key=value,key=value``.

    >>> from_spec("qsgd:bits=4,bucket_size=512")
    qsgd(bits=4,bucket_size=512,norm=max)
    >>> from_spec("doublesqueeze:codec=onebit")
    doublesqueeze(onebit(bucket_size=1024))

    For ``doublesqueeze`` the keys after ``codec=`` that the inner codec accepts go to it:
    ``doublesqueeze:codec=qsgd,bits=4``. Common options (``min_numel``, ``compress_1d``,
    ``exchange``, ``nonfinite``, ``seed``) go to the outer codec. A bad spec raises ``ValueError``
    listing what exists.

    A name registered with :func:`hvd_compress.register_codec` (a user's :class:`hvd_compress.CodecSpec`)
    builds a :class:`hvd_compress.torch.codecs.reference.ReferenceCodec`, alone or as
    ``doublesqueeze:codec=<name>``.
    """
    return from_spec_with(spec)
