"""hvd_compress for TensorFlow and Keras: the torch codecs' math and wire format, in TF ops.

Pass a codec where you would pass Horovod's ``hvd.Compression.fp16``::

    import horovod.tensorflow as hvd
    import hvd_compress.tensorflow as hct

    hvd.init()
    tape = hvd.DistributedGradientTape(tape, compression=hct.QSGD(bits=4, bucket_size=512))

(or to ``horovod.tensorflow.keras.DistributedOptimizer`` with tf-keras), or use
``hvd_compress.tensorflow.frontends.keras.DistributedOptimizer``, which also works with Keras 3.
:func:`wire_stats` returns the bytes each codec put on the wire (the same keys as torch's).
Guide: ``docs/tensorflow.md``.
"""

from hvd_compress._lazy import lazy_attributes as _lazy_attributes
from hvd_compress.tensorflow import codecs as _codecs
from hvd_compress.tensorflow.codecs.base import install_stock_engine as _install_stock_engine
from hvd_compress.tensorflow.spec import from_spec
from hvd_compress.tensorflow.stats import compression_error, reset_wire_stats, wire_stats


def _stock_engine(codec):
    """The engine behind ``codec.compress`` / ``decompress`` when Horovod's stock TF APIs
    (``hvd.DistributedGradientTape(compression=codec)``, ...) call them. A frontend: installed here,
    not imported by the codec layer, and imported on first use (it imports Horovod)."""
    from hvd_compress.tensorflow.frontends.stock import StockEngine

    return StockEngine(codec)


_install_stock_engine(_stock_engine)

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
    "Exchange",
    "GradientReducer",
    "allreduce_gradients",
    "broadcast_variables",
]

# Imported on first use: Horovod only when asked for, and every submodule (hct.keras, hct.exchange,
# ...) on attribute access.
_LAZY = {
    "Exchange": "hvd_compress.tensorflow.exchange",
    "allreduce_gradients": "hvd_compress.tensorflow.frontends.reduce",
    "GradientReducer": "hvd_compress.tensorflow.frontends.reduce",
    "broadcast_variables": "hvd_compress.tensorflow.frontends.broadcast",
}
__getattr__, __dir__ = _lazy_attributes(__name__, __path__, _LAZY, __all__)
