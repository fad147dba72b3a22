"""TernGrad (Wen et al., NeurIPS 2017) in TensorFlow: ternary gradients, scale shared across workers."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hvd_compress.codecs import terngrad as _specs
from hvd_compress.common import SpecFormat
from hvd_compress.tensorflow.codecs.base import Codec, nan_where_nonfinite, numel_of, reduce_max_nan
from hvd_compress.tensorflow import native
from hvd_compress.tensorflow.packing import bytes_f32, f32_bytes, pack_base3, pack_bits, unpack_base3, unpack_bits


class TernGrad(SpecFormat, Codec):
    """TernGrad: each value becomes ``s * sign(g) * Bernoulli(|g| / s)``, unbiased for ``|g| <= s``.

    Each worker proposes ``s = min(max|g|, clip * std(g))``; the exchange takes the max over
    workers (one one-value allreduce) and every worker encodes with that shared ``s``. Same knobs,
    spec string and wire format as ``hvd_compress.torch.TernGrad``: ternary codes five per byte
    (``packing="base3"``, 1.6 bits per value) or four per byte (``"2bit"``), then the fp32 ``s``.

    The proposal uses the sample standard deviation (Bessel-corrected, like ``torch.std``); its last
    bits may differ from torch's, which only matters before the max-allreduce agrees on one ``s``.
    """

    spec = _specs.TernGrad
    shared_scale = True  # local_scale() proposes, the exchange agrees on the max

    def local_scale(self, x):
        n = numel_of(x)
        if n == 0:
            return tf.zeros([1], tf.float32)
        x = tf.reshape(tf.cast(x, tf.float32), [n])
        lib = native.lib()
        if lib is not None:
            # one pass in the kernel (the std summed in double: last bits may differ from the TF
            # ops' fp32 sum, which only matters before the max-allreduce agrees on one scale)
            clip = float(self.clip or 0.0)

            def run(xa):
                xa = native.f32_array(xa)
                return np.array([lib.hvdc_terngrad_scale(xa.ctypes.data, n, clip, native.threads())], np.float32)

            return native.call(run, [x], tf.float32, 1)
        s = reduce_max_nan(tf.abs(x))
        if self.clip is not None and n > 1:
            mean = tf.reduce_sum(x) / float(n)
            std = tf.sqrt(tf.reduce_sum(tf.square(x - mean)) / float(n - 1))
            s = tf.where(tf.math.is_nan(std) | tf.math.is_nan(s), float("nan"), tf.minimum(s, self.clip * std))
        return nan_where_nonfinite(tf.reshape(s, [1]))

    def encode(self, x, seed=None, scale=None, noise=None):
        n = numel_of(x)
        x = tf.reshape(tf.cast(x, tf.float32), [n])
        s = self.local_scale(x) if scale is None else tf.reshape(tf.cast(scale, tf.float32), [1])
        if n == 0:
            return f32_bytes(s)
        fast = self._native_encode(x, n, s, seed, noise)
        if fast is not None:
            return fast
        sv = s[0]
        valid = (sv > 0) & tf.math.is_finite(sv)
        prob = tf.minimum(tf.abs(x) / tf.where(valid, sv, 1.0), 1.0)
        hit = (self._noise(n, seed, noise) < prob) & valid & ~tf.math.is_nan(x)
        codes = tf.where(hit, tf.where(x < 0, 0, 2), 1)
        s = tf.where(tf.reduce_all(tf.math.is_finite(x)), s, tf.fill([1], float("nan")))
        packed = pack_base3(codes) if self.packing == "base3" else pack_bits(codes, 2)
        return tf.concat([packed, f32_bytes(s)], 0)

    def _native_encode(self, x, n, s, seed, noise):
        """The fused kernel's payload (see :mod:`hvd_compress.tensorflow.native`), or ``None``."""
        lib = native.lib()
        u = native.noise_input(n, seed, noise)
        if lib is None or u is None:
            return None
        base3, size = int(self.packing == "base3"), self._code_nbytes(n) + 4

        def run(xa, sa, ua):
            xa, ua = native.f32_array(xa), native.uniforms(ua, u[1], n)
            scale_bits = int(native.f32_array(sa).view(np.uint32)[0])
            out = native.empty(size, np.uint8)
            native.check(
                lib.hvdc_terngrad_encode(
                    xa.ctypes.data, n, scale_bits, base3, 0, ua.ctypes.data, out.ctypes.data, native.threads()
                ),
                "terngrad",
            )
            return out

        return native.call(run, [x, s, u[0]], tf.uint8, size)

    def decode(self, payload, numel):
        nc = self._code_nbytes(numel)
        lib = native.lib()
        if lib is not None and numel > 0:
            base3 = int(self.packing == "base3")

            def run(pa):
                pa, out = np.ascontiguousarray(pa, np.uint8), native.empty(numel, np.float32)
                native.check(
                    lib.hvdc_terngrad_decode(pa.ctypes.data, numel, base3, out.ctypes.data, 0, 1.0, native.threads()),
                    "terngrad",
                )
                return out

            return native.call(run, [payload], tf.float32, numel)
        s = bytes_f32(payload[nc : nc + 4])
        if numel == 0:
            return tf.zeros([0], tf.float32)
        codes = unpack_base3(payload[:nc], numel) if self.packing == "base3" else unpack_bits(payload[:nc], 2, numel)
        return (tf.cast(codes, tf.float32) - 1.0) * s
