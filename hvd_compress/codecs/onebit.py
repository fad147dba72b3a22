"""Wire format of the 1-bit quantizer of 1-bit SGD (Seide et al., Interspeech 2014).

The registered ``onebit`` is the quantizer's format; the error feedback that 1-bit SGD adds
(``p = g + e``; send ``C(p)``; ``e = p - C(p)``) is a wrapper in every framework and does not
change the bytes. Accelerations: ``hvd_compress/torch/codecs/onebit.py``, ``hvd_compress/_native``
(``hvdc_onebit_*``), ``hvd_compress/torch/kernels/onebit.py`` (Triton),
``hvd_compress/tensorflow/codecs/onebit.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvd_compress.codecs.packing import buckets_of, bytes_f32, f32_bytes, nan_where_nonfinite, pack_bits, unpack_bits
from hvd_compress.common import packed_nbytes
from hvd_compress.core.registry import register_codec
from hvd_compress.core.spec import CodecSpec


@register_codec("onebit", builtin=True)
@dataclass(frozen=True)
class OneBit(CodecSpec):
    """1-bit quantizer: the sign at threshold 0 and, per bucket, two reconstruction values.

        Wire format for ``n`` values: ``ceil(n / 8)`` bytes of bits (1: ``x >= 0``, first value in
        the lowest bit), then per bucket the fp32 pair (mean of the bucket's non-negative values, mean
        of its negative values, 0 for an empty side). A NaN input counts as negative (its bucket's negative
    mean is NaN); an Inf makes both means NaN. The means are summed in
        float64 and rounded once: exact, hence identical in every kernel, whenever the fp32 sums are
        exact; elsewhere torch's fp32 sums differ in the last bit (native kernels sum in double).
        Decode: each value gets its bucket's positive or negative mean.

        Args:
            bucket_size: values per pair of means, a positive multiple of 8 (1 + 64 / bucket_size
                bits per value).
    """

    bucket_size: int = 1024

    pattern = "auto"
    stochastic = False

    def __post_init__(self):
        if (
            isinstance(self.bucket_size, bool)
            or not isinstance(self.bucket_size, int)
            or self.bucket_size < 8
            or self.bucket_size % 8
        ):
            raise ValueError(f"bucket_size must be a positive multiple of 8, got {self.bucket_size!r}")

    def alignment(self):
        return self.bucket_size

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, 1) + 8 * -(-numel // self.bucket_size)

    def encode(self, x, rng=None, *, noise=None):
        n = x.size
        if n == 0:
            return np.zeros(0, np.uint8)
        buckets = buckets_of(x, self.bucket_size).astype(np.float64)
        valid = buckets_of(np.ones(n, bool), self.bucket_size)
        positive = buckets >= 0
        pos, neg = positive & valid, ~positive & valid
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            pos_sum = np.where(pos, buckets, 0.0).sum(axis=1)
            # total minus the non-negative sum, as the kernels do: an Inf makes both means NaN
            neg_sum = buckets.sum(axis=1) - pos_sum
            pos_count, neg_count = pos.sum(axis=1), neg.sum(axis=1)
            pos_mean = np.where(pos_count > 0, pos_sum / np.maximum(pos_count, 1), 0.0)
            neg_mean = np.where(neg_count > 0, neg_sum / np.maximum(neg_count, 1), 0.0)
        means = nan_where_nonfinite(np.stack([pos_mean, neg_mean], axis=1).reshape(-1).astype(np.float32))
        bits = pack_bits((x >= 0).astype(np.uint8), 1)
        return np.concatenate([bits, f32_bytes(means)])

    def decode(self, payload, numel):
        if numel == 0:
            return np.zeros(0, np.float32)
        nb = packed_nbytes(numel, 1)
        positive = unpack_bits(payload[:nb], 1, numel).astype(bool)
        means = bytes_f32(payload[nb:]).reshape(-1, 2)
        pos = np.repeat(means[:, 0], self.bucket_size)[:numel]
        neg = np.repeat(means[:, 1], self.bucket_size)[:numel]
        return np.where(positive, pos, neg).astype(np.float32)
