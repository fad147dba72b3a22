"""1-bit SGD with error feedback (Seide et al., Interspeech 2014)."""

from __future__ import annotations

import torch

from hvd_compress._native import ops as native
from hvd_compress.codecs import onebit as _specs
from hvd_compress.common import SpecFormat
from hvd_compress.torch import kernels
from hvd_compress.torch.codecs.base import Codec, NativeDecoding, bucket_view, nan_where_nonfinite
from hvd_compress.torch.codecs.error_feedback import ErrorFeedback
from hvd_compress.torch.packing import bytes_f32, f32_bytes, pack_bits, packed_nbytes, unpack_bits


class OneBitQuantizer(NativeDecoding, SpecFormat, Codec):
    """The 1-bit quantizer alone (no error feedback): per bucket, the sign at threshold 0 and two
    reconstruction values, the means of the bucket's non-negative and of its negative entries.

    Wire format per chunk of ``n`` values: ``ceil(n / 8)`` bytes of bits (1: non-negative), then per
    bucket the fp32 pair (mean of non-negatives, mean of negatives). 1 + 64 / bucket_size bits per
    value (1.0625 at the default 1024).
    """

    spec = _specs.OneBit
    name = "onebit_quantizer"  # the spec's "onebit" is OneBit, with error feedback

    # knobs, validation and sizes: ``spec`` (hvd_compress/codecs), through SpecFormat
    #
    # Speed: on CPU the native kernels (hvd_compress._native) run encode, decode, aggregate and the
    # fused error-feedback step (encode_with_residual); the torch code after each ``native`` call
    # is the plain path (see QSGD).

    def encode(self, x, generator=None, scale=None):
        path = self.plan.path(x)
        if path == "triton":
            return kernels.onebit_encode(x, self.bucket_size)
        res = native.onebit_encode(x, self.bucket_size) if path == "native" else None
        if res is not None:
            return res[0]
        x = x.reshape(-1).to(torch.float32)
        n = x.numel()
        if n == 0:
            return torch.empty(0, dtype=torch.uint8)
        buckets, pad = bucket_view(x, self.bucket_size)
        positive = buckets >= 0
        pos_count = positive.sum(dim=1).to(torch.float32)
        if pad:  # padding zeros count as non-negative; take them back out of the last bucket
            pos_count[-1] -= pad
        neg_count = self.bucket_size - pos_count
        if pad:
            neg_count[-1] -= pad
        pos_sum = torch.where(positive, buckets, torch.zeros_like(buckets)).sum(dim=1)
        neg_sum = buckets.sum(dim=1) - pos_sum
        pos_mean = torch.where(pos_count > 0, pos_sum / pos_count.clamp(min=1), torch.zeros_like(pos_sum))
        neg_mean = torch.where(neg_count > 0, neg_sum / neg_count.clamp(min=1), torch.zeros_like(neg_sum))
        means = nan_where_nonfinite(torch.stack([pos_mean, neg_mean], dim=1).view(-1))
        bits = pack_bits(positive.view(-1)[:n].to(torch.uint8), 1)
        return torch.cat([bits, f32_bytes(means)])

    def decode(self, payload, numel):
        out = self.native_decode(payload, numel)
        if out is not None:
            return out
        if numel == 0:
            return torch.empty(0)
        nb = packed_nbytes(numel, 1)
        positive = unpack_bits(payload[:nb], 1, numel).bool()
        means = bytes_f32(payload[nb:]).view(-1, 2)
        pos = means[:, 0].repeat_interleave(self.bucket_size)[:numel]
        neg = means[:, 1].repeat_interleave(self.bucket_size)[:numel]
        return torch.where(positive, pos, neg)

    def native_decoder(self):
        return (native.onebit_decode_into, self.bucket_size)

    def encode_with_residual(self, x, residual, bounds, draw, scale=None):
        """Fused error-feedback step for :class:`ErrorFeedback` (one pass per bucket):
        ``p = x + residual``; payloads of ``p`` per chunk; ``residual = p - decode(payloads)``,
        updated in place (zeroed if it holds a non-finite value). Returns ``(payloads, residual)``,
        or ``None`` where only the plain path applies."""
        path = self.plan.path(x)
        if path == "triton":
            return kernels.fused_feedback("onebit", x, residual, bounds, self.bucket_size)
        if path == "native":
            return native.fused_feedback(native.onebit_encode, x, residual, bounds, self.bucket_size)
        return None


class OneBit(ErrorFeedback):
    """1-bit SGD: :class:`OneBitQuantizer` with error feedback (training diverges without it).

    ``p = g + e``; send ``C(p)``; ``e = p - C(p)``. Under the reduce-scatter exchange the owner of
    each chunk re-quantizes the sum; wrap in :class:`DoubleSqueeze` to give that second
    quantization its own residual, as the paper does.

    How to tune: smaller ``bucket_size`` means more accurate reconstruction values and more bytes
    (64 bits of means per bucket).

    Example::

        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                       compression=hvd_compress.torch.OneBit())
    """

    name = "onebit"

    def __init__(self, bucket_size: int = 1024, **options):
        super().__init__(OneBitQuantizer(bucket_size), **options)
