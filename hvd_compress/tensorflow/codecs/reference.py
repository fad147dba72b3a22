"""The reference backend for TensorFlow: any registered :class:`hvd_compress.CodecSpec` as a TF codec.

The spec's numpy ``encode``/``decode`` run on the host through ``tf.numpy_function``, so they work
eagerly and inside ``tf.function`` (Horovod's ``DistributedGradientTape``, the Keras optimizers),
not under XLA (``jit_compile=True``).
"""

from __future__ import annotations

from typing import Set

import numpy as np
import tensorflow as tf

from hvd_compress.core import checks
from hvd_compress.core.spec import CodecSpec
from hvd_compress.tensorflow.codecs.base import Codec, numel_of


def numpy_rng(seed) -> np.random.Generator:
    """The numpy stream for one encode, from the exchange's stateless seed (``[stream, step]``,
    per seed, rank, tensor, chunk and phase), or fresh entropy when there is none."""
    if seed is None or np.size(seed) == 0:
        return np.random.default_rng()
    return np.random.default_rng([int(s) & 0xFFFFFFFFFFFFFFFF for s in np.asarray(seed).reshape(-1)])


class ReferenceCodec(Codec):
    """A TF codec whose wire format is ``spec``'s numpy reference (built by
    ``hvd_compress.tensorflow.from_spec("<registered name>")``); same knobs, spec string,
    fingerprint and payloads as the torch ``ReferenceCodec`` of the same spec.

    The first encode/decode of each size (when the graph is traced, or eagerly) runs the spec on
    zeros in Python, so a wrong size or dtype raises ``ValueError`` naming the codec and the
    expected size there; the same checks run inside every later call.
    """

    def __init__(self, spec: CodecSpec, **options):
        if not isinstance(spec, CodecSpec):
            raise TypeError(f"ReferenceCodec takes a hvd_compress.CodecSpec, got {spec!r}")
        options.setdefault("exchange", spec.pattern)
        super().__init__(**options)
        self.spec = spec
        self.name = spec.name  # type: ignore[misc]
        self.stochastic = spec.stochastic  # type: ignore[misc]
        self._probed: Set[int] = set()  # a set: tf tracking wraps dicts

    def params(self):
        return self.spec.knobs()

    def alignment(self):
        return self.spec.alignment()

    def payload_nbytes(self, numel):
        return checks.expected_nbytes(self.spec, numel)

    def _probe(self, numel: int) -> None:
        """Python-side first-call check, so a bad codec fails with a ValueError, not a TF op error."""
        if numel not in self._probed:
            payload = checks.encode(self.spec, np.zeros(numel, np.float32), np.random.default_rng(0))
            checks.decode(self.spec, payload, numel)
            self._probed.add(numel)

    def encode(self, x, seed=None, scale=None, noise=None):
        n = numel_of(x)
        self._probe(n)
        x = tf.reshape(tf.cast(x, tf.float32), [n])
        seed_t = tf.zeros([0], tf.int64) if seed is None else tf.cast(tf.reshape(seed, [-1]), tf.int64)
        has_noise = noise is not None
        noise_t = tf.reshape(tf.cast(noise, tf.float32), [n]) if has_noise else tf.zeros([0], tf.float32)

        def run(xv, seedv, noisev):
            return checks.encode(self.spec, xv, numpy_rng(seedv), noisev if has_noise else None)

        payload = tf.numpy_function(run, [x, seed_t, noise_t], tf.uint8, stateful=seed is None)
        payload.set_shape([self.payload_nbytes(n)])
        return payload

    def decode(self, payload, numel):
        self._probe(numel)
        out = tf.numpy_function(lambda p: checks.decode(self.spec, p, numel), [payload], tf.float32, stateful=False)
        out.set_shape([numel])
        return out
