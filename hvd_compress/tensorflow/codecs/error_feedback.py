"""Error feedback (memory) in TensorFlow: the residual of every tensor in a ``tf.Variable``."""

from __future__ import annotations

import tensorflow as tf

from hvd_compress.common import ErrorFeedbackFormat
from hvd_compress.core.state import ErrorFeedbackState
from hvd_compress.tensorflow.codecs.base import Wrapper, numel_of


def finite_or_zero(r: tf.Tensor) -> tf.Tensor:
    """A non-finite residual is reset to zero, never carried into later steps."""
    return tf.where(tf.reduce_all(tf.math.is_finite(r)), r, tf.zeros_like(r))


class ErrorFeedback(ErrorFeedbackFormat, Wrapper):
    """Error feedback around any codec: ``p = g + e``; send ``C(p)``; keep ``e = p - C(p)``.

    The residual ``e`` of tensor ``key`` is the fp32 ``tf.Variable``
    ``state.residual[key]`` (variable name ``hvd_compress/residual/<key>``), created on the first
    step or by :meth:`build_state`. The identity ``C(p) + e_new == g + e_old`` holds up to the fp32
    rounding of one subtraction.
    """

    State = ErrorFeedbackState

    def build_state(self, key, numel, owner_numel=None):
        self.state_variable("residual", key, [numel])
        self.inner.build_state(key, numel, owner_numel)

    def worker_encode(self, x, key, bounds, draw, scale=None):
        n = numel_of(x)
        residual = self.state_variable("residual", key, [n])
        p = x + residual.read_value()
        payloads = self.inner.worker_encode(p, key, bounds, draw, scale)
        decoded = tf.concat([self.inner.decode(pl, b - a) for pl, (a, b) in zip(payloads, bounds)], 0)
        residual.assign(finite_or_zero(p - decoded))
        return payloads
