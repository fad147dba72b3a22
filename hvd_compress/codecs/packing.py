"""Numpy bit packing of the built-in wire formats (the definition the torch and TF packers follow).

Fixed-width packing stores ``8 // b`` codes of ``b`` bits per byte, the first code in the lowest
bits, for ``b`` in {1, 2, 4, 8} (:func:`hvd_compress.lowprec.pack_codes`, which also packs any
other width as one little-endian bit stream). Base-3 packing stores five ternary codes (0, 1, 2)
per byte as ``t0 + 3*t1 + 9*t2 + 27*t3 + 81*t4``; bytes above 242 are not valid.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from hvd_compress.common import base3_nbytes, packed_nbytes  # noqa: F401 (re-exported: the sizes)
from hvd_compress.lowprec import pack_codes, unpack_codes

_POW3 = np.array([1, 3, 9, 27, 81], np.uint8)
_BASE3_TABLE = ((np.arange(243)[:, None] // _POW3.astype(np.int64)) % 3).astype(np.uint8)  # byte -> 5 trits


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """``codes`` (each < 2**bits) packed ``8 // bits`` to a byte, low bits first."""
    return pack_codes(np.asarray(codes, np.uint8), bits)


def unpack_bits(packed: np.ndarray, bits: int, numel: int) -> np.ndarray:
    """The first ``numel`` codes of :func:`pack_bits` bytes, as uint8."""
    return unpack_codes(packed, bits, numel).astype(np.uint8, copy=False)


def pack_base3(codes: np.ndarray) -> np.ndarray:
    """Ternary ``codes`` (0, 1, 2) five to a byte (the last byte zero-padded)."""
    c = np.asarray(codes, np.uint8).reshape(-1)
    groups = np.concatenate([c, np.zeros(-c.size % 5, np.uint8)]).reshape(-1, 5)  # 2-D: one row a byte
    return (groups * _POW3).sum(axis=1, dtype=np.uint8)


def unpack_base3(packed: np.ndarray, numel: int) -> np.ndarray:
    """The first ``numel`` trits of :func:`pack_base3` bytes; ``ValueError`` for a byte above 242."""
    packed = np.asarray(packed, np.uint8).reshape(-1)
    if packed.size and int(packed.max()) >= 243:
        raise ValueError(f"byte {int(packed.max())} is not five base-3 digits (valid bytes: 0..242)")
    return _BASE3_TABLE[packed].reshape(-1)[:numel]


def f32_bytes(values) -> np.ndarray:
    """fp32 values as little-endian bytes."""
    return np.ascontiguousarray(np.asarray(values, dtype="<f4").reshape(-1)).view(np.uint8)


def bytes_f32(payload: np.ndarray) -> np.ndarray:
    """Little-endian fp32 values of ``payload`` bytes (a copy, so alignment never matters)."""
    return np.frombuffer(np.ascontiguousarray(payload, np.uint8).tobytes(), dtype="<f4").astype(np.float32)


def nan_where_nonfinite(values: ArrayLike) -> np.ndarray:
    """A non-finite scale travels as NaN, never as a silently wrong finite value (or an Inf that a
    receiver would multiply by zero codes)."""
    values = np.asarray(values, np.float32)
    return np.where(np.isfinite(values), values, np.float32(np.nan)).astype(np.float32)


def buckets_of(x: np.ndarray, bucket_size: int) -> np.ndarray:
    """``x`` zero-padded to whole buckets, as a (buckets, bucket_size) matrix."""
    return np.concatenate([x, np.zeros(-x.size % bucket_size, x.dtype)]).reshape(-1, bucket_size)
