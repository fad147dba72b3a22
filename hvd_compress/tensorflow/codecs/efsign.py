"""EF-SignSGD (Karimireddy et al., ICML 2019) in TensorFlow: scaled sign with error feedback."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hvd_compress.codecs import sign as _specs
from hvd_compress.common import SpecFormat, packed_nbytes
from hvd_compress.tensorflow.codecs.base import Codec, nan_where_nonfinite, numel_of
from hvd_compress.tensorflow.codecs.error_feedback import ErrorFeedback
from hvd_compress.tensorflow import native
from hvd_compress.tensorflow.packing import bytes_f32, f32_bytes, pack_bits, unpack_bits


def mean_abs(x: tf.Tensor, n: int) -> tf.Tensor:
    """``sum |x| / n`` (a sum then one division, as torch's CPU ``mean``)."""
    return tf.reshape(tf.reduce_sum(tf.abs(x)) / float(n), [1])


def sign_bits(x: tf.Tensor) -> tf.Tensor:
    return pack_bits(tf.cast(x >= 0, tf.int32), 1)


def unpack_signs(payload: tf.Tensor, numel: int) -> tf.Tensor:
    """+1 / -1 as fp32 from the first ``ceil(numel / 8)`` bytes."""
    nb = packed_nbytes(numel, 1)
    return tf.cast(unpack_bits(payload[:nb], 1, numel), tf.float32) * 2.0 - 1.0


class ScaledSign(SpecFormat, Codec):
    """``(||v||_1 / d) * sign(v)`` per chunk: 1 bit per value plus one fp32 scale (as in torch)."""

    spec = _specs.ScaledSign
    name = "scaled_sign"  # the spec's "efsign" is EFSign, with error feedback

    def encode(self, x, seed=None, scale=None, noise=None):
        n = numel_of(x)
        x = tf.reshape(tf.cast(x, tf.float32), [n])
        lib = native.lib()
        if lib is not None and n > 0:
            size = self.payload_nbytes(n)

            def run(xa):
                xa, out = native.f32_array(xa), native.empty(size, np.uint8)
                native.check(
                    lib.hvdc_sign_encode(xa.ctypes.data, None, None, n, out.ctypes.data, native.threads()),
                    "scaled_sign",
                )
                return out

            return native.call(run, [x], tf.uint8, size)
        s = nan_where_nonfinite(mean_abs(x, n)) if n else tf.zeros([1], tf.float32)
        return tf.concat([sign_bits(x), f32_bytes(s)], 0)

    def decode(self, payload, numel):
        lib = native.lib()
        if lib is not None and numel > 0:

            def run(pa):
                pa, out = np.ascontiguousarray(pa, np.uint8), native.empty(numel, np.float32)
                native.check(
                    lib.hvdc_sign_decode(pa.ctypes.data, numel, out.ctypes.data, 0, 1.0, native.threads()),
                    "scaled_sign",
                )
                return out

            return native.call(run, [payload], tf.float32, numel)
        nb = packed_nbytes(numel, 1)
        s = bytes_f32(payload[nb : nb + 4])
        return unpack_signs(payload, numel) * s


class EFSign(ErrorFeedback):
    """EF-SignSGD: :class:`ScaledSign` with error feedback on the gradient (the same update as the
    paper's feedback on ``lr * g`` for a constant learning rate). Spec string ``efsign``."""

    name = "efsign"

    def __init__(self, **options):
        super().__init__(ScaledSign(), **options)
