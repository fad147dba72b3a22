"""Wire format of top-k sparsification (Aji & Heafield 2017; Stich et al. 2018).

The registered ``topk`` is the sparsifier's format; the error feedback is a wrapper and does not
change the bytes. Accelerations: ``hvd_compress/torch/codecs/topk.py``,
``hvd_compress/torch/kernels/topk.py`` (Triton), ``hvd_compress/tensorflow/codecs/topk.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hvd_compress.core.registry import register_codec
from hvd_compress.core.spec import CodecSpec


@register_codec("topk", builtin=True)
@dataclass(frozen=True)
class TopK(CodecSpec):
    """Keep the ``k = min(n, max(1, ceil(ratio * n)))`` largest magnitudes of each chunk.

    Which ``k`` (canonical, so every kernel sends the same bytes): every value whose magnitude is
    above the k-th largest, then the lowest-index values tied with it. NaN counts as larger than
    anything, +-Inf as the largest finite value.

    Wire format: ``k`` little-endian int32 indices (within the chunk, ascending), then their ``k``
    fp32 values (the first one NaN if the chunk held a non-finite value). Decode: zeros with the
    values scattered in; indices outside ``[0, numel)`` are a ``ValueError``.

    Args:
        ratio: the share of values kept, in (0, 1] (64 * ratio bits per value).
    """

    ratio: float = 0.01

    pattern = "allgather"  # sparse: summed payloads do not re-encode well
    stochastic = False

    def __post_init__(self):
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio!r}")
        object.__setattr__(self, "ratio", float(self.ratio))

    def k(self, numel: int) -> int:
        return min(numel, max(1, math.ceil(self.ratio * numel))) if numel else 0

    def payload_nbytes(self, numel):
        return 8 * self.k(numel)

    def indices(self, x: np.ndarray) -> np.ndarray:
        """The canonical ``k`` indices (ascending int32)."""
        k = self.k(x.size)
        if k == 0:
            return np.zeros(0, np.int32)
        mag = np.nan_to_num(np.abs(x), nan=np.inf)  # and +-Inf -> the largest finite value
        kth = np.partition(mag, mag.size - k)[mag.size - k]
        above = mag > kth
        ties = mag == kth
        ties &= np.cumsum(ties) <= k - int(above.sum())
        return np.flatnonzero(above | ties).astype(np.int32)

    def encode(self, x, rng=None, *, noise=None):
        idx = self.indices(x)
        values = x[idx].astype(np.float32)
        if idx.size and not np.isfinite(x).all():
            values[0] = np.float32(np.nan)  # a non-finite gradient must not pass as a finite one
        return np.concatenate([idx.astype("<i4").view(np.uint8), values.astype("<f4").view(np.uint8)])

    def unpack(self, payload: np.ndarray, numel: int):
        """``(indices, values)`` of a payload, the indices checked to lie in ``[0, numel)``."""
        k = self.k(numel)
        idx = payload[: 4 * k].view("<i4").astype(np.int64)
        values = payload[4 * k : 8 * k].view("<f4").astype(np.float32)
        if k and not (idx.min() >= 0 and idx.max() < numel):
            raise ValueError(
                f"hvd_compress: malformed {self.describe()} payload for {numel} values: "
                f"indices span [{idx.min()}, {idx.max()}], outside [0, {numel})"
            )
        return idx, values

    def decode(self, payload, numel):
        out = np.zeros(numel, np.float32)
        if numel:
            idx, values = self.unpack(payload, numel)
            out[idx] = values
        return out
