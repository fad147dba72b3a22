"""Bit packing for TensorFlow payloads, byte-identical to ``hvd_compress.torch.packing``.

Fixed-width packing stores ``8 // b`` codes of ``b`` bits per byte, the first code in the lowest
bits, for ``b`` in {1, 2, 4, 8}. Base-3 packing stores five ternary codes per byte as
``t0 + 3*t1 + 9*t2 + 27*t3 + 81*t4``. Floats travel as their little-endian bytes (``tf.bitcast``;
x86 and ARM are little-endian, like the torch side, which does not swap either).

Every function takes static sizes (Python ints) and traces inside ``tf.function``.
"""

from __future__ import annotations

import tensorflow as tf

from hvd_compress.common import FIXED_WIDTHS, base3_nbytes, packed_nbytes  # noqa: F401 (re-exported)

_POW3 = (1, 3, 9, 27, 81)


def _pad_to(codes: tf.Tensor, n: int, multiple: int) -> tf.Tensor:
    pad = (-n) % multiple
    return tf.pad(codes, [[0, pad]]) if pad else codes


def pack_bits(codes: tf.Tensor, bits: int) -> tf.Tensor:
    """Pack a 1-D tensor of ``n`` integer codes (each < 2**bits) into ``packed_nbytes`` bytes."""
    packed_nbytes(0, bits)  # validates bits
    if bits == 8:
        return tf.cast(codes, tf.uint8)
    per_byte = 8 // bits
    n = int(codes.shape[0])
    lanes = tf.reshape(_pad_to(tf.cast(codes, tf.int32), n, per_byte), [-1, per_byte])
    weights = tf.constant([1 << (bits * lane) for lane in range(per_byte)], tf.int32)
    return tf.cast(tf.reduce_sum(lanes * weights, axis=1), tf.uint8)


def unpack_bits(packed: tf.Tensor, bits: int, numel: int) -> tf.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` codes, as int32."""
    if bits == 8:
        return tf.cast(packed[:numel], tf.int32)
    shifts = tf.constant(list(range(0, 8, bits)), tf.int32)
    wide = tf.cast(packed, tf.int32)[:, None]
    codes = tf.bitwise.bitwise_and(tf.bitwise.right_shift(wide, shifts), (1 << bits) - 1)
    return tf.reshape(codes, [-1])[:numel]


def pack_base3(codes: tf.Tensor) -> tf.Tensor:
    """Pack a 1-D tensor of ternary codes (0, 1, 2) five per byte."""
    n = int(codes.shape[0])
    lanes = tf.reshape(_pad_to(tf.cast(codes, tf.int32), n, 5), [-1, 5])
    return tf.cast(tf.reduce_sum(lanes * tf.constant(_POW3, tf.int32), axis=1), tf.uint8)


def unpack_base3(packed: tf.Tensor, numel: int) -> tf.Tensor:
    """Inverse of :func:`pack_base3`, as int32."""
    wide = tf.cast(packed, tf.int32)[:, None]
    codes = tf.math.floormod(tf.math.floordiv(wide, tf.constant(_POW3, tf.int32)), 3)
    return tf.reshape(codes, [-1])[:numel]


def f32_bytes(values: tf.Tensor) -> tf.Tensor:
    """fp32 values as their little-endian bytes, flat."""
    return tf.reshape(tf.bitcast(tf.cast(values, tf.float32), tf.uint8), [-1])


def bytes_f32(payload: tf.Tensor) -> tf.Tensor:
    """Inverse of :func:`f32_bytes`."""
    return tf.bitcast(tf.reshape(payload, [-1, 4]), tf.float32)


def i32_bytes(values: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.bitcast(tf.cast(values, tf.int32), tf.uint8), [-1])


def bytes_i32(payload: tf.Tensor) -> tf.Tensor:
    return tf.bitcast(tf.reshape(payload, [-1, 4]), tf.int32)


def half_bytes(values: tf.Tensor, dtype) -> tf.Tensor:
    """fp16 / bf16 values (cast from fp32, round to nearest even) as little-endian bytes."""
    return tf.reshape(tf.bitcast(tf.cast(values, dtype), tf.uint8), [-1])


def bytes_half(payload: tf.Tensor, dtype) -> tf.Tensor:
    return tf.bitcast(tf.reshape(payload, [-1, 2]), dtype)
