"""signSGD with majority vote (Bernstein et al., 2018/2019) in TensorFlow."""

from __future__ import annotations

import tensorflow as tf

from hvd_compress.codecs import sign as _specs
from hvd_compress.common import SpecFormat, packed_nbytes
from hvd_compress.tensorflow.codecs.base import Codec, nan_where_nonfinite, numel_of
from hvd_compress.tensorflow.codecs.efsign import mean_abs, sign_bits, unpack_signs
from hvd_compress.tensorflow.packing import bytes_f32, f32_bytes


class SignSGD(SpecFormat, Codec):
    """signSGD with majority vote: each worker sends ``sign(g)``; the result is the sign of the sum
    of the workers' signs, times the workers' mean ``|g|`` when ``scaled=True`` (the default; one
    fp32 per chunk on the wire), else the bare ``+-1`` vote. Ties go to the sign of the
    scale-weighted sum, then to +1. Same wire format and spec string as the torch codec."""

    spec = _specs.SignSGD

    def encode(self, x, seed=None, scale=None, noise=None):
        n = numel_of(x)
        x = tf.reshape(tf.cast(x, tf.float32), [n])
        if self.scaled:
            s = mean_abs(x, n) if n else tf.zeros([1], tf.float32)
        else:  # a bare vote, but an all-zero chunk stays exactly zero (as in torch)
            s = tf.cast(tf.reduce_any(tf.not_equal(x, 0.0)), tf.float32)[None] if n else tf.zeros([1], tf.float32)
        if n:
            s = tf.where(tf.reduce_all(tf.math.is_finite(x)), s, tf.fill([1], float("nan")))
        return tf.concat([sign_bits(x), f32_bytes(nan_where_nonfinite(s))], 0)

    def _signs_and_scale(self, payload, numel):
        nb = packed_nbytes(numel, 1)
        return unpack_signs(payload, numel), bytes_f32(payload[nb : nb + 4])

    def decode(self, payload, numel):
        signs, s = self._signs_and_scale(payload, numel)
        return signs * s

    def aggregate(self, payloads, numel):
        votes = tf.zeros([numel], tf.float32)
        weighted = tf.zeros([numel], tf.float32)
        scale = tf.zeros([1], tf.float32)
        for p in payloads:
            signs, s = self._signs_and_scale(p, numel)
            votes = votes + signs
            weighted = weighted + signs * s
            scale = scale + s
        direction = tf.sign(votes)
        direction = tf.where(direction == 0, tf.where(weighted < 0, -1.0, 1.0), direction)
        return direction * (scale / float(len(payloads)))
