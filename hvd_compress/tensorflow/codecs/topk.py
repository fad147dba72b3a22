"""Top-k sparsification with error feedback (Aji & Heafield 2017; Stich et al. 2018) in TensorFlow."""

from __future__ import annotations

import tensorflow as tf

from hvd_compress.codecs import topk as _specs
from hvd_compress.common import SpecFormat
from hvd_compress.tensorflow.codecs.base import Codec, numel_of
from hvd_compress.tensorflow.codecs.error_feedback import ErrorFeedback
from hvd_compress.tensorflow.packing import bytes_f32, bytes_i32, f32_bytes, i32_bytes

_FLT_MAX = 3.4028234663852886e38


class TopKSparsifier(SpecFormat, Codec):
    """Keep the ``k = ceil(ratio * n)`` largest-magnitude values of each chunk: ``k`` int32 indices
    (ascending; ties at the k-th magnitude to the lower indices), then their ``k`` fp32 values,
    as in torch. Sparse: the ``auto`` exchange is allgather + local sum."""

    spec = _specs.TopK
    name = "topk_sparsifier"  # the spec's "topk" is TopK, with error feedback

    def select(self, x: tf.Tensor, n: int, k: int) -> tf.Tensor:
        """The canonical index set (int32, ascending) of :class:`hvd_compress.codecs.TopK`."""
        mag = tf.abs(x)
        mag = tf.where(tf.math.is_inf(mag), _FLT_MAX, mag)  # torch.nan_to_num: +inf -> max
        mag = tf.where(tf.math.is_nan(mag), float("inf"), mag)  # NaN counts as the largest
        kth = tf.reduce_min(tf.math.top_k(mag, k, sorted=False).values)
        above = mag > kth
        ties = mag == kth
        need = k - tf.reduce_sum(tf.cast(above, tf.int32))
        ties = ties & (tf.cumsum(tf.cast(ties, tf.int32)) <= need)
        idx = tf.cast(tf.where(above | ties)[:, 0], tf.int32)
        return tf.ensure_shape(idx, [k])

    def encode(self, x, seed=None, scale=None, noise=None):
        n = numel_of(x)
        k = self.k(n)
        if k == 0:
            return tf.zeros([0], tf.uint8)
        x = tf.reshape(tf.cast(x, tf.float32), [n])
        idx = self.select(x, n, k)
        values = tf.gather(x, idx)
        # a non-finite gradient must not pass as a finite one
        first = tf.where(tf.reduce_all(tf.math.is_finite(x)), values[:1], tf.fill([1], float("nan")))
        values = tf.concat([first, values[1:]], 0)
        return tf.concat([i32_bytes(idx), f32_bytes(values)], 0)

    def _unpack(self, payload, numel):
        k = self.k(numel)
        idx = bytes_i32(payload[: 4 * k])
        if k and tf.executing_eagerly():  # in a graph, scatter_nd itself rejects them (InvalidArgumentError)
            lo, hi = int(tf.reduce_min(idx)), int(tf.reduce_max(idx))
            if not (0 <= lo and hi < numel):
                raise ValueError(
                    f"hvd_compress: malformed {self.describe()} payload for {numel} values: "
                    f"indices span [{lo}, {hi}], outside [0, {numel})"
                )
        return idx, bytes_f32(payload[4 * k : 8 * k])

    def decode(self, payload, numel):
        if numel == 0:
            return tf.zeros([0], tf.float32)
        idx, values = self._unpack(payload, numel)
        return tf.scatter_nd(idx[:, None], values, [numel])

    def aggregate(self, payloads, numel):
        out = tf.zeros([numel], tf.float32)
        for p in payloads:
            idx, values = self._unpack(p, numel)
            out = tf.tensor_scatter_nd_add(out, idx[:, None], values)
        return out / float(len(payloads))


class TopK(ErrorFeedback):
    """Top-k sparsification with error feedback (the dropped values re-enter through the residual).
    Spec string ``topk:ratio=0.01``; see ``hvd_compress.torch.TopK`` for how to tune."""

    name = "topk"

    def __init__(self, ratio: float = 0.01, **options):
        super().__init__(TopKSparsifier(ratio), **options)
