"""Framework-neutral pieces shared by the torch and TensorFlow codecs.

Everything here is plain Python: no torch, no TensorFlow. A codec's *configuration* (its knobs,
their validation, its canonical description and fingerprint, its wire-format sizes and which
exchange pattern carries it) is defined once here; ``hvd_compress.torch`` and
``hvd_compress.tensorflow`` add the tensor math on top::

    class QSGD(QSGDFormat, Codec): ...          # hvd_compress/torch/codecs/qsgd.py
    class QSGD(QSGDFormat, Codec): ...          # hvd_compress/tensorflow/codecs/qsgd.py

so the same spec string builds codecs with the same settings, the same fingerprint and the same
payload sizes in both frameworks, and one frontend decodes the other's payloads (tested byte for
byte in ``tests/test_tf_torch_wire.py``).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Dict, List, Tuple

EXCHANGES = ("auto", "allgather", "reduce_scatter")
NONFINITE_POLICIES = ("raise", "propagate")
COMMON_OPTIONS = ("min_numel", "compress_1d", "exchange", "nonfinite", "seed")
FIXED_WIDTHS = (1, 2, 4, 8)
UNCOMPRESSED = "uncompressed"


# ---------------------------------------------------------------------- sizes and chunking
def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes used by ``numel`` codes of ``bits`` bits each (``bits`` in {1, 2, 4, 8})."""
    if bits not in FIXED_WIDTHS:
        raise ValueError(f"bits must be one of {FIXED_WIDTHS}, got {bits}")
    per_byte = 8 // bits
    return -(-numel // per_byte)


def base3_nbytes(numel: int) -> int:
    """Bytes used by ``numel`` ternary codes packed five to a byte."""
    return -(-numel // 5)


def chunk_bounds(numel: int, parts: int, align: int) -> List[Tuple[int, int]]:
    """Split ``numel`` values into ``parts`` balanced chunks that start at multiples of ``align``
    (whole buckets) where every chunk can still be non-empty, else of 8 (whole packed bytes),
    else of 1."""
    for step in (align, 8, 1):
        units = -(-numel // step)
        base, extra = divmod(units, parts)
        if base == 0 and step > 1:
            continue
        starts, pos = [], 0
        for i in range(parts):
            starts.append(min(pos * step, numel))
            pos += base + (i < extra)
        ends = starts[1:] + [numel]
        return list(zip(starts, ends))
    raise AssertionError("unreachable")


def mix(*parts: int) -> int:
    """A 63-bit hash of integers (seed, rank, step, name hash, chunk, phase): RNG stream seeds."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def ring_allreduce_bytes(nbytes: int, size: int) -> float:
    """Bytes one worker sends in a ring allreduce of ``nbytes``."""
    return 2.0 * (size - 1) / size * nbytes


# ---------------------------------------------------------------------- configuration base
class CodecConfig:
    """Options every codec takes, its description and its exchange pattern.

    Common options (all codecs; also valid in spec strings):

    * ``min_numel`` (default 1024): tensors with fewer values go uncompressed (fp32 allreduce).
    * ``compress_1d`` (default False): whether 1-D tensors (biases, norms) are compressed at all.
    * ``exchange``: ``"auto"`` (allgather for 2 workers or sparse codecs, compressed
      reduce-scatter + allgather from 3), ``"allgather"`` or ``"reduce_scatter"``.
    * ``nonfinite``: ``"raise"`` (default) or ``"propagate"`` (see the frameworks' docs).
    * ``seed`` (default 0): base of the stochastic-rounding streams.
    """

    name: ClassVar[str] = "codec"
    summable: ClassVar[bool] = False      # sum of payloads == payload of the sum (allreduce-able)
    stochastic: ClassVar[bool] = False    # needs random draws (stochastic rounding)
    sparse: ClassVar[bool] = False        # payloads do not re-encode well after summation
    shared_scale: ClassVar[bool] = False  # one scale agreed by allreduce-MAX before encoding

    def __init__(self, *, min_numel: int = 1024, compress_1d: bool = False,
                 exchange: str = "auto", nonfinite: str = "raise", seed: int = 0):
        if exchange not in EXCHANGES:
            raise ValueError(f"exchange must be one of {EXCHANGES}, got {exchange!r}")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        if int(min_numel) < 0:
            raise ValueError(f"min_numel must be >= 0, got {min_numel}")
        self.min_numel = int(min_numel)
        self.compress_1d = bool(compress_1d)
        self.exchange = exchange
        self.nonfinite = nonfinite
        self.seed = int(seed)

    def params(self) -> Dict[str, Any]:
        """The codec-specific settings (what ``from_spec`` accepts besides the common options)."""
        return {}

    def options(self) -> Dict[str, Any]:
        return {"min_numel": self.min_numel, "compress_1d": self.compress_1d,
                "exchange": self.exchange, "nonfinite": self.nonfinite, "seed": self.seed}

    def describe(self) -> str:
        """Canonical description: every setting that changes the bytes on the wire."""
        inner = ",".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({inner})"

    def fingerprint(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options().items())
        return f"{self.describe()}[{opts}]"

    def __repr__(self) -> str:
        return self.describe()

    def compresses(self, numel: int, ndim: int, floating: bool) -> bool:
        """Whether a tensor of this size, rank and kind is compressed (else: plain allreduce)."""
        if not floating or numel == 0:
            return False
        if ndim <= 1 and not self.compress_1d:
            return False
        return numel >= self.min_numel

    def pattern(self, world_size: int, numel: int) -> str:
        """Which exchange carries this codec: ``allreduce``, ``allgather`` or ``reduce_scatter``."""
        if self.summable:
            return "allreduce"
        if self.exchange != "auto":
            if self.exchange == "reduce_scatter" and numel < world_size:
                return "allgather"
            return self.exchange
        if self.sparse or world_size <= 2 or numel < world_size * 8:
            return "allgather"
        return "reduce_scatter"

    def alignment(self) -> int:
        """Chunks for the reduce-scatter start at multiples of this (the bucket size)."""
        return 8

    def payload_nbytes(self, numel: int) -> int:
        raise NotImplementedError

    def nominal_bits(self, numel: int = 1 << 20) -> float:
        """Bits per value on the wire for a tensor of ``numel`` values, scales included."""
        return 8.0 * self.payload_nbytes(numel) / numel


# ---------------------------------------------------------------------- per-algorithm formats
class NoCompressionFormat(CodecConfig):
    """fp32 as is (4 bytes per value, little-endian)."""
    name = "none"
    summable = True

    def payload_nbytes(self, numel):
        return 4 * numel


class FP16Format(CodecConfig):
    """IEEE half precision (2 bytes per value); summable by the allreduce itself."""
    name = "fp16"
    summable = True

    def payload_nbytes(self, numel):
        return 2 * numel


class BF16Format(CodecConfig):
    """bfloat16, round to nearest even (2 bytes per value); summed in fp32 after decoding."""
    name = "bf16"

    def payload_nbytes(self, numel):
        return 2 * numel


class QSGDFormat(CodecConfig):
    """QSGD: ``ceil(n * bits / 8)`` bytes of codes (level + s, low bits first), then one fp32
    scale per bucket of ``bucket_size`` values."""
    name = "qsgd"
    stochastic = True

    def __init__(self, bits: int = 4, bucket_size: int = 512, norm: str = "max", **options):
        super().__init__(**options)
        if bits not in (2, 4, 8):
            raise ValueError(f"QSGD bits must be 2, 4 or 8 (fixed-width packing), got {bits}")
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be positive, got {bucket_size}")
        if norm not in ("max", "l2"):
            raise ValueError(f"norm must be 'max' or 'l2', got {norm!r}")
        self.bits, self.bucket_size, self.norm = int(bits), int(bucket_size), norm
        self.levels = 2 ** (self.bits - 1) - 1

    def params(self):
        return {"bits": self.bits, "bucket_size": self.bucket_size, "norm": self.norm}

    def alignment(self):
        return self.bucket_size

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, self.bits) + 4 * (-(-numel // self.bucket_size))


class TernGradFormat(CodecConfig):
    """TernGrad: ternary codes (0: -s, 1: 0, 2: +s) packed five per byte (``base3``) or four per
    byte (``2bit``), then the fp32 scale ``s`` shared by every worker."""
    name = "terngrad"
    stochastic = True
    shared_scale = True

    def __init__(self, clip: "float | None" = 2.5, packing: str = "base3", **options):
        super().__init__(**options)
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be positive or None, got {clip}")
        if packing not in ("base3", "2bit"):
            raise ValueError(f"packing must be 'base3' or '2bit', got {packing!r}")
        self.clip = None if clip is None else float(clip)
        self.packing = packing

    def params(self):
        return {"clip": self.clip, "packing": self.packing}

    def alignment(self):
        return 40  # whole bytes for both packings, so chunk payloads never share a byte

    def _code_nbytes(self, numel):
        return base3_nbytes(numel) if self.packing == "base3" else packed_nbytes(numel, 2)

    def payload_nbytes(self, numel):
        return self._code_nbytes(numel) + 4


class OneBitQuantizerFormat(CodecConfig):
    """1-bit: ``ceil(n / 8)`` bytes of bits (1: non-negative), then per bucket the fp32 pair
    (mean of non-negatives, mean of negatives)."""
    name = "onebit_quantizer"

    def __init__(self, bucket_size: int = 1024, **options):
        super().__init__(**options)
        if bucket_size < 8 or bucket_size % 8:
            raise ValueError(f"bucket_size must be a positive multiple of 8, got {bucket_size}")
        self.bucket_size = int(bucket_size)

    def params(self):
        return {"bucket_size": self.bucket_size}

    def alignment(self):
        return self.bucket_size

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, 1) + 8 * (-(-numel // self.bucket_size))


class ScaledSignFormat(CodecConfig):
    """Scaled sign: ``ceil(n / 8)`` bytes of sign bits (1: non-negative), then the fp32 mean |x|."""
    name = "scaled_sign"

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, 1) + 4


class SignSGDFormat(CodecConfig):
    """signSGD: ``ceil(n / 8)`` bytes of sign bits (1: non-negative), then one fp32 scale."""
    name = "signsgd"

    def __init__(self, scaled: bool = True, **options):
        super().__init__(**options)
        self.scaled = bool(scaled)

    def params(self):
        return {"scaled": self.scaled}

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, 1) + 4


class TopKFormat(CodecConfig):
    """Top-k: ``k`` int32 indices in ascending order, then their ``k`` fp32 values.

    Which ``k``: the ``k = ceil(ratio * n)`` largest magnitudes (NaN counts as larger than
    anything, +-Inf as the largest finite value); ties at the k-th magnitude go to the lower
    indices. This canonical choice makes the payload identical in every framework.
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


# ---------------------------------------------------------------------- wrappers
class WrapperFormat(CodecConfig):
    """A codec that delegates its algebra and wire format to ``self.inner``."""

    @property
    def summable(self):  # type: ignore[override]
        return self.inner.summable

    @property
    def stochastic(self):  # type: ignore[override]
        return self.inner.stochastic

    @property
    def sparse(self):  # type: ignore[override]
        return self.inner.sparse

    @property
    def shared_scale(self):  # type: ignore[override]
        return self.inner.shared_scale

    def params(self):
        return self.inner.params()

    def describe(self) -> str:
        return f"{self.name}({self.inner.describe()})"

    def alignment(self):
        return self.inner.alignment()

    def payload_nbytes(self, numel):
        return self.inner.payload_nbytes(numel)


class ErrorFeedbackFormat(WrapperFormat):
    """Error feedback: ``p = g + e``; send ``C(p)``; keep ``e = p - C(p)``."""
    name = "ef"
    worker_feedback = True

    def describe(self):
        # Named algorithms built on feedback (OneBit, EFSign, TopK) describe themselves by name.
        if self.name == ErrorFeedbackFormat.name:
            return f"{self.name}({self.inner.describe()})"
        return CodecConfig.describe(self)


class DoubleSqueezeFormat(WrapperFormat):
    """DoubleSqueeze: worker- and server-side error feedback over the compressed reduce-scatter."""
    name = "doublesqueeze"

    @staticmethod
    def check_inner(codec, base_cls) -> None:
        if not isinstance(codec, base_cls):
            raise TypeError(f"DoubleSqueeze wraps an hvd_compress codec, got {codec!r}")
        if codec.summable:
            raise ValueError(f"DoubleSqueeze needs a non-summable codec; {codec.name} already "
                             "rides a plain allreduce")

    def describe(self):
        return f"{self.name}({self.inner.describe()})"

    def pattern(self, world_size, numel):
        return "reduce_scatter" if numel >= world_size else "allgather"
