"""Every codec, one file per algorithm.

Each public ``Codec`` subclass defined in a module of this package is exported, found by importing
the modules (:mod:`hvd_compress._discover`): a new codec is one more file here."""

from hvd_compress._discover import codec_classes as _codec_classes
from hvd_compress.torch.codecs.base import Codec as _Codec

_CLASSES = _codec_classes(__name__, __path__, _Codec)
globals().update(_CLASSES)
__all__ = list(_CLASSES)
