"""Top-k sparsification with error feedback (Aji & Heafield 2017; Stich et al. 2018)."""
from __future__ import annotations

import math

import torch

from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.codecs.error_feedback import ErrorFeedback


class TopKSparsifier(Codec):
    """Keep the ``k = ceil(ratio * n)`` largest-magnitude values of each chunk.

    Wire format per chunk: ``k`` int32 indices (within the chunk), then ``k`` fp32 values: 64 bits
    per kept value, ``64 * ratio`` bits per value overall (0.64 at ratio 0.01).

    Sparse payloads do not shrink under summation (N workers' top-k sets overlap little), so the
    ``auto`` exchange is allgather + local sum; wrap in :class:`DoubleSqueeze` for a compressed
    reduce-scatter with server-side error feedback.
    """

    name = "topk_sparsifier"
    sparse = True

    def __init__(self, ratio: float = 0.01, **options):
        super().__init__(**options)
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        self.ratio = float(ratio)

    def params(self):
        return {"ratio": self.ratio}

    def k(self, numel):
        return min(numel, max(1, math.ceil(self.ratio * numel))) if numel else 0

    def payload_nbytes(self, numel):
        return 8 * self.k(numel)

    def encode(self, x, generator=None, scale=None):
        k = self.k(x.numel())
        if k == 0:
            return torch.empty(0, dtype=torch.uint8)
        _, idx = torch.topk(torch.nan_to_num(x.abs(), nan=float("inf")), k, sorted=False)
        idx = idx.to(torch.int32)
        values = x[idx.long()].to(torch.float32)
        if not torch.isfinite(x).all():
            values[0] = float("nan")  # a non-finite gradient must not pass as a finite one
        return torch.cat([idx.view(torch.uint8), values.view(torch.uint8)])

    def _unpack(self, payload, numel):
        k = self.k(numel)
        idx = payload[:4 * k].clone().view(torch.int32).long()
        values = payload[4 * k:8 * k].clone().view(torch.float32)
        return idx, values

    def decode(self, payload, numel):
        out = torch.zeros(numel)
        if numel:
            idx, values = self._unpack(payload, numel)
            out[idx] = values
        return out

    def aggregate(self, payloads, numel):
        out = torch.zeros(numel)
        for p in payloads:
            idx, values = self._unpack(p, numel)
            out.index_add_(0, idx, values)
        return out.div_(len(payloads))


class TopK(ErrorFeedback):
    """Top-k sparsification with error feedback (the dropped values re-enter through the residual).

    How to tune: ``ratio=0.01`` is the common default; below 0.001 convergence slows unless the
    learning rate warms up. Pair with a few uncompressed warm-up steps for best results.

    Example::

        compression = hvd_compress.torch.TopK(ratio=0.01)
    """

    name = "topk"

    def __init__(self, ratio: float = 0.01, **options):
        super().__init__(TopKSparsifier(ratio), **options)
