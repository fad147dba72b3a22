"""Lossless and cast codecs: NoCompression, FP16 (summable), BF16."""

from __future__ import annotations

import torch

from hvd_compress.codecs import casts as _specs
from hvd_compress.common import SpecFormat
from hvd_compress.torch.codecs.base import Codec


class NoCompression(SpecFormat, Codec):
    """fp32 as is, through a plain allreduce; the baseline every codec is compared against."""

    spec = _specs.NoCompression
    summable = True

    def to_summable(self, x):
        return x

    def from_summable(self, t):
        return t

    def encode(self, x, generator=None, scale=None):
        return x.to(torch.float32).contiguous().view(torch.uint8)

    def decode(self, payload, numel):
        return payload.clone().view(torch.float32)


class FP16(SpecFormat, Codec):
    """fp16 cast, summed by the allreduce itself (Horovod's ``Compression.fp16``, with our stats
    and non-finite policy). Values above 65504 overflow to inf, as with Horovod's."""

    spec = _specs.FP16
    summable = True

    def to_summable(self, x):
        return x.to(torch.float16)

    def from_summable(self, t):
        return t.to(torch.float32)

    def encode(self, x, generator=None, scale=None):
        return x.to(torch.float16).contiguous().view(torch.uint8)

    def decode(self, payload, numel):
        return payload.clone().view(torch.float16).to(torch.float32)


class BF16(SpecFormat, Codec):
    """bfloat16 cast: fp32's range, 8 bits of mantissa. Horovod's torch allreduce has no bf16, so
    payloads travel as bytes through allgather or reduce-scatter and are summed in fp32."""

    spec = _specs.BF16

    def encode(self, x, generator=None, scale=None):
        return x.to(torch.bfloat16).contiguous().view(torch.uint8)

    def decode(self, payload, numel):
        return payload.clone().view(torch.bfloat16).to(torch.float32)
