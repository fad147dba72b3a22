"""Wire statistics for the TensorFlow frontend, counted inside the graph.

Each codec label owns one float64 ``tf.Variable`` of counters that the exchange increments with
``assign_add`` every time it runs (not every time it is traced), so the numbers are right under
``tf.function``, ``model.fit`` and eager execution alike. :func:`wire_stats` returns the same keys
as ``hvd_compress.torch.wire_stats()``.
"""

from __future__ import annotations

import re
from typing import Dict

import tensorflow as tf

FIELDS = ("values", "payload_bytes", "sent_bytes", "tensors", "error_sq", "reference_sq")


class WireStats:
    """Bytes handed to collectives, per codec label, since start (or the last reset).

    ``payload_bytes``: bytes this worker's encoder produced. ``sent_bytes``: bytes this worker
    transmits to other ranks under the collective's standard algorithm (ring allreduce
    ``2(N-1)/N n``; alltoall: the splits for other ranks; allgather: its payload to N-1 ranks).
    ``values``: tensor values exchanged. With :attr:`track_error` on (set by
    ``CompressionStatsCallback``) the exchange also adds ``||p - C(p)||^2`` and ``||p||^2`` of
    what each worker encoded (``error_sq``, ``reference_sq``).
    """

    def __init__(self):
        self._vars: Dict[str, tf.Variable] = {}
        self.track_error = False

    def _var(self, label: str) -> tf.Variable:
        var = self._vars.get(label)
        if var is None:
            with tf.init_scope():
                name = "hvd_compress/wire_stats/" + re.sub(r"[^A-Za-z0-9_.-]", "_", label)
                var = tf.Variable(tf.zeros([len(FIELDS)], tf.float64), trainable=False, name=name)
            self._vars[label] = var
        return var

    def add(self, label: str, values, payload_bytes, sent_bytes, tensors=1):
        """Count one exchange (runs every time the graph runs). Sizes are Python numbers, or
        tensors where they are known only at run time (GradiVeQ's fitted ``d``)."""
        parts = (values, payload_bytes, sent_bytes, tensors, 0.0, 0.0)
        if any(tf.is_tensor(p) for p in parts):
            delta = tf.stack([tf.cast(p, tf.float64) if tf.is_tensor(p) else tf.constant(p, tf.float64) for p in parts])
        else:
            delta = tf.constant(parts, tf.float64)
        return self._var(label).assign_add(delta)

    def add_error(self, label: str, error_sq: tf.Tensor, reference_sq: tf.Tensor):
        delta = tf.concat([tf.zeros([4], tf.float64), tf.cast(tf.stack([error_sq, reference_sq]), tf.float64)], 0)
        return self._var(label).assign_add(delta)

    def reset(self) -> None:
        for var in self._vars.values():
            var.assign(tf.zeros_like(var))

    def raw(self) -> Dict[str, Dict[str, float]]:
        return {label: dict(zip(FIELDS, (float(v) for v in var.numpy()))) for label, var in self._vars.items()}

    def snapshot(self) -> Dict[str, Dict[str, float]]:
        out = {}
        for label, row in self.raw().items():
            if not any(row.values()):  # reset and unused since
                continue
            v = max(row["values"], 1.0)
            out[label] = {
                "values": int(row["values"]),
                "payload_bytes": int(row["payload_bytes"]),
                "sent_bytes": row["sent_bytes"],
                "tensors": int(row["tensors"]),
                "bits_per_value": 8.0 * row["payload_bytes"] / v,
                "sent_bits_per_value": 8.0 * row["sent_bytes"] / v,
            }
        return out


WIRE_STATS = WireStats()


def wire_stats() -> Dict[str, Dict[str, float]]:
    """Bytes handed to collectives and values exchanged, per codec, since start or the last
    :func:`reset_wire_stats`; the same keys as ``hvd_compress.torch.wire_stats()``: ``values``,
    ``payload_bytes``, ``sent_bytes``, ``tensors``, ``bits_per_value``, ``sent_bits_per_value``.
    Tensors that went uncompressed (below ``min_numel``, 1-D, integer) count under
    ``"uncompressed"``. Call it outside ``tf.function`` (it reads variables eagerly)."""
    return WIRE_STATS.snapshot()


def reset_wire_stats() -> None:
    WIRE_STATS.reset()


def compression_error() -> Dict[str, Dict[str, float]]:
    """Per codec: ``error_sq`` (sum of ``||p - C(p)||^2``), ``reference_sq`` (sum of ``||p||^2``)
    over what this worker encoded, and ``relative_error`` (the square root of their ratio).
    Counted only while ``WIRE_STATS.track_error`` is on (``CompressionStatsCallback`` turns it on;
    it must be on when the training step is first traced)."""
    out = {}
    for label, row in WIRE_STATS.raw().items():
        if row["reference_sq"] > 0 or row["error_sq"] > 0:
            ratio = row["error_sq"] / row["reference_sq"] if row["reference_sq"] > 0 else float("inf")
            out[label] = {
                "error_sq": row["error_sq"],
                "reference_sq": row["reference_sq"],
                "relative_error": ratio**0.5,
            }
    return out
