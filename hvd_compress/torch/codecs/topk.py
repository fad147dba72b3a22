"""Top-k sparsification with error feedback (Aji & Heafield 2017; Stich et al. 2018)."""

from __future__ import annotations

import torch

from hvd_compress._native import ops as native
from hvd_compress.codecs import topk as _specs
from hvd_compress.common import SpecFormat
from hvd_compress.torch import kernels
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.codecs.error_feedback import ErrorFeedback
from hvd_compress.torch.finite import all_finite


class TopKSparsifier(SpecFormat, Codec):
    """Keep the ``k = ceil(ratio * n)`` largest-magnitude values of each chunk.

    Wire format per chunk: ``k`` int32 indices (within the chunk, ascending), then ``k`` fp32
    values: 64 bits per kept value, ``64 * ratio`` bits per value overall (0.64 at ratio 0.01).
    Ties at the k-th magnitude go to the lower indices, so the payload is canonical (identical in
    torch and TensorFlow, see :class:`hvd_compress.codecs.TopK`).

    Sparse payloads do not shrink under summation (N workers' top-k sets overlap little), so the
    ``auto`` exchange is allgather + local sum; wrap in :class:`DoubleSqueeze` for a compressed
    reduce-scatter with server-side error feedback.
    """

    spec = _specs.TopK
    name = "topk_sparsifier"  # the spec's "topk" is TopK, with error feedback

    def encode(self, x, generator=None, scale=None):
        k = self.k(x.numel())
        path = self.plan.path(x)
        if path == "triton":  # selection and packing on the device
            return kernels.topk_encode(x, k)
        # the native kernel's sampled-threshold selection: the same bytes
        out = native.topk_encode(x, k) if path == "native" else None
        if out is not None:
            return out
        if k == 0:
            return torch.empty(0, dtype=torch.uint8)
        mag = torch.nan_to_num(x.abs(), nan=float("inf"))
        # Canonical selection: everything above the k-th magnitude, then the lowest-index ties.
        kth = torch.topk(mag, k, sorted=False).values.min()
        above = mag > kth
        ties = mag == kth
        ties &= torch.cumsum(ties, 0) <= k - int(above.sum())
        idx = torch.nonzero(above | ties).view(-1).to(torch.int32)
        values = x[idx.long()].to(torch.float32)
        if not all_finite(x):
            values[0] = float("nan")  # a non-finite gradient must not pass as a finite one
        return torch.cat([idx.view(torch.uint8), values.view(torch.uint8)])

    def _unpack(self, payload, numel):
        k = self.k(numel)
        idx = payload[: 4 * k].clone().view(torch.int32).long()
        values = payload[4 * k : 8 * k].clone().view(torch.float32)
        if k and not (0 <= int(idx.min()) and int(idx.max()) < numel):
            raise ValueError(
                f"hvd_compress: malformed {self.describe()} payload for {numel} values: "
                f"indices span [{int(idx.min())}, {int(idx.max())}], outside [0, {numel})"
            )
        return idx, values

    def decode(self, payload, numel):
        if self.plan.path(payload) == "triton":
            return kernels.topk_decode(payload, numel, self.k(numel))
        out = torch.zeros(numel)
        if numel:
            idx, values = self._unpack(payload, numel)
            out[idx] = values
        return out

    def aggregate(self, payloads, numel):
        if payloads and self.plan.path(*payloads) == "triton":
            return kernels.topk_aggregate(payloads, numel, self.k(numel))
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
