"""1-bit SGD with error feedback (Seide et al., Interspeech 2014) in TensorFlow."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hvd_compress.codecs import onebit as _specs
from hvd_compress.common import SpecFormat, packed_nbytes
from hvd_compress.tensorflow.codecs.base import Codec, bucket_view, nan_where_nonfinite, numel_of
from hvd_compress.tensorflow.codecs.error_feedback import ErrorFeedback
from hvd_compress.tensorflow import native
from hvd_compress.tensorflow.packing import bytes_f32, f32_bytes, pack_bits, unpack_bits


class OneBitQuantizer(SpecFormat, Codec):
    """The 1-bit quantizer alone (no error feedback): per bucket, the sign at threshold 0 and the
    means of the bucket's non-negative and of its negative entries. Wire format as in torch:
    ``ceil(n / 8)`` bytes of bits (1: non-negative), then per bucket the fp32 pair."""

    spec = _specs.OneBit
    name = "onebit_quantizer"  # the spec's "onebit" is OneBit, with error feedback

    def encode(self, x, seed=None, scale=None, noise=None):
        n = numel_of(x)
        if n == 0:
            return tf.zeros([0], tf.uint8)
        x = tf.reshape(tf.cast(x, tf.float32), [n])
        lib = native.lib()
        if lib is not None:
            bucket, size = self.bucket_size, self.payload_nbytes(n)

            def run(xa):
                xa, out = native.f32_array(xa), native.empty(size, np.uint8)
                native.check(
                    lib.hvdc_onebit_encode(xa.ctypes.data, None, None, n, bucket, out.ctypes.data, native.threads()),
                    "onebit",
                )
                return out

            return native.call(run, [x], tf.uint8, size)
        buckets, pad = bucket_view(x, n, self.bucket_size)
        positive = buckets >= 0
        nb = -(-n // self.bucket_size)
        # padding zeros count as non-negative; take them back out of the last bucket
        pad_fix = tf.constant([0.0] * (nb - 1) + [float(pad)], tf.float32)
        pos_count = tf.reduce_sum(tf.cast(positive, tf.float32), axis=1) - pad_fix
        neg_count = float(self.bucket_size) - pos_count - pad_fix
        pos_sum = tf.reduce_sum(tf.where(positive, buckets, tf.zeros_like(buckets)), axis=1)
        neg_sum = tf.reduce_sum(buckets, axis=1) - pos_sum
        pos_mean = tf.where(pos_count > 0, pos_sum / tf.maximum(pos_count, 1.0), tf.zeros_like(pos_sum))
        neg_mean = tf.where(neg_count > 0, neg_sum / tf.maximum(neg_count, 1.0), tf.zeros_like(neg_sum))
        means = nan_where_nonfinite(tf.reshape(tf.stack([pos_mean, neg_mean], axis=1), [-1]))
        bits = pack_bits(tf.cast(x >= 0, tf.int32), 1)
        return tf.concat([bits, f32_bytes(means)], 0)

    def decode(self, payload, numel):
        if numel == 0:
            return tf.zeros([0], tf.float32)
        lib = native.lib()
        if lib is not None:
            bucket = self.bucket_size

            def run(pa):
                pa, out = np.ascontiguousarray(pa, np.uint8), native.empty(numel, np.float32)
                native.check(
                    lib.hvdc_onebit_decode(pa.ctypes.data, numel, bucket, out.ctypes.data, 0, 1.0, native.threads()),
                    "onebit",
                )
                return out

            return native.call(run, [payload], tf.float32, numel)
        nb = packed_nbytes(numel, 1)
        positive = unpack_bits(payload[:nb], 1, numel) > 0
        means = tf.reshape(bytes_f32(payload[nb:]), [-1, 2])
        pos = tf.repeat(means[:, 0], self.bucket_size)[:numel]
        neg = tf.repeat(means[:, 1], self.bucket_size)[:numel]
        return tf.where(positive, pos, neg)


class OneBit(ErrorFeedback):
    """1-bit SGD: :class:`OneBitQuantizer` with error feedback (training diverges without it).

    ``p = g + e``; send ``C(p)``; ``e = p - C(p)``, the residual a ``tf.Variable`` per tensor.
    Same knobs and spec string as ``hvd_compress.torch.OneBit`` (``onebit:bucket_size=1024``).

    Example::

        opt = hvd_compress.tensorflow.frontends.keras.DistributedOptimizer(keras.optimizers.SGD(0.05),
                                                                 compression="onebit")
    """

    name = "onebit"

    def __init__(self, bucket_size: int = 1024, **options):
        super().__init__(OneBitQuantizer(bucket_size), **options)
