"""Wire format of TernGrad (Wen et al., NeurIPS 2017): ternary codes and one shared fp32 scale.

Accelerations: ``hvd_compress/torch/codecs/terngrad.py``, ``hvd_compress/_native``
(``hvdc_terngrad_*``), ``hvd_compress/torch/kernels/terngrad.py`` (Triton),
``hvd_compress/tensorflow/codecs/terngrad.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from hvd_compress.codecs.packing import (
    bytes_f32,
    f32_bytes,
    nan_where_nonfinite,
    pack_base3,
    pack_bits,
    unpack_base3,
    unpack_bits,
)
from hvd_compress.common import base3_nbytes, packed_nbytes
from hvd_compress.core.registry import register_codec
from hvd_compress.core.spec import CodecSpec


@register_codec("terngrad", builtin=True)
@dataclass(frozen=True)
class TernGrad(CodecSpec):
    """TernGrad: each value becomes ``s * sign(x) * Bernoulli(min(|x| / s, 1))``.

    The scale ``s`` is shared: every worker proposes :meth:`local_scale`, the exchange agrees on
    the max over workers (one allreduce-MAX) and passes it to every encode (``scale=``), so all
    payloads of a step carry the same ``s``. Without ``scale=`` the local scale is used.

    Wire format for ``n`` values: ternary codes (0: -s, 1: 0, 2: +s; code 2 for ``u < |x| / s``
    with ``x >= 0``, 0 for ``x < 0``, else 1) packed five per byte (``packing="base3"``:
    ``t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4``) or four per byte (``"2bit"``, low bits first), then the
    fp32 ``s``. A scale that is not positive and finite gives all-zero codes (1); a non-finite
    input sends ``s = NaN``.

    Args:
        clip: the local scale is ``min(max|x|, clip * std(x))`` (unbiased std); ``None``: max|x|.
        packing: ``"base3"`` (1.6 bits per value) or ``"2bit"``.
    """

    clip: Optional[float] = 2.5
    packing: str = "base3"

    pattern = "auto"
    stochastic = True

    def __post_init__(self):
        if self.clip is not None and not (isinstance(self.clip, (int, float)) and self.clip > 0):
            raise ValueError(f"clip must be positive or None, got {self.clip!r}")
        if self.packing not in ("base3", "2bit"):
            raise ValueError(f"packing must be 'base3' or '2bit', got {self.packing!r}")
        if self.clip is not None:  # "clip=3" and clip=3.0 are one codec (one fingerprint)
            object.__setattr__(self, "clip", float(self.clip))

    def alignment(self):
        return 40  # whole bytes for both packings

    def _code_nbytes(self, numel):
        return base3_nbytes(numel) if self.packing == "base3" else packed_nbytes(numel, 2)

    def payload_nbytes(self, numel):
        return self._code_nbytes(numel) + 4

    def local_scale(self, x: np.ndarray) -> np.float32:
        """This worker's proposal: ``min(max|x|, clip * std(x))`` in fp32, NaN if non-finite.

        The std is computed in float64 and rounded once; torch's and TF's fp32 reductions may
        differ from it in the last bits (harmless: the exchange agrees on one scale anyway)."""
        if x.size == 0:
            return np.float32(0)
        s = np.float32(np.abs(x).max())
        if self.clip is not None and x.size > 1:
            with np.errstate(over="ignore", invalid="ignore"):
                std = np.float32(np.asarray(x, np.float64).std(ddof=1))
                s = np.minimum(s, np.float32(self.clip) * std)
        return np.float32(nan_where_nonfinite(s).reshape(())[()])

    def encode(self, x, rng=None, *, noise=None, scale=None):
        s = self.local_scale(x) if scale is None else np.float32(np.asarray(scale, np.float32).reshape(-1)[0])
        n = x.size
        codes = np.ones(n, np.uint8)
        if n and s > 0 and np.isfinite(s):
            if noise is None:
                noise = (rng if rng is not None else np.random.default_rng()).random(n, dtype=np.float32)
            with np.errstate(invalid="ignore"):
                prob = np.minimum(np.abs(x) / s, np.float32(1))
                hit = noise < prob
            codes = np.where(hit, np.where(x < 0, 0, 2), 1).astype(np.uint8)
        if n and not np.isfinite(x).all():
            s = np.float32(np.nan)
        packed = pack_base3(codes) if self.packing == "base3" else pack_bits(codes, 2)
        return np.concatenate([packed, f32_bytes([s])])

    def decode(self, payload, numel):
        nc = self._code_nbytes(numel)
        s = bytes_f32(payload[nc : nc + 4])[0]
        if self.packing == "base3":
            try:
                codes = unpack_base3(payload[:nc], numel)
            except ValueError as exc:
                raise ValueError(
                    f"hvd_compress: malformed {self.describe()} payload for {numel} values: {exc}"
                ) from None
        else:
            codes = unpack_bits(payload[:nc], 2, numel)
        return ((codes.astype(np.float32) - np.float32(1)) * s).astype(np.float32)
