"""hvd_compress: bit-packed gradient compression for Horovod and torch.distributed.

Framework-neutral (numpy only, imported on first use): :class:`CodecSpec`, :func:`register_codec`,
:func:`registry` and :func:`reference` define codecs once for every framework
(guide: ``docs/extending.md``).
"""

__version__ = "0.1.0"

from hvd_compress._lazy import lazy_attributes as _lazy_attributes

_LAZY = {
    "CodecSpec": "hvd_compress.core",
    "register_codec": "hvd_compress.core",
    "registry": "hvd_compress.core",
    "reference": "hvd_compress.core",
}
__all__ = list(_LAZY)

# hvd_compress.torch, .tensorflow, .bench, .ps, ... on attribute access (imported on first use).
__getattr__, __dir__ = _lazy_attributes(__name__, __path__, _LAZY, __all__)
