"""Build TensorFlow codecs from the same spec strings as torch (:mod:`hvd_compress.spec`)."""

from __future__ import annotations

from typing import Dict

from hvd_compress.tensorflow.codecs.base import Codec
from hvd_compress.tensorflow.codecs.catalog import codec_classes, from_spec_with


def registry() -> Dict[str, type]:
    return codec_classes()


def from_spec(spec: "str | Codec") -> Codec:
    """Build a codec from a string: ``name`` or ``name:key=value,key=value``, exactly as
    ``hvd_compress.torch.from_spec`` does (``"qsgd:bits=4,bucket_size=512"``, ``"onebit"``,
    ``"terngrad:clip=2.5"``, ``"topk:ratio=0.01"``, ``"doublesqueeze:codec=onebit"``, ``"fp16"``,
    ``"gradiveq:warmup_steps=20,sample_steps=10,compress_steps=60"``, ``"powersgd:rank=2,start_iter=10"``).
    A bad spec raises ``ValueError`` listing what exists. A name registered with
    :func:`hvd_compress.register_codec` builds a
    :class:`hvd_compress.tensorflow.codecs.reference.ReferenceCodec` (alone or as ``codec=``)."""
    return from_spec_with(spec)
