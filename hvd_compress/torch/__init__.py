"""hvd_compress for PyTorch: bit-packed gradient codecs for Horovod.

Pass a codec where you would pass Horovod's ``hvd.Compression.fp16``::

    import horovod.torch as hvd
    import hvd_compress.torch as hc

    hvd.init()
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                   compression=hc.QSGD(bits=4, bucket_size=512))

or use :class:`DistributedOptimizer` (bucketed small tensors, codec state in ``state_dict()``),
and read :func:`wire_stats` for the bytes each codec put on the wire.
"""
from hvd_compress.torch.codecs import (BF16, FP16, QSGD, Codec, DoubleSqueeze, EFSign, ErrorFeedback,
                                       Lattice, NoCompression, OneBit, OneBitQuantizer, ScaledSign, SignSGD,
                                       TernGrad, TopK, TopKSparsifier, Wrapper)
from hvd_compress.torch.exchange import reset_wire_stats, wire_stats
from hvd_compress.torch.spec import from_spec

__all__ = ["Codec", "Wrapper", "NoCompression", "FP16", "BF16", "QSGD", "TernGrad", "OneBit",
           "OneBitQuantizer", "EFSign", "ScaledSign", "SignSGD", "TopK", "TopKSparsifier",
           "ErrorFeedback", "DoubleSqueeze", "Lattice", "from_spec", "wire_stats", "reset_wire_stats",
           "DistributedOptimizer", "SwarmSGD", "random_matching"]


def __getattr__(name):
    if name == "DistributedOptimizer":  # imports Horovod only when asked for
        from hvd_compress.torch.optimizer import DistributedOptimizer
        return DistributedOptimizer
    if name in ("SwarmSGD", "random_matching"):  # no Horovod import until a SwarmSGD is built
        from hvd_compress.torch import swarm
        return getattr(swarm, name)
    raise AttributeError(name)
