"""``CodecSpec``: one codec, defined once, framework-neutral (numpy only).

A spec is a frozen dataclass whose fields are the codec's knobs. Its numpy :meth:`CodecSpec.encode`
/ :meth:`CodecSpec.decode` pair *is* the wire format: torch, C, TensorFlow (and GPU) kernels are
accelerations that must produce payloads this reference decodes to the same values. A codec that
has nothing but its spec still runs everywhere through the reference backend
(``hvd_compress.torch.from_spec("mycodec")``, ``hvd_compress.tensorflow.from_spec("mycodec")``).

Writing one (the whole contract; see ``docs/extending.md`` and ``examples/custom_codec.py``)::

    from dataclasses import dataclass
    import numpy as np
    import hvd_compress

    @hvd_compress.register_codec("signmean")
    @dataclass(frozen=True)
    class SignMean(hvd_compress.CodecSpec):
        \"\"\"Sign bits plus the mean |x|.\"\"\"
        stochastic = False

        def payload_nbytes(self, numel):
            return -(-numel // 8) + 4

        def encode(self, x, rng, *, noise=None):
            bits = np.packbits(x >= 0, bitorder="little")
            return np.concatenate([bits, np.float32([np.abs(x).mean() if x.size else 0]).view(np.uint8)])

        def decode(self, payload, numel):
            signs = np.unpackbits(payload[:-4], count=numel, bitorder="little").astype(np.float32)
            return (signs * 2 - 1) * payload[-4:].view(np.float32)[0]
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Optional

import numpy as np

from hvd_compress.common import EXCHANGES

PATTERNS = tuple(p for p in EXCHANGES)  # "auto", "allgather", "reduce_scatter": CodecConfig's vocabulary


@dataclasses.dataclass(frozen=True)
class CodecSpec:
    """Base class of a codec definition: subclass it as a ``@dataclass(frozen=True)`` whose fields
    are the knobs, and register it with :func:`hvd_compress.register_codec`.

    Override:

    * :meth:`payload_nbytes` ``(numel) -> int``: exact bytes of the payload for ``numel`` values;
      every rank computes it alone, so it may depend only on ``numel`` and the knobs.
    * :meth:`encode` ``(x, rng, *, noise=None) -> uint8 array``: ``x`` is a 1-D float32 array
      (possibly empty); ``rng`` a ``numpy.random.Generator`` seeded per (seed, rank, step, tensor,
      chunk), so runs are reproducible; ``noise``, when given, holds one float32 uniform in
      [0, 1) per value and replaces the draws from ``rng`` (tests feed two implementations the
      same draws with it). Must return exactly ``payload_nbytes(x.size)`` bytes.
    * :meth:`decode` ``(payload, numel) -> float32 array`` of ``numel`` values.
    * ``__post_init__``: validate the knobs, raising ``ValueError`` that says what is allowed.

    Class attributes (set in the class body):

    * ``pattern``: the exchange that carries it: ``"allgather"`` (default: every worker's payload
      to everyone, one quantization), ``"reduce_scatter"`` (each rank owns 1/N of the tensor,
      averages it and re-encodes the mean: traffic like a ring allreduce, two quantizations) or
      ``"auto"`` (allgather at 2 workers, reduce-scatter from 3). The common option ``exchange=``
      overrides it per run.
    * ``stochastic`` (default True): whether encode uses ``rng``/``noise``. False skips making a
      generator per chunk.
    * ``name``: set by :func:`hvd_compress.register_codec`.
    * ``bits_note`` (default None): for the README's codec table, the bits per value in words when
      they depend on more than the tensor's length (GradiVeQ's phases); None shows
      :meth:`nominal_bits`.

    How to tune: the knobs are the dataclass fields, set from spec strings
    (``"mycodec:bucket_size=128"``) or keywords (``MyCodec(bucket_size=128)``).
    """

    name: ClassVar[str] = ""
    pattern: ClassVar[str] = "allgather"
    stochastic: ClassVar[bool] = True
    bits_note: ClassVar[Optional[str]] = None

    # ------------------------------------------------------------------ the codec (override)
    def payload_nbytes(self, numel: int) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define payload_nbytes(numel)")

    def encode(self, x: np.ndarray, rng: np.random.Generator, *, noise: Optional[np.ndarray] = None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define encode(x, rng, *, noise=None)")

    def decode(self, payload: np.ndarray, numel: int) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define decode(payload, numel)")

    def alignment(self) -> int:
        """Reduce-scatter chunks start at multiples of this (return the bucket size for bucketed
        codecs, so chunks hold whole buckets; 8 keeps whole packed bytes)."""
        return 8

    # ------------------------------------------------------------------ derived
    def knobs(self) -> Dict[str, Any]:
        """The knob values, in field order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        """``name(k=v,...)``: every setting that changes the bytes on the wire."""
        inner = ",".join(f"{k}={v}" for k, v in self.knobs().items())
        return f"{self.name or type(self).__name__}({inner})"

    def fingerprint(self) -> str:
        """Stable identity of the wire format (name and knobs); ranks must agree on it."""
        return self.describe()

    def spec_string(self) -> str:
        """``name:k=v,...``, which :func:`hvd_compress.reference` and ``from_spec`` build back."""
        items = ",".join(f"{k}={v}" for k, v in self.knobs().items())
        return f"{self.name}:{items}" if items else self.name

    def nominal_bits(self, numel: int = 1 << 20) -> float:
        """Bits per value on the wire for a tensor of ``numel`` values (scales included)."""
        return 8.0 * self.payload_nbytes(numel) / numel
