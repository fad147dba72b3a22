"""TernGrad (Wen et al., NeurIPS 2017): ternary gradients with a scale shared across workers."""

from __future__ import annotations

import torch

from hvd_compress._native import ops as native
from hvd_compress.codecs import terngrad as _specs
from hvd_compress.common import SpecFormat
from hvd_compress.torch import kernels
from hvd_compress.torch.codecs.base import Codec, NativeDecoding, nan_where_nonfinite
from hvd_compress.torch.packing import bytes_f32, f32_bytes, pack_base3, pack_bits, unpack_base3, unpack_bits


class TernGrad(NativeDecoding, SpecFormat, Codec):
    """TernGrad: each value becomes ``s * sign(g) * Bernoulli(|g| / s)``, unbiased for ``|g| <= s``.

    Scaler sharing: each worker proposes ``s = min(max|g|, clip * std(g))`` (the reference code's
    ``c * sigma`` scaler, ``clip=2.5``), the exchange takes the max over workers with one
    one-value allreduce, and every worker clips to ``[-s, s]`` and encodes with that ``s``; so
    every payload shares one scale. ``clip=None`` disables clipping (``s = max|g|``).

    Wire format per chunk of ``n`` values: ternary codes (0: -s, 1: 0, 2: +s) packed five per byte
    (``packing="base3"``, 1.6 bits per value, the default) or four per byte (``packing="2bit"``),
    then the fp32 scale ``s``.

    How to tune: clipping at 2.5 standard deviations is what recovered AlexNet accuracy in the
    paper; raise ``clip`` if your gradients are heavy-tailed and accuracy suffers.
    """

    spec = _specs.TernGrad
    shared_scale = True  # local_scale() proposes, the exchange agrees on the max

    # knobs, validation and sizes: ``spec`` (hvd_compress/codecs), through SpecFormat
    #
    # Speed: on CPU the native kernels (hvd_compress._native) run local_scale, encode, decode and
    # aggregate; the torch code after each ``native`` call is the plain path (see QSGD).

    def local_scale(self, x):
        path = self.plan.path(x)
        if path == "triton":
            return kernels.terngrad_scale(x, self.clip)
        s = native.terngrad_scale(x, self.clip) if path == "native" else None
        if s is not None:
            return s
        x = x.reshape(-1).to(torch.float32)
        if x.numel() == 0:
            return torch.zeros(1)
        s = x.abs().max()
        if self.clip is not None and x.numel() > 1:
            s = torch.minimum(s, self.clip * x.std())
        return nan_where_nonfinite(s.reshape(1).to(torch.float32))

    def encode(self, x, generator=None, scale=None, noise=None):
        s = self.local_scale(x) if scale is None else scale.reshape(1).to(torch.float32)
        path = self.plan.path(x)
        if path == "triton":
            return kernels.terngrad_encode(x, s, self.packing == "base3", generator, noise)
        out = native.terngrad_encode(x, s, self.packing == "base3", generator, noise) if path == "native" else None
        if out is not None:
            return out
        x = x.reshape(-1).to(torch.float32)
        n = x.numel()
        if n == 0:
            return torch.cat([torch.empty(0, dtype=torch.uint8), f32_bytes(s)])
        sv = float(s)
        if sv > 0 and sv == sv and sv != float("inf"):
            prob = (x.abs() / sv).clamp_(max=1.0)
            if noise is None:  # explicit noise lets tests feed two frameworks the same draws
                noise = torch.rand(n, generator=generator)
            hit = noise < prob
            codes = torch.where(hit, torch.where(x < 0, 0, 2), 1).to(torch.uint8)
        else:
            codes = torch.ones(n, dtype=torch.uint8)
        if not torch.isfinite(x).all():
            s = torch.full((1,), float("nan"))
        packed = pack_base3(codes) if self.packing == "base3" else pack_bits(codes, 2)
        return torch.cat([packed, f32_bytes(s)])

    def decode(self, payload, numel):
        out = self.native_decode(payload, numel)
        if out is not None:
            return out
        nc = self._code_nbytes(numel)
        s = bytes_f32(payload[nc : nc + 4])
        if self.packing == "base3" and nc and int(payload[:nc].max()) >= 243:  # 3**5: no such byte
            raise ValueError(
                f"hvd_compress: malformed {self.describe()} payload for {numel} values: "
                f"byte {int(payload[:nc].max())} is not five base-3 digits"
            )
        codes = unpack_base3(payload[:nc], numel) if self.packing == "base3" else unpack_bits(payload[:nc], 2, numel)
        return (codes.to(torch.float32) - 1.0).mul_(s)

    def native_decoder(self):
        return (native.terngrad_decode_into, self.packing == "base3")
