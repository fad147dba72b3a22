"""hvd_compress for PyTorch: bit-packed gradient codecs for Horovod and torch.distributed.

Pass a codec where you would pass Horovod's ``hvd.Compression.fp16``::

    import horovod.torch as hvd
    import hvd_compress.torch as hc

    hvd.init()
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                   compression=hc.QSGD(bits=4, bucket_size=512))

or use :class:`DistributedOptimizer` (bucketed small tensors, codec state in ``state_dict()``),
and read :func:`wire_stats` for the bytes each codec put on the wire. Broadcast initial weights at
8 bits instead of 32 with :func:`broadcast_parameters` (every rank, the root included, ends with
the same quantized values).

The same codecs serve torch.distributed's ``DistributedDataParallel`` (and Ray Train's
``TorchTrainer``) through a communication hook::

    state, hook = hc.ddp_comm_hook(hc.QSGD(bits=4), named_parameters=ddp_model.named_parameters())
    ddp_model.register_comm_hook(state, hook)
"""

from hvd_compress._lazy import lazy_attributes as _lazy_attributes
from hvd_compress.torch import codecs as _codecs
from hvd_compress.torch.codecs.base import install_stock_engine as _install_stock_engine
from hvd_compress.torch.stats import compression_error, reset_wire_stats, track_compression_error, wire_stats
from hvd_compress.torch.spec import from_spec


def _stock_engine(codec):
    """The engine behind ``codec.compress`` / ``decompress`` when Horovod's stock
    ``hvd.DistributedOptimizer(compression=codec)`` calls them. A frontend: installed here, not
    imported by the codec layer, and imported on first use (like the frontends in ``_LAZY``)."""
    from hvd_compress.torch.frontends.stock import StockEngine

    return StockEngine(codec)


_install_stock_engine(_stock_engine)

# Imported on first use, so importing hvd_compress.torch needs neither Horovod nor an initialized
# torch.distributed.
_LAZY = {
    "DistributedOptimizer": "hvd_compress.torch.frontends.optimizer",
    "broadcast_parameters": "hvd_compress.torch.frontends.broadcast",
    "BroadcastState": "hvd_compress.torch.frontends.broadcast",
    "ddp_comm_hook": "hvd_compress.torch.frontends.ddp",
    "DDPHookState": "hvd_compress.torch.frontends.ddp",
    "TorchDistCollectives": "hvd_compress.torch.dist",
    "SwarmSGD": "hvd_compress.torch.frontends.swarm",
    "random_matching": "hvd_compress.torch.frontends.swarm",
    "collective_stats": "hvd_compress.torch.fusion",
    "reset_collective_stats": "hvd_compress.torch.fusion",
}

# Every codec class of the codecs package (one file per codec, found by importing them) but
# ReferenceCodec, the reference backend behind user-registered codecs.
_CODECS = [name for name in _codecs.__all__ if name != "ReferenceCodec"]
globals().update({name: getattr(_codecs, name) for name in _CODECS})

__all__ = [
    *_CODECS,
    "from_spec",
    "wire_stats",
    "reset_wire_stats",
    "compression_error",
    "track_compression_error",
    *_LAZY,
]


# Also every submodule (hc.ddp, hc.codecs, hc.swarm, ...) on attribute access.
__getattr__, __dir__ = _lazy_attributes(__name__, __path__, _LAZY, __all__)
