"""Wire format of QSGD (Alistarh et al., NeurIPS 2017): stochastic quantization per bucket.

Accelerations: ``hvd_compress/torch/codecs/qsgd.py`` (torch plain), ``hvd_compress/_native``
(``hvdc_qsgd_encode``), ``hvd_compress/torch/kernels/qsgd.py`` (Triton),
``hvd_compress/tensorflow/codecs/qsgd.py``. The max-norm quantizer is :mod:`hvd_compress.lowprec`'s
(``bits`` 2..24 there; 2, 4 or 8 here, the fixed-width packings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvd_compress import lowprec
from hvd_compress.codecs.packing import buckets_of, bytes_f32, f32_bytes, nan_where_nonfinite, pack_bits, unpack_bits
from hvd_compress.common import packed_nbytes
from hvd_compress.core.registry import register_codec
from hvd_compress.core.spec import CodecSpec


@register_codec("qsgd", builtin=True)
@dataclass(frozen=True)
class QSGD(CodecSpec):
    """QSGD: ``bits`` bits per value (the sign included) and one fp32 scale per bucket.

    Each value lands on ``scale * {-s, ..., 0, ..., s} / s`` with ``s = 2**(bits-1) - 1``, rounded
    stochastically to a neighbouring level (unbiased): ``y = |x| * (reciprocal(scale) * s)`` in
    fp32, level ``floor(y) + (u < y - floor(y))`` clamped to ``[0, s]`` (NaN -> 0), code
    ``+-level + s``.

    Wire format for ``n`` values: ``ceil(n * bits / 8)`` bytes of codes (``8 // bits`` to a byte,
    low bits first), then ``ceil(n / bucket_size)`` little-endian fp32 scales. A non-finite scale
    travels as NaN. Decode: ``(code - s) * (scale / s)`` in fp32.

    Args:
        bits: 2, 4 or 8.
        bucket_size: values sharing one scale (>= 1); the last bucket may be partial.
        norm: ``"max"`` (the bucket's max |x|) or ``"l2"`` (its L2 norm, summed in float64 and
            rounded once; torch's and TF's fp32 sums may differ from it in the last bit on inputs
            whose sum of squares rounds).
    """

    bits: int = 4
    bucket_size: int = 512
    norm: str = "max"

    pattern = "auto"
    stochastic = True

    def __post_init__(self):
        if self.bits not in (2, 4, 8):
            raise ValueError(f"QSGD bits must be 2, 4 or 8 (fixed-width packing), got {self.bits}")
        if isinstance(self.bucket_size, bool) or not isinstance(self.bucket_size, int):
            raise ValueError(f"bucket_size must be a positive integer, got {self.bucket_size!r}")
        if self.bucket_size < 1:
            raise ValueError(f"bucket_size must be positive, got {self.bucket_size}")
        if self.norm not in ("max", "l2"):
            raise ValueError(f"norm must be 'max' or 'l2', got {self.norm!r}")

    @property
    def levels(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def alignment(self):
        return self.bucket_size

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, self.bits) + 4 * -(-numel // self.bucket_size)

    def scales(self, x: np.ndarray) -> np.ndarray:
        """One fp32 scale per bucket (NaN where non-finite)."""
        if x.size == 0:
            return np.zeros(0, np.float32)
        if self.norm == "max":
            return lowprec.scales_of(x, self.bucket_size)
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.square(buckets_of(x, self.bucket_size).astype(np.float64)).sum(axis=1)
            return nan_where_nonfinite(np.sqrt(sq).astype(np.float32))

    def encode(self, x, rng=None, *, noise=None):
        n = x.size
        if n == 0:
            return np.zeros(0, np.uint8)
        if noise is None:
            noise = (rng if rng is not None else np.random.default_rng()).random(n, dtype=np.float32)
        codes, scales = lowprec.quantize(x, self.bits, self.bucket_size, noise=noise, scales=self.scales(x))
        return np.concatenate([pack_bits(codes, self.bits), f32_bytes(scales)])

    def decode(self, payload, numel):
        if numel == 0:
            return np.zeros(0, np.float32)
        ncode = packed_nbytes(numel, self.bits)
        codes = unpack_bits(payload[:ncode], self.bits, numel)
        return lowprec.dequantize(codes, bytes_f32(payload[ncode:]), self.bits, self.bucket_size)
