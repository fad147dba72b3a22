"""Framework-neutral pieces shared by the torch and TensorFlow codecs.

Everything here is plain Python: no torch, no TensorFlow. The options every codec takes, its
canonical description and fingerprint and which exchange pattern carries it are
:class:`CodecConfig`. A payload codec's knobs, their validation and its wire-format sizes are its
registered numpy spec's (``hvd_compress/codecs/``), which :class:`SpecFormat` turns into the
framework classes' configuration; ``hvd_compress.torch`` and ``hvd_compress.tensorflow`` add the
tensor math on top::

    class QSGD(NativeDecoding, SpecFormat, Codec):   # hvd_compress/torch/codecs/qsgd.py
        spec = hvd_compress.codecs.QSGD
    class QSGD(SpecFormat, Codec):                   # hvd_compress/tensorflow/codecs/qsgd.py
        spec = hvd_compress.codecs.QSGD

so the same spec string builds codecs with the same settings, the same fingerprint and the same
payload sizes in both frameworks, and one frontend decodes the other's payloads (tested byte for
byte in ``tests/test_tf_torch_wire.py``). The wrappers (error feedback, DoubleSqueeze) and the
multi-round codecs (GradiVeQ, PowerSGD) keep their configuration here.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import re
import typing
import zlib
from typing import Any, Callable, ClassVar, Dict, List, Sequence, Tuple, TypeVar

EXCHANGES = ("auto", "allgather", "reduce_scatter")


def op_name(key: str, suffix: str) -> str:
    """A TF-legal, rank-independent collective name for tensor ``key`` (plus a hash of the exact
    key, so ``a/b`` and ``a_b`` never collide). Here, not in the TF collectives, because the TF
    multi-round codecs name their rounds with it and codecs import nothing from the exchange."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", key)[-80:]
    return f"hvdc_{clean}_{zlib.crc32(key.encode()):08x}_{suffix}"


NONFINITE_POLICIES = ("raise", "propagate")
COMMON_OPTIONS = ("min_numel", "compress_1d", "exchange", "nonfinite", "seed", "hierarchical")
HIERARCHICAL_MODES = ("auto", True, False)
FIXED_WIDTHS = (1, 2, 4, 8)
UNCOMPRESSED = "uncompressed"


# ---------------------------------------------------------------------- payload validation
def check_payload(codec: "CodecConfig", numel: int, nbytes: "int | None", is_uint8: bool, ndim: "int | None") -> None:
    """Raise ``ValueError`` unless a payload is what ``codec`` makes for ``numel`` values: a 1-D
    uint8 tensor of exactly ``codec.payload_nbytes(numel)`` bytes.

    Decoders are where bytes from another rank meet the unpacking code and the C kernels: a short
    payload would read out of bounds (or decode into a shorter tensor), a long one would hide a
    sender/receiver mismatch. ``nbytes``/``ndim`` may be ``None`` where they are not statically
    known (TF graph mode); those parts of the check are then skipped."""
    expected = codec.payload_nbytes(numel)
    problem = None
    if not is_uint8:
        problem = "is not a uint8 tensor"
    elif ndim is not None and ndim != 1:
        problem = f"has {ndim} dimensions, not 1"
    elif nbytes is not None and nbytes != expected:
        problem = f"has {nbytes} bytes"
    if problem is not None:
        raise ValueError(
            f"hvd_compress: malformed {codec.describe()} payload for {numel} values: it "
            f"{problem}, expected a 1-D uint8 tensor of {expected} bytes"
        )


DECODING_METHODS = ("decode", "decode_into", "aggregate")


def payload_validator(check):
    """A decorator that runs ``check(codec, payload, numel)`` on the payload(s) before
    ``decode(payload, numel)``, ``decode_into(payload, out)`` or ``aggregate(payloads, numel)``.
    Each framework's ``Codec.__init_subclass__`` applies it to every subclass's own definitions of
    those methods (:data:`DECODING_METHODS`), so no codec can forget the check."""

    def validates_payloads(method):
        if getattr(method, "validates_payloads", False):
            return method
        name = method.__name__
        if name == "decode":

            def checked(self, payload, numel):
                check(self, payload, numel)
                return method(self, payload, numel)
        elif name == "decode_into":

            def checked(self, payload, out):
                check(self, payload, out.numel())  # torch only: ``out`` is the chunk's fp32 slice
                return method(self, payload, out)
        elif name == "aggregate":

            def checked(self, payloads, numel):
                for payload in payloads:
                    check(self, payload, numel)
                return method(self, payloads, numel)
        else:
            raise TypeError(f"payload validation wraps {DECODING_METHODS}, not {name}")
        checked = functools.wraps(method)(checked)
        checked.validates_payloads = True  # type: ignore[attr-defined]
        return checked

    return validates_payloads


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
    * ``hierarchical`` (default ``"auto"``): topology-aware exchange (torch Horovod frontends,
      :mod:`hvd_compress.torch.hierarchical`): average inside each host uncompressed, run the
      compressed exchange across hosts on a 1/local_size shard per local rank, allgather inside
      the host. ``"auto"`` turns it on where a host holds several ranks and there are several
      hosts; ``True`` forces it (clear error where it cannot run); ``False`` keeps the flat
      exchange among all ranks. It changes who exchanges which payload, not the payload format.
    """

    name: ClassVar[str] = "codec"
    summable: ClassVar[bool] = False  # sum of payloads == payload of the sum (allreduce-able)
    stochastic: ClassVar[bool] = False  # needs random draws (stochastic rounding)
    sparse: ClassVar[bool] = False  # payloads do not re-encode well after summation
    shared_scale: ClassVar[bool] = False  # one scale agreed by allreduce-MAX before encoding

    def __init__(
        self,
        *,
        min_numel: int = 1024,
        compress_1d: bool = False,
        exchange: str = "auto",
        nonfinite: str = "raise",
        seed: int = 0,
        hierarchical="auto",
    ):
        if isinstance(hierarchical, str) and hierarchical.strip().lower() in ("true", "false", "auto"):
            hierarchical = {"true": True, "false": False, "auto": "auto"}[hierarchical.strip().lower()]
        if not any(hierarchical is m or (isinstance(m, str) and hierarchical == m) for m in HIERARCHICAL_MODES):
            raise ValueError(f"hierarchical must be 'auto', True or False, got {hierarchical!r}")
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
        self.hierarchical = hierarchical

    def params(self) -> Dict[str, Any]:
        """The codec-specific settings (what ``from_spec`` accepts besides the common options)."""
        return {}

    def options(self) -> Dict[str, Any]:
        opts = {
            "min_numel": self.min_numel,
            "compress_1d": self.compress_1d,
            "exchange": self.exchange,
            "nonfinite": self.nonfinite,
            "seed": self.seed,
        }
        if self.hierarchical != "auto":  # the default stays out, so existing fingerprints are unchanged
            opts["hierarchical"] = self.hierarchical
        return opts

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


# ---------------------------------------------------------------------- formats from the specs
def _plain(value):
    """A numpy scalar as the Python scalar it holds; anything else as is."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return item()
    return value


def _coerce(hint, value):
    """A knob value as the spec's field type where that loses nothing: numpy scalars as Python
    ones, ``4.0`` as ``4`` for an ``int`` knob, ``0``/``1`` as ``False``/``True`` for a ``bool``
    one (``"signsgd:scaled=0"``). Anything else is left for the spec's validation to judge."""
    value = _plain(value)
    if isinstance(value, bool):
        return value
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if hint is bool and isinstance(value, int) and value in (0, 1):
        return bool(value)
    return value


class SpecFormat(CodecConfig):
    """A framework codec's configuration derived from its registered numpy spec (issue #19: one
    definition per codec). A subclass sets ``spec`` to the :class:`hvd_compress.CodecSpec` class::

        class QSGD(NativeDecoding, SpecFormat, Codec):   # hvd_compress/torch/codecs/qsgd.py
            spec = hvd_compress.codecs.QSGD

    and gets from it:

    * the constructor: the spec's knobs, positional in field order or by keyword, then the common
      options (``QSGD(4, 512, "max", min_numel=0)``); its signature names them, so spec strings
      and ``inspect.signature`` see the knobs. The knobs are validated by building the spec
      (its ``__post_init__``'s ``ValueError``), after the common options; a knob value is first
      made the field's type where that loses nothing (see :func:`_coerce`);
    * the knobs as attributes (``codec.bits``), :meth:`params` (the knobs in field order),
      :meth:`alignment` and :meth:`payload_nbytes`, and the spec's other methods and
      properties (``codec.levels``, ``codec.k(numel)``) where the class has no attribute of that name;
    * ``name`` (the spec's registered name), ``stochastic`` and ``sparse`` (the spec's pattern is
      ``"allgather"``), unless the class sets them. ``summable`` and ``shared_scale`` go with the
      framework's methods (``to_summable``, ``local_scale``) and are set by the class.
    """

    spec: ClassVar[Any] = None  # the registered CodecSpec class

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is None:
            return
        for attr, value in (
            ("name", spec.name),
            ("stochastic", spec.stochastic),
            ("sparse", spec.pattern == "allgather"),
        ):
            if attr not in cls.__dict__:
                setattr(cls, attr, value)
        if "__init__" not in cls.__dict__:
            cls.__init__ = _spec_init(cls, spec)  # type: ignore[method-assign]

    def __init__(self, *args, **options):
        spec = type(self).spec
        if spec is None:
            raise TypeError(f"{type(self).__name__} derives from SpecFormat without setting spec")
        fields = [f for f in dataclasses.fields(spec) if f.init]
        names = [f.name for f in fields]
        if len(args) > len(names):
            raise TypeError(
                f"{type(self).__name__}() takes at most {len(names)} positional knobs {names}, got {len(args)}"
            )
        knobs = dict(zip(names, args))
        for name in names[len(args) :]:
            if name in options:
                knobs[name] = options.pop(name)
        twice = sorted(set(names[: len(args)]) & set(options))
        if twice:
            raise TypeError(f"{type(self).__name__}() got multiple values for {twice}")
        super().__init__(**options)
        hints = typing.get_type_hints(spec)
        self._spec = spec(**{k: _coerce(hints.get(k), v) for k, v in knobs.items()})
        for name in names:
            setattr(self, name, getattr(self._spec, name))

    def __getattr__(self, attr):
        # only reached for attributes the codec lacks: the spec's methods and properties
        # (``levels``, ``k``, TernGrad's ``_code_nbytes``); never dunders (pickling probes them)
        spec = self.__dict__.get("_spec")
        if attr.startswith("__") or spec is None or not hasattr(type(spec), attr):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")
        return getattr(spec, attr)

    def params(self):
        return self._spec.knobs()

    def alignment(self):
        return self._spec.alignment()

    def payload_nbytes(self, numel):
        return self._spec.payload_nbytes(numel)


def _spec_init(cls, spec):
    """``cls.__init__`` with the spec's knobs in its signature."""

    def __init__(self, *args, **options):
        SpecFormat.__init__(self, *args, **options)

    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD)]
    for f in dataclasses.fields(spec):
        if f.init:
            default = f.default if f.default is not dataclasses.MISSING else P.empty
            params.append(P(f.name, P.POSITIONAL_OR_KEYWORD, default=default))
    params.append(P("options", P.VAR_KEYWORD))
    __init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__module__ = cls.__module__
    __init__.__doc__ = f"The knobs of :class:`{spec.__module__}.{spec.__qualname__}`, then the common options."
    return __init__


# ---------------------------------------------------------------------- wrappers
class WrapperFormat(CodecConfig):
    """A codec that delegates its algebra and wire format to ``self.inner``."""

    inner: CodecConfig  # the wrapped codec; set by each framework's __init__ (torch/tf codecs/base.py)

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
            raise ValueError(
                f"DoubleSqueeze needs a non-summable codec; {codec.name} already " "rides a plain allreduce"
            )

    def describe(self):
        return f"{self.name}({self.inner.describe()})"

    def pattern(self, world_size, numel):
        return "reduce_scatter" if numel >= world_size else "allgather"


# ---------------------------------------------------------------------- linear codecs
# GradiVeQ and PowerSGD: the knobs, their validation, the schedule and the geometry are defined
# once here; each framework adds its linear algebra and collectives (torch/codecs/gradiveq.py,
# tensorflow/codecs/gradiveq.py, and powersgd.py beside them). Shapes are given to these helpers
# as ``(F, P)``: ``F`` filters (output channels: torch's first axis, TF's last) of ``P`` values each.
GRADIVEQ_PHASES = ("warmup", "sample", "compress")


def _positive_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def filters_and_positions(shape, filters_axis: int = 0) -> Tuple[int, int]:
    """``(F, P)`` of a kernel: ``F = shape[filters_axis]`` filters of ``P`` values (the product of
    the other axes)."""
    shape = tuple(int(s) for s in shape)
    f = shape[filters_axis]
    p = 1
    for i, s in enumerate(shape):
        if i != filters_axis % len(shape):
            p *= s
    return f, p


def slice_geometry_fp(
    f: int, p: int, slice_size: int, samples: "int | None" = None, samples_per_dim: float = 0.0
) -> Tuple[int, int, int, int, int]:
    """``(F, P, D, K, S)`` for ``F`` filters of ``P`` positions: a GradiVeQ slice holds ``D``
    consecutive positions of all ``F`` filters, ``K = F * D`` values, ``S = P / D`` slices per
    tensor. ``D`` is the largest divisor of ``P`` with ``F * D <= slice_size`` (at least 1, so
    ``K >= F``), so slices tile the tensor exactly: no padding, every slice alike.

    With ``samples`` (sampling steps per cycle) and ``samples_per_dim``, ``D`` is also kept small
    enough that a cycle yields ``samples * S >= samples_per_dim * K`` sampled slices, so the K x K
    covariance is estimated from enough slices to generalize beyond them."""
    return _geometry(int(f), int(p), int(slice_size), samples, float(samples_per_dim))


@functools.lru_cache(maxsize=4096)
def _geometry(f, p, slice_size, samples, samples_per_dim):
    if f <= 0 or p <= 0:
        raise ValueError(f"GradiVeQ cannot slice an empty kernel ({f} filters of {p} values)")
    d = 1
    for cand in range(1, p + 1):
        if p % cand or f * cand > slice_size:
            continue
        if samples is not None and samples * (p // cand) < samples_per_dim * f * cand:
            continue
        d = cand
    return f, p, d, f * d, p // d


def compression_report_rows(layers: Dict[str, Tuple[int, int, int]]) -> Dict[str, Dict[str, Any]]:
    """GradiVeQ's ``compression_report()`` from ``{tensor: (K, d, S)}`` (fitted tensors only):
    per tensor ``K``, ``d``, ``ratio`` (``K/d``) and ``slices``; under ``"_total"`` the
    value-weighted ratio (values / compressed values) and the mean of the layer ratios."""
    # the return type's own rows: "_total" has no single K, d or slice count (those entries are None)
    rows: Dict[str, Dict[str, Any]] = {}
    values, sent = 0, 0
    for key, (k, d, s) in layers.items():
        rows[key] = {"K": k, "d": d, "ratio": k / d, "slices": s}
        values += k * s
        sent += d * s
    if rows:
        rows["_total"] = {
            "K": None,
            "d": None,
            "ratio": values / sent,
            "slices": None,
            "mean_layer_ratio": sum(r["ratio"] for r in rows.values()) / len(rows),
        }
    return rows


class GradiVeQFormat(CodecConfig):
    """GradiVeQ's configuration (both frameworks): knobs, validation, the schedule, the slice
    geometry, and the fallback / sampler codecs built with the framework's ``from_spec``.

    Knobs: ``energy`` (share of the sampled slices' variance the basis keeps, in (0, 1]),
    ``ratio`` (``None``, the default: ``d`` by the energy rule; a number > 1: a fixed ratio,
    ``d = max(1, floor(K / ratio))`` per layer), ``error_feedback`` (carry each worker's projection
    residual into its next gradient; still summable),
    ``warmup_steps`` (>= 0), ``sample_steps`` (>= 1), ``compress_steps`` (>= 0), ``slice_size``
    (largest ``K``, >= 1), ``samples_per_dim`` (>= 0), ``fallback`` and ``sampler`` (codecs or spec
    strings; ``None`` means ``"none"``).
    """

    name = "gradiveq"
    summable = False  # linear within a cycle, but the phases need their own schedule
    filters_axis: ClassVar[int] = 0  # torch's OIHW; TensorFlow's HWIO kernels set -1

    def __init__(
        self,
        energy: float = 0.99,
        warmup_steps: int = 2500,
        sample_steps: int = 100,
        compress_steps: int = 400,
        slice_size: int = 256,
        samples_per_dim: float = 4.0,
        fallback: Any = "qsgd:bits=4",
        sampler: Any = "qsgd:bits=4",
        ratio: Any = None,
        error_feedback: bool = False,
        **options,
    ):
        super().__init__(**options)
        if not 0 < energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {energy}")
        self.energy = float(energy)
        if ratio is not None and not (isinstance(ratio, (int, float)) and ratio >= 1):
            raise ValueError(f"ratio must be None (the energy rule) or a number >= 1, got {ratio!r}")
        self.ratio = None if ratio is None else float(ratio)
        if not isinstance(error_feedback, bool):
            raise ValueError(f"error_feedback must be True or False, got {error_feedback!r}")
        self.error_feedback = error_feedback
        self.warmup_steps = _positive_int("warmup_steps", warmup_steps, 0)
        self.sample_steps = _positive_int("sample_steps", sample_steps, 1)
        self.compress_steps = _positive_int("compress_steps", compress_steps, 0)
        self.slice_size = _positive_int("slice_size", slice_size, 1)
        if not samples_per_dim >= 0:
            raise ValueError(f"samples_per_dim must be >= 0, got {samples_per_dim}")
        self.samples_per_dim = float(samples_per_dim)
        self.fallback = self._sub_codec(fallback, "fallback")
        self.sampler = self._sub_codec(sampler, "sampler")

    @staticmethod
    def build_codec(spec):
        """The framework's ``from_spec`` (set by each framework's GradiVeQ)."""
        raise NotImplementedError

    def _sub_codec(self, spec, what):
        if spec is None:
            spec = "none"
        codec = self.build_codec(spec)
        if isinstance(codec, GradiVeQFormat):
            raise ValueError(f"GradiVeQ's {what} cannot be GradiVeQ itself")
        if isinstance(spec, str):  # built here: one seed and one non-finite policy for the whole codec
            codec.seed, codec.nonfinite = self.seed, self.nonfinite
        return codec

    def params(self):
        return {
            "energy": self.energy,
            "warmup_steps": self.warmup_steps,
            "sample_steps": self.sample_steps,
            "compress_steps": self.compress_steps,
            "slice_size": self.slice_size,
            "samples_per_dim": self.samples_per_dim,
            "fallback": self.fallback.describe(),
            "sampler": self.sampler.describe(),
            **({"ratio": self.ratio} if self.ratio is not None else {}),
            **({"error_feedback": True} if self.error_feedback else {}),
        }

    def fixed_dim(self, k: int) -> "int | None":
        """``d`` for a ``K``-value slice under ``ratio`` (``None`` under the energy rule)."""
        return None if self.ratio is None else max(1, min(k, int(k / self.ratio)))

    def compresses(self, numel, ndim, floating):
        """Conv kernels (3-D or more) by GradiVeQ's rule; other tensors as the fallback says."""
        if ndim >= 3:
            return super().compresses(numel, ndim, floating)
        return self.fallback.compresses(numel, ndim, floating)

    def phase_at(self, step: int) -> Tuple[str, int]:
        """``(phase, position within the phase)`` of exchange number ``step`` of a tensor."""
        if step < self.warmup_steps:
            return "warmup", step
        c = (step - self.warmup_steps) % (self.sample_steps + self.compress_steps)
        if c < self.sample_steps:
            return "sample", c
        return "compress", c - self.sample_steps

    def geometry(self, shape) -> Tuple[int, int, int, int, int]:
        """``(F, P, D, K, S)`` of a conv kernel of this framework's ``shape`` under this codec
        (see :func:`slice_geometry_fp`)."""
        f, p = filters_and_positions(shape, self.filters_axis)
        return slice_geometry_fp(f, p, self.slice_size, self.sample_steps, self.samples_per_dim)

    def payload_nbytes(self, numel):
        return 4 * numel  # depends on the fitted d; see compression_report()


class PowerSGDFormat(CodecConfig):
    """PowerSGD's configuration (both frameworks): knobs, validation and sizes. A tensor is viewed
    as an ``n x m`` matrix, ``n`` its filters / output units (torch's first axis, TensorFlow's
    last), ``m`` the rest (see each framework's ``matrix_shape``)."""

    name = "powersgd"
    summable = False  # linear, but two dependent allreduces: runs through custom_exchange

    def __init__(
        self,
        rank: int = 1,
        start_iter: int = 1000,
        min_compression_rate: float = 2.0,
        error_feedback: bool = True,
        warm_start: bool = True,
        orthogonalization_epsilon: float = 0.0,
        **options,
    ):
        super().__init__(**options)
        if isinstance(rank, bool) or int(rank) != rank or rank < 1:
            raise ValueError(f"PowerSGD rank must be a positive integer, got {rank}")
        if isinstance(start_iter, bool) or int(start_iter) != start_iter or start_iter < 0:
            raise ValueError(f"start_iter must be a non-negative integer, got {start_iter}")
        if not min_compression_rate > 0:
            raise ValueError(f"min_compression_rate must be positive, got {min_compression_rate}")
        if not orthogonalization_epsilon >= 0:
            raise ValueError(f"orthogonalization_epsilon must be >= 0, got {orthogonalization_epsilon}")
        self.rank = int(rank)
        self.start_iter = int(start_iter)
        self.min_compression_rate = float(min_compression_rate)
        self.error_feedback = bool(error_feedback)
        self.warm_start = bool(warm_start)
        self.orthogonalization_epsilon = float(orthogonalization_epsilon)

    def params(self):
        return {
            "rank": self.rank,
            "start_iter": self.start_iter,
            "min_compression_rate": self.min_compression_rate,
            "error_feedback": self.error_feedback,
            "warm_start": self.warm_start,
        }

    @staticmethod
    def matrix_shape(shape) -> Tuple[int, int]:
        """``(n, m)`` of a tensor of this framework's ``shape`` (set by each framework)."""
        raise NotImplementedError

    def effective_rank(self, shape) -> int:
        n, m = self.matrix_shape(shape)
        return max(0, min(n, m, self.rank))

    def worth_compressing(self, shape) -> bool:
        """torch's rule: ``(n + m) * r * min_compression_rate < n * m``."""
        n, m = self.matrix_shape(shape)
        r = self.effective_rank(shape)
        return r > 0 and (n + m) * r * self.min_compression_rate < n * m

    def payload_nbytes_for(self, shape) -> int:
        """Bytes of P and Q for a tensor of ``shape`` (or of the plain fp32 tensor if not worth it)."""
        n, m = self.matrix_shape(shape)
        if not self.worth_compressing(shape):
            return 4 * n * m
        return 4 * (n + m) * self.effective_rank(shape)

    def payload_nbytes(self, numel):
        side = max(1, math.isqrt(max(numel, 1)))  # shape unknown: as if square
        return self.payload_nbytes_for((side, max(1, numel // side)))

    def compression_ratio(self, shape) -> float:
        n, m = self.matrix_shape(shape)
        return 4.0 * n * m / self.payload_nbytes_for(shape)


# ---------------------------------------------------------------------- fused buckets
# The bucket knob of both frontends (hvd_compress.torch.fusion, hvd_compress.tensorflow.frontends.reduce).
DEFAULT_BUCKET_BYTES = 64 << 20
ENV_BUCKET_BYTES = "HVD_COMPRESS_BUCKET_BYTES"
_T = TypeVar("_T")


def bucket_bytes_from_env(default: int = DEFAULT_BUCKET_BYTES) -> int:
    """``HVD_COMPRESS_BUCKET_BYTES`` (bytes; ``0`` = unfused) or ``default``; a clear error if
    malformed."""
    raw = os.environ.get(ENV_BUCKET_BYTES)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{ENV_BUCKET_BYTES}={raw!r}: expected an integer number of bytes " "(0 disables fusion)"
        ) from None
    if value < 0:
        raise ValueError(f"{ENV_BUCKET_BYTES}={raw!r} must be >= 0 (0 disables fusion)")
    return value


def cut_buckets(items: Sequence[_T], nbytes: Callable[[_T], int], limit: int) -> List[List[_T]]:
    """``items`` in order, cut into consecutive buckets of at most ``limit`` bytes (an item larger
    than that is a bucket of its own): the same cut on every rank for the same items."""
    buckets: List[List[_T]] = []
    current: List[_T] = []
    size = 0
    for item in items:
        n = nbytes(item)
        if current and size + n > limit:
            buckets.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        buckets.append(current)
    return buckets
