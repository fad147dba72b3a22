"""hvd_compress: bit-packed gradient compression for Horovod and torch.distributed."""
__version__ = "0.1.0"

from hvd_compress._lazy import lazy_attributes as _lazy_attributes

# hvd_compress.torch, .tensorflow, .bench, .ps, ... on attribute access (imported on first use).
__getattr__, __dir__ = _lazy_attributes(__name__, __path__)
