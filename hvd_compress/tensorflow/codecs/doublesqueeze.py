"""DoubleSqueeze (Tang et al., ICML 2019) in TensorFlow: worker- and server-side error feedback."""

from __future__ import annotations

from hvd_compress.common import DoubleSqueezeFormat
from hvd_compress.core.state import DoubleSqueezeState
from hvd_compress.tensorflow.codecs.base import Codec, Wrapper, numel_of
from hvd_compress.tensorflow.codecs.error_feedback import ErrorFeedback, finite_or_zero


class DoubleSqueeze(DoubleSqueezeFormat, Wrapper):
    """Two-sided error feedback around any codec, over the compressed reduce-scatter.

    Worker: ``v = g + e_w``; send ``C(v)``; ``e_w = v - C(v)`` (the inner codec's feedback when it
    has one, e.g. :class:`OneBit`). Owner of each 1/N chunk: ``u = mean of received C(v_i) + e_s``;
    send ``C(u)``; ``e_s = u - C(u)``, the server residual a ``tf.Variable`` of the owner's chunk
    (``state.server_residual[key]``). Spec ``doublesqueeze:codec=onebit``.
    """

    State = DoubleSqueezeState

    def __init__(self, codec: Codec, **options):
        self.check_inner(codec, Codec)
        inner = codec if getattr(codec, "worker_feedback", False) else ErrorFeedback(codec)
        options.setdefault("exchange", "reduce_scatter")
        super().__init__(inner, **options)

    def build_state(self, key, numel, owner_numel=None):
        self.inner.build_state(key, numel, owner_numel)
        if owner_numel is not None:
            self.state_variable("server_residual", key, [owner_numel])

    def server_encode(self, mean, key, draw, owner, scale=None):
        n = numel_of(mean)
        e = self.state_variable("server_residual", key, [n])
        u = mean + e.read_value()
        payload = self.inner.encode(u, draw(owner, 1), scale)
        e.assign(finite_or_zero(u - self.inner.decode(payload, n)))
        return payload
