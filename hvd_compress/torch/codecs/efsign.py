"""EF-SignSGD (Karimireddy et al., ICML 2019): scaled sign with error feedback."""

from __future__ import annotations

import torch

from hvd_compress._native import ops as native
from hvd_compress.codecs import sign as _specs
from hvd_compress.common import SpecFormat
from hvd_compress.torch import kernels
from hvd_compress.torch.codecs.base import Codec, NativeDecoding, nan_where_nonfinite
from hvd_compress.torch.codecs.error_feedback import ErrorFeedback
from hvd_compress.torch.packing import bytes_f32, f32_bytes, pack_bits, packed_nbytes, unpack_bits


class ScaledSign(NativeDecoding, SpecFormat, Codec):
    """``(||v||_1 / d) * sign(v)`` per chunk: 1 bit per value plus one fp32 scale.

    Wire format per chunk of ``n`` values: ``ceil(n / 8)`` bytes of sign bits (1: non-negative),
    then the fp32 scale (mean absolute value of the chunk).
    """

    spec = _specs.ScaledSign
    name = "scaled_sign"  # the spec's "efsign" is EFSign, with error feedback

    # Speed: on CPU the native kernels (hvd_compress._native) run encode, decode, aggregate and the
    # fused error-feedback step (encode_with_residual); the torch code after each ``native`` call
    # is the plain path (see QSGD).

    def encode(self, x, generator=None, scale=None):
        path = self.plan.path(x)
        if path == "triton":
            return kernels.sign_encode(x)
        res = native.sign_encode(x) if path == "native" else None
        if res is not None:
            return res[0]
        x = x.reshape(-1).to(torch.float32)
        s = nan_where_nonfinite(x.abs().mean().reshape(1)) if x.numel() else torch.zeros(1)
        bits = pack_bits((x >= 0).to(torch.uint8), 1)
        return torch.cat([bits, f32_bytes(s)])

    def decode(self, payload, numel):
        out = self.native_decode(payload, numel)
        if out is not None:
            return out
        nb = packed_nbytes(numel, 1)
        s = bytes_f32(payload[nb : nb + 4])
        signs = unpack_bits(payload[:nb], 1, numel).to(torch.float32).mul_(2).sub_(1)
        return signs.mul_(s)

    def native_decoder(self):
        return (native.sign_decode_into,)

    def encode_with_residual(self, x, residual, bounds, draw, scale=None):
        """Fused error-feedback step for :class:`ErrorFeedback`: as
        :meth:`OneBitQuantizer.encode_with_residual`, in two passes per chunk (the chunk's mean
        |p| must be known before the residual)."""
        path = self.plan.path(x)
        if path == "triton":
            return kernels.fused_feedback("sign", x, residual, bounds)
        if path == "native":
            return native.fused_feedback(native.sign_encode, x, residual, bounds)
        return None


class EFSign(ErrorFeedback):
    """EF-SignSGD: :class:`ScaledSign` with error feedback.

    The paper applies the feedback to ``lr * g``; here it applies to the gradient, which is the same
    update for a constant learning rate and keeps the codec independent of the optimizer. The
    compression error is exactly ``(1 - phi) ||p||^2`` with ``phi = ||p||_1^2 / (d ||p||_2^2)``.

    Example::

        compression = hvd_compress.torch.EFSign()
    """

    name = "efsign"

    def __init__(self, **options):
        super().__init__(ScaledSign(), **options)
