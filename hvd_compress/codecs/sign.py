"""Wire formats of the sign codecs: ``efsign`` (EF-SignSGD's scaled sign) and ``signsgd``.

Both send one bit per value and one fp32 scale per chunk; the error feedback of EF-SignSGD is a
wrapper and does not change the bytes. Accelerations: ``hvd_compress/torch/codecs/efsign.py`` and
``signsgd.py``, ``hvd_compress/_native`` (``hvdc_sign_*``), ``hvd_compress/torch/kernels/sign.py``
(Triton), ``hvd_compress/tensorflow/codecs/efsign.py`` and ``signsgd.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvd_compress.codecs.packing import bytes_f32, f32_bytes, nan_where_nonfinite, pack_bits, unpack_bits
from hvd_compress.common import packed_nbytes
from hvd_compress.core.registry import register_codec
from hvd_compress.core.spec import CodecSpec


def mean_abs(x: np.ndarray) -> np.float32:
    """``mean(|x|)`` summed in float64 and rounded once (NaN if non-finite, 0 if empty).

    Identical in every kernel whenever the fp32 sum is exact; elsewhere torch's and TF's fp32
    sums may differ from it in the last bit."""
    if x.size == 0:
        return np.float32(0)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.float32(nan_where_nonfinite(np.float32(np.abs(x.astype(np.float64)).sum() / x.size)).reshape(())[()])


def sign_payload(x: np.ndarray, scale) -> np.ndarray:
    """``ceil(n / 8)`` bytes of sign bits (1: ``x >= 0``, first value in the lowest bit), then the
    fp32 ``scale``."""
    return np.concatenate([pack_bits((x >= 0).astype(np.uint8), 1), f32_bytes([scale])])


def signs_and_scale(payload: np.ndarray, numel: int):
    nb = packed_nbytes(numel, 1)
    signs = unpack_bits(payload[:nb], 1, numel).astype(np.float32) * np.float32(2) - np.float32(1)
    return signs, bytes_f32(payload[nb : nb + 4])[0]


@register_codec("efsign", builtin=True)
@dataclass(frozen=True)
class ScaledSign(CodecSpec):
    """Scaled sign, ``mean(|x|) * sign(x)`` (EF-SignSGD's compressor, Karimireddy et al. 2019).

    Wire format for ``n`` values: ``ceil(n / 8)`` bytes of sign bits (1: non-negative; NaN: 0),
    then the fp32 ``mean(|x|)`` (:func:`mean_abs`). Decode: ``(2 bit - 1) * scale``.
    """

    pattern = "auto"
    stochastic = False

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, 1) + 4

    def encode(self, x, rng=None, *, noise=None):
        return sign_payload(x, mean_abs(x))

    def decode(self, payload, numel):
        signs, s = signs_and_scale(payload, numel)
        return (signs * s).astype(np.float32)


@register_codec("signsgd", builtin=True)
@dataclass(frozen=True)
class SignSGD(CodecSpec):
    """signSGD with majority vote (Bernstein et al. 2018): sign bits and one fp32 scale.

    Wire format: as :class:`ScaledSign`; the scale is ``mean(|x|)`` (``scaled=True``) or, for
    the bare vote, 1.0 (0.0 for an all-zero chunk, which must stay exactly zero); NaN for a
    non-finite input. Decode: ``(2 bit - 1) * scale``. The exchange's aggregate is the vote
    (:meth:`aggregate`), not the mean of the decodes.

    Args:
        scaled: multiply the vote by the workers' mean ``|x|`` (trains with an SGD learning
            rate); ``False``: a bare +-1 vote.
    """

    scaled: bool = True

    pattern = "auto"
    stochastic = False

    def __post_init__(self):
        if not isinstance(self.scaled, (bool, np.bool_)):
            raise ValueError(f"scaled must be True or False, got {self.scaled!r}")

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, 1) + 4

    def encode(self, x, rng=None, *, noise=None):
        if self.scaled:
            s = mean_abs(x)
        else:
            s = np.float32(x.size > 0 and np.abs(x).max() > 0)
            if x.size and not np.isfinite(x).all():
                s = np.float32(np.nan)
        return sign_payload(x, s)

    def decode(self, payload, numel):
        signs, s = signs_and_scale(payload, numel)
        return (signs * s).astype(np.float32)

    def aggregate(self, payloads, numel: int) -> np.ndarray:
        """The majority vote of several workers' payloads: ``sign(sum of signs)``, ties to the sign
        of the scale-weighted sum, then to +1; times the mean of the scales."""
        votes = np.zeros(numel, np.float32)
        weighted = np.zeros(numel, np.float32)
        scale = np.float32(0)
        for p in payloads:
            signs, s = signs_and_scale(np.asarray(p, np.uint8), numel)
            votes += signs
            weighted += signs * s
            scale = np.float32(scale + s)
        direction = np.sign(votes)
        direction = np.where(direction == 0, np.where(weighted < 0, np.float32(-1), np.float32(1)), direction)
        return (direction * np.float32(scale / np.float32(len(payloads)))).astype(np.float32)
