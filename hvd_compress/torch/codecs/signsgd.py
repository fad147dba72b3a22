"""signSGD with majority vote (Bernstein et al., 2018/2019)."""

from __future__ import annotations

import torch

from hvd_compress._native import ops as native
from hvd_compress.codecs import sign as _specs
from hvd_compress.common import SpecFormat
from hvd_compress.torch import kernels
from hvd_compress.torch.codecs.base import Codec, NativeDecoding, nan_where_nonfinite
from hvd_compress.torch.packing import bytes_f32, f32_bytes, pack_bits, packed_nbytes, unpack_bits
from hvd_compress.torch.finite import all_finite


class SignSGD(NativeDecoding, SpecFormat, Codec):
    """signSGD with majority vote: each worker sends ``sign(g)``; the result is the sign of the sum
    of the workers' signs. Biased, no memory.

    ``scaled=True`` (default) multiplies the vote by the workers' mean ``|g|`` (one fp32 per chunk
    on the wire), so it trains with an SGD learning rate; ``scaled=False`` returns the bare ``+-1``
    vote (use a signSGD learning rate, around 1e-4). Ties (possible with an even number of workers)
    go to the sign of the scale-weighted sum, then to +1.

    Wire format per chunk: ``ceil(n / 8)`` bytes of sign bits (1: non-negative), then the fp32
    scale. The vote is exactly representable, so the reduce-scatter re-encode loses nothing.
    """

    spec = _specs.SignSGD

    # Speed: on CPU the native kernels (hvd_compress._native) encode (ScaledSign's kernel: the
    # same bits and mean |x|), decode and count the vote in one pass over the workers' sign bits;
    # the torch code after each ``native`` call is the plain path that defines the result.

    def encode(self, x, generator=None, scale=None):
        path = self.plan.path(x)
        if path == "triton":
            return kernels.sign_encode(x, "mean" if self.scaled else "vote")
        res = native.sign_encode(x) if path == "native" else None
        if res is not None:
            out = res[0]
            mean = float(bytes_f32(out[-4:]))
            if not self.scaled and mean > 0 and mean != float("inf"):
                out[-4:] = f32_bytes(torch.ones(1))  # some value is nonzero, none is non-finite
            elif not self.scaled:  # all zero, non-finite, or a mean the kernel could not round
                out[-4:] = f32_bytes(self._vote_scale(x.reshape(-1)))
            return out
        if self.scaled:  # a NaN/Inf in x makes the mean non-finite: NaN on the wire below
            s = x.abs().mean().reshape(1) if x.numel() else torch.zeros(1)
        else:
            s = self._vote_scale(x)  # NaN for a non-finite x
        bits = pack_bits((x >= 0).to(torch.uint8), 1)
        return torch.cat([bits, f32_bytes(nan_where_nonfinite(s))])

    @staticmethod
    def _vote_scale(x):
        """The bare vote's scale: 1, but 0 for an all-zero chunk (it must stay exactly zero) and
        NaN for a non-finite one."""
        s = (x.abs().amax() > 0).to(torch.float32).reshape(1) if x.numel() else torch.zeros(1)
        if not all_finite(x):
            s = torch.full((1,), float("nan"))
        return s

    def native_decoder(self):
        return (native.sign_decode_into,)

    def _signs_and_scale(self, payload, numel):
        nb = packed_nbytes(numel, 1)
        signs = unpack_bits(payload[:nb], 1, numel).to(torch.float32).mul_(2).sub_(1)
        return signs, bytes_f32(payload[nb : nb + 4])

    def decode(self, payload, numel):
        out = self.native_decode(payload, numel)
        if out is not None:
            return out
        signs, s = self._signs_and_scale(payload, numel)
        return signs.mul_(s)

    def aggregate(self, payloads, numel):
        path = self.plan.path(*payloads)
        out = None
        if path == "triton":
            out = kernels.signsgd_vote(payloads, numel)
        elif path == "native":
            out = native.signsgd_vote(payloads, numel)
        if out is not None:
            return out
        votes = torch.zeros(numel)
        weighted = torch.zeros(numel)
        scale = torch.zeros(1)
        for p in payloads:
            signs, s = self._signs_and_scale(p, numel)
            votes += signs
            weighted += signs * s
            scale += s
        direction = torch.sign(votes)
        tie = direction == 0
        direction[tie] = torch.where(weighted[tie] < 0, -1.0, 1.0)
        return direction.mul_(scale / len(payloads))
