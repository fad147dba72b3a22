"""Wire formats of the lossless and cast codecs: ``none`` (fp32), ``fp16``, ``bf16``.

Accelerations: ``hvd_compress/torch/codecs/casts.py``, ``hvd_compress/tensorflow/codecs/casts.py``.
``none`` and ``fp16`` are summable (the frameworks sum them inside a plain allreduce); ``bf16``
travels as bytes and is summed in fp32 after decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvd_compress.core.registry import register_codec
from hvd_compress.core.spec import CodecSpec


@register_codec("none", builtin=True)
@dataclass(frozen=True)
class NoCompression(CodecSpec):
    """fp32 as is: 4 little-endian bytes per value (the baseline)."""

    pattern = "auto"
    stochastic = False

    def payload_nbytes(self, numel):
        return 4 * numel

    def encode(self, x, rng=None, *, noise=None):
        return np.ascontiguousarray(x, dtype="<f4").view(np.uint8)

    def decode(self, payload, numel):
        return payload.view("<f4").astype(np.float32)


@register_codec("fp16", builtin=True)
@dataclass(frozen=True)
class FP16(CodecSpec):
    """IEEE half precision, round to nearest even: 2 little-endian bytes per value. Magnitudes
    above 65504 become +-Inf, as torch's and TensorFlow's casts do."""

    pattern = "auto"
    stochastic = False

    def payload_nbytes(self, numel):
        return 2 * numel

    def encode(self, x, rng=None, *, noise=None):
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(x.astype("<f2")).view(np.uint8)

    def decode(self, payload, numel):
        return payload.view("<f2").astype(np.float32)


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """The bfloat16 bit patterns (uint16) of fp32 ``x``, rounded to nearest even; every NaN becomes
    0xFFFF, what torch's CPU cast sends (the pinned definition). TensorFlow's cast sends 0x7FC0
    instead: also a NaN, so both decode to NaN, but those two bytes differ."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    return np.where(np.isnan(x), np.uint32(0xFFFF), rounded).astype(np.uint16)


@register_codec("bf16", builtin=True)
@dataclass(frozen=True)
class BF16(CodecSpec):
    """bfloat16 (fp32's top 16 bits, rounded to nearest even): 2 little-endian bytes per value."""

    pattern = "auto"
    stochastic = False

    def payload_nbytes(self, numel):
        return 2 * numel

    def encode(self, x, rng=None, *, noise=None):
        return to_bfloat16_bits(x).astype("<u2").view(np.uint8)

    def decode(self, payload, numel):
        return (payload.view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)
