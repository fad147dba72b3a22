"""QSGD (Alistarh et al., NeurIPS 2017) in TensorFlow: unbiased stochastic quantization per bucket."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hvd_compress.codecs import qsgd as _specs
from hvd_compress.common import SpecFormat, packed_nbytes
from hvd_compress.tensorflow.codecs.base import Codec, bucket_view, nan_where_nonfinite, numel_of, reduce_max_nan
from hvd_compress.tensorflow import native
from hvd_compress.tensorflow.packing import bytes_f32, f32_bytes, pack_bits, unpack_bits


class QSGD(SpecFormat, Codec):
    """QSGD with ``bits`` bits per value (sign included: ``s = 2**(bits-1) - 1`` levels a side) and
    one fp32 scale per bucket (max-abs, or the L2 norm with ``norm="l2"``), stochastic rounding.

    Same knobs, spec string and wire format as ``hvd_compress.torch.QSGD`` (see its docstring for
    the full description and how to tune): ``ceil(n * bits / 8)`` bytes of codes, then
    ``ceil(n / bucket_size)`` fp32 scales. 4 bits / bucket 512 costs 4.0625 bits per value.

    Example::

        import horovod.tensorflow as hvd, hvd_compress.tensorflow as hct
        tape = hvd.DistributedGradientTape(tape, compression=hct.QSGD(bits=4, bucket_size=512))
    """

    spec = _specs.QSGD

    def encode(self, x, seed=None, scale=None, noise=None):
        n = numel_of(x)
        if n == 0:
            return tf.zeros([0], tf.uint8)
        x = tf.reshape(tf.cast(x, tf.float32), [n])
        fast = self._native_encode(x, n, seed, noise)
        if fast is not None:
            return fast
        buckets, _ = bucket_view(x, n, self.bucket_size)
        mag = tf.abs(buckets)
        if self.norm == "max":
            scales = reduce_max_nan(mag, axis=1)
        else:
            scales = tf.sqrt(tf.reduce_sum(buckets * buckets, axis=1))
        scales = nan_where_nonfinite(scales)
        safe = tf.where(scales > 0, scales, tf.ones_like(scales))
        # as torch evaluates `levels / scales`: reciprocal, then times levels (two roundings; a
        # true division differs in the last bit for about a quarter of the scales)
        inv = tf.where(scales > 0, (1.0 / safe) * float(self.levels), tf.zeros_like(scales))
        y = tf.reshape(mag * inv[:, None], [-1])[:n]
        floor = tf.floor(y)
        u = self._noise(n, seed, noise)
        level = floor + tf.cast(u < (y - floor), tf.float32)
        level = tf.where(tf.math.is_nan(level), tf.zeros_like(level), level)
        level = tf.clip_by_value(level, 0.0, float(self.levels))
        signed = tf.where(x < 0, -level, level) + float(self.levels)
        codes = pack_bits(tf.cast(signed, tf.int32), self.bits)
        return tf.concat([codes, f32_bytes(scales)], 0)

    def _native_encode(self, x, n, seed, noise):
        """The fused kernel's payload (see :mod:`hvd_compress.tensorflow.native`), or ``None``."""
        lib = native.lib()
        u = native.noise_input(n, seed, noise)
        if lib is None or u is None or self.bits not in (2, 4, 8):
            return None
        bits, bucket, l2, size = self.bits, self.bucket_size, int(self.norm == "l2"), self.payload_nbytes(n)

        def run(xa, ua):
            xa, ua = native.f32_array(xa), native.uniforms(ua, u[1], n)
            out = native.empty(size, np.uint8)
            native.check(
                lib.hvdc_qsgd_encode(
                    xa.ctypes.data, n, bits, bucket, l2, 0, ua.ctypes.data, out.ctypes.data, native.threads()
                ),
                "qsgd",
            )
            return out

        return native.call(run, [x, u[0]], tf.uint8, size)

    def decode(self, payload, numel):
        if numel == 0:
            return tf.zeros([0], tf.float32)
        lib = native.lib()
        if lib is not None and self.bits in (2, 4, 8):
            bits, bucket = self.bits, self.bucket_size

            def run(pa):
                pa, out = np.ascontiguousarray(pa, np.uint8), native.empty(numel, np.float32)
                native.check(
                    lib.hvdc_qsgd_decode(
                        pa.ctypes.data, numel, bits, bucket, out.ctypes.data, 0, 1.0, native.threads()
                    ),
                    "qsgd",
                )
                return out

            return native.call(run, [payload], tf.float32, numel)
        ncode = packed_nbytes(numel, self.bits)
        codes = unpack_bits(payload[:ncode], self.bits, numel)
        scales = bytes_f32(payload[ncode:])
        step = tf.reshape(tf.repeat(scales / float(self.levels), self.bucket_size), [-1])[:numel]
        return (tf.cast(codes, tf.float32) - float(self.levels)) * step
