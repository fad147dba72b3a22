"""DoubleSqueeze (Tang et al., ICML 2019): worker- and server-side error feedback."""
from __future__ import annotations

from hvd_compress.torch.codecs.base import Codec, Wrapper
from hvd_compress.torch.codecs.error_feedback import ErrorFeedback


class DoubleSqueeze(Wrapper):
    """Two-sided error feedback around any codec, over the compressed reduce-scatter.

    Worker: ``v = g + e_w``; send ``C(v)``; ``e_w = v - C(v)`` (skipped when the codec already
    carries worker feedback, e.g. :class:`OneBit`). Owner of each 1/N chunk (the "server"):
    ``u = mean of received C(v_i) + e_s``; send ``C(u)``; ``e_s = u - C(u)``. Everyone applies
    ``C(u)``. This is also 1-bit SGD's aggregation and DeepSpeed's compressed allreduce.

    Always uses the reduce-scatter exchange (it is the point), whatever the world size.

    Example::

        compression = hvd_compress.torch.DoubleSqueeze(hvd_compress.torch.QSGD(bits=4))
    """

    name = "doublesqueeze"

    def __init__(self, codec: Codec, **options):
        if not isinstance(codec, Codec):
            raise TypeError(f"DoubleSqueeze wraps an hvd_compress codec, got {codec!r}")
        if codec.summable:
            raise ValueError(f"DoubleSqueeze needs a non-summable codec; {codec.name} already "
                             "rides a plain allreduce")
        inner = codec if getattr(codec, "worker_feedback", False) else ErrorFeedback(codec)
        options.setdefault("exchange", "reduce_scatter")
        super().__init__(inner, **options)

    def describe(self):
        return f"{self.name}({self.inner.describe()})"

    def pattern(self, world_size, numel):
        return "reduce_scatter" if numel >= world_size else "allgather"

    def server_encode(self, mean, key, draw, owner, scale=None):
        residuals = self.state.setdefault("server_residual", {})
        e = residuals.get(key)
        u = mean + e if e is not None and e.numel() == mean.numel() else mean.clone()
        payload = self.inner.encode(u, draw(owner, 1), scale)
        e = u.sub_(self.inner.decode(payload, u.numel()))
        if not e.isfinite().all():
            e.zero_()
        residuals[key] = e
        return payload
