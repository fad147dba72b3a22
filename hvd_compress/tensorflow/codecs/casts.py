"""Lossless and cast codecs: NoCompression, FP16 (summable), BF16 (TensorFlow)."""

from __future__ import annotations

import tensorflow as tf

from hvd_compress.codecs import casts as _specs
from hvd_compress.common import SpecFormat
from hvd_compress.tensorflow.codecs.base import Codec
from hvd_compress.tensorflow.packing import bytes_f32, bytes_half, f32_bytes, half_bytes


class NoCompression(SpecFormat, Codec):
    """fp32 as is, through a plain allreduce; the baseline every codec is compared against."""

    spec = _specs.NoCompression
    summable = True

    def to_summable(self, x):
        return x

    def from_summable(self, t):
        return t

    def encode(self, x, seed=None, scale=None, noise=None):
        return f32_bytes(x)

    def decode(self, payload, numel):
        return tf.reshape(bytes_f32(payload), [numel])


class FP16(SpecFormat, Codec):
    """fp16 cast, summed by the allreduce itself (Horovod's ``Compression.fp16`` with our stats and
    non-finite policy). Values above 65504 overflow to inf, as with Horovod's."""

    spec = _specs.FP16
    summable = True

    def to_summable(self, x):
        return tf.cast(x, tf.float16)

    def from_summable(self, t):
        return tf.cast(t, tf.float32)

    def encode(self, x, seed=None, scale=None, noise=None):
        return half_bytes(x, tf.float16)

    def decode(self, payload, numel):
        return tf.reshape(tf.cast(bytes_half(payload, tf.float16), tf.float32), [numel])


class BF16(SpecFormat, Codec):
    """bfloat16 cast (round to nearest even): fp32's range, 8 bits of mantissa. Payloads travel as
    bytes through allgather or reduce-scatter and are summed in fp32, as in torch."""

    spec = _specs.BF16

    def encode(self, x, seed=None, scale=None, noise=None):
        return half_bytes(x, tf.bfloat16)

    def decode(self, payload, numel):
        return tf.reshape(tf.cast(bytes_half(payload, tf.bfloat16), tf.float32), [numel])
