"""DoubleSqueeze (Tang et al., ICML 2019): worker- and server-side error feedback."""

from __future__ import annotations

from hvd_compress.common import DoubleSqueezeFormat
from hvd_compress.core.state import DoubleSqueezeState
from hvd_compress.torch.codecs.base import Codec, Wrapper
from hvd_compress.torch.codecs.error_feedback import ErrorFeedback
from hvd_compress.torch.finite import all_finite


class DoubleSqueeze(DoubleSqueezeFormat, Wrapper):
    """Two-sided error feedback around any codec, over the compressed reduce-scatter.

    Worker: ``v = g + e_w``; send ``C(v)``; ``e_w = v - C(v)`` (skipped when the codec already
    carries worker feedback, e.g. :class:`OneBit`). Owner of each 1/N chunk (the "server"):
    ``u = mean of received C(v_i) + e_s``; send ``C(u)``; ``e_s = u - C(u)``. Everyone applies
    ``C(u)``. This is also 1-bit SGD's aggregation and DeepSpeed's compressed allreduce.

    Always uses the reduce-scatter exchange (it is the point), whatever the world size.

    Example::

        compression = hvd_compress.torch.DoubleSqueeze(hvd_compress.torch.QSGD(bits=4))
    """

    State = DoubleSqueezeState

    def __init__(self, codec: Codec, **options):
        self.check_inner(codec, Codec)
        inner = codec if getattr(codec, "worker_feedback", False) else ErrorFeedback(codec)
        options.setdefault("exchange", "reduce_scatter")
        super().__init__(inner, **options)

    def worker_encode(self, x, key, bounds, draw, scale=None):
        # the full length, so an elastic reset can re-cut the server residual to new chunks
        self.state.numel[key] = x.numel()
        return self.inner.worker_encode(x, key, bounds, draw, scale)

    def server_encode(self, mean, key, draw, owner, scale=None):
        residuals = self.state.server_residual
        e = residuals.get(key)
        u = mean + e if e is not None and e.numel() == mean.numel() else mean.clone()
        payload = self.inner.encode(u, draw(owner, 1), scale)
        e = u.sub_(self.inner.decode(payload, u.numel()))
        if not all_finite(e):
            e.zero_()
        residuals[key] = e
        return payload
