"""The codec interface: pure tensor math, declared algebra, explicit per-name state.

A codec turns a flat fp32 tensor into a *payload* (one contiguous uint8 tensor: packed codes, then
per-bucket scales, little-endian) and back. The math methods (:meth:`Codec.encode`,
:meth:`Codec.decode`, :meth:`Codec.aggregate`) are pure functions of their arguments; whatever must
persist across steps (error-feedback residuals, RNG step counters) lives in :attr:`Codec.state`, a
typed dataclass the codec declares as ``State`` (:mod:`hvd_compress.core.state`; one field per
group, each a dict keyed by tensor name), saved by :meth:`Codec.state_dict`.

Every codec is also a Horovod ``Compressor``: pass it as ``compression=`` to
``hvd.DistributedOptimizer`` and it runs its own bit-packed exchange (see ``hvd_compress.torch.frontends.stock``).
That engine is a frontend, a layer above the codecs: this module does not import it; the package
(``hvd_compress/torch/__init__.py``) installs it with :func:`install_stock_engine`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from hvd_compress._native import ops as native_ops
from hvd_compress.core.state import TensorState
from hvd_compress.torch import kernels
from hvd_compress.torch.kernels import backend

try:  # Subclass Horovod's Compressor where Horovod is installed; the codecs work without it.
    from horovod.torch.compression import Compressor as _HorovodCompressor
except Exception:  # pragma: no cover - exercised only without Horovod

    class _HorovodCompressor:  # type: ignore[no-redef]
        pass


from hvd_compress.common import EXCHANGES, NONFINITE_POLICIES  # noqa: F401 (re-exported)
from hvd_compress.common import CodecConfig, DECODING_METHODS, WrapperFormat, check_payload, payload_validator

Bounds = Sequence[Tuple[int, int]]
Draw = Callable[[int, int], Optional[torch.Generator]]


def check_torch_payload(codec, payload, numel: int) -> None:
    """``ValueError`` naming ``codec`` unless ``payload`` is a 1-D uint8 tensor of exactly
    ``codec.payload_nbytes(numel)`` bytes (see :func:`hvd_compress.common.check_payload`)."""
    if isinstance(payload, torch.Tensor):
        check_payload(codec, numel, payload.numel(), payload.dtype == torch.uint8, payload.dim())
    else:
        check_payload(codec, numel, None, False, None)


validates_payloads = payload_validator(check_torch_payload)

# Builds the engine behind Codec.compress/decompress (hvd_compress.torch.frontends.stock.StockEngine).
_stock_engine: Optional[Callable[["Codec"], Any]] = None


def install_stock_engine(factory: Callable[["Codec"], Any]) -> None:
    """Install ``factory(codec) -> engine`` for the Horovod ``Compressor`` API (``compress`` /
    ``decompress``). Imports flow one way, codecs -> exchange -> frontends, so the codec layer
    does not import the stock-API engine; ``hvd_compress.torch`` installs it when imported (which
    Python does before any of its submodules, so every codec finds it)."""
    global _stock_engine
    _stock_engine = factory


class Codec(_HorovodCompressor, CodecConfig):
    """Base class of every hvd_compress torch codec.

    The configuration (common options ``min_numel``, ``compress_1d``, ``exchange``, ``nonfinite``,
    ``seed``; ``describe``/``fingerprint``; ``pattern``; payload sizes) is framework-neutral and
    lives in :class:`hvd_compress.common.CodecConfig`, shared with ``hvd_compress.tensorflow``; a
    payload codec's knobs, validation and sizes come from its numpy spec through
    :class:`hvd_compress.common.SpecFormat` (the wrappers and the multi-round codecs keep their
    ``*Format`` classes there). In torch:

    * ``nonfinite="raise"`` (default) raises ``FloatingPointError`` naming the tensor on every
      rank when any rank's gradient holds NaN/Inf; ``"propagate"`` passes the non-finite values
      through (the affected buckets become NaN on every rank, as with an fp32 allreduce) so AMP's
      ``GradScaler`` can skip the step; error-feedback residuals are reset, never poisoned.
    * ``seed`` seeds the stochastic-rounding streams (by seed, rank, step, tensor name), so runs
      are reproducible and resumable.
    """

    # The codec's typed state (hvd_compress.core.state); a codec that keeps more declares its own.
    State: type = TensorState

    def __init__(self, **options):
        CodecConfig.__init__(self, **options)
        self.state = self.State()
        # Which kernels run this codec's tensors (Triton, the C kernels or plain torch), per device
        # kind: chosen now, from HVD_COMPRESS_BACKEND / HVD_COMPRESS_NATIVE (kernels/backend.py).
        self.plan = backend.plan()
        self._stock = None  # the Horovod stock-API engine, created on first compress()

    def __init_subclass__(cls, **kwargs):
        # Bytes from another rank must never reach the unpacking code or the C kernels unchecked:
        # every codec's own decode/decode_into/aggregate validates the payload size first.
        super().__init_subclass__(**kwargs)
        for name in DECODING_METHODS:
            if name in cls.__dict__:
                setattr(cls, name, validates_payloads(cls.__dict__[name]))

    def should_compress(self, tensor: torch.Tensor) -> bool:
        return self.compresses(tensor.numel(), tensor.dim(), tensor.dtype.is_floating_point)

    # ------------------------------------------------------------------ math (override)
    def encode(
        self, x: torch.Tensor, generator: Optional[torch.Generator] = None, scale: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, payload: torch.Tensor, numel: int) -> torch.Tensor:
        raise NotImplementedError

    def decode_into(self, payload: torch.Tensor, out: torch.Tensor) -> None:
        """Decode ``payload`` into ``out``, a preallocated contiguous fp32 tensor of the chunk's
        size (the exchange's output slice). Codecs with a kernel that writes in place override it;
        the default decodes and copies."""
        out.copy_(self.decode(payload, out.numel()))

    def aggregate(self, payloads: Sequence[torch.Tensor], numel: int) -> torch.Tensor:
        """Mean of the values encoded in ``payloads`` (every rank's payload for one chunk)."""
        total = self.decode(payloads[0], numel).clone()
        for p in payloads[1:]:
            total += self.decode(p, numel)
        return total.div_(len(payloads))

    def local_scale(self, x: torch.Tensor) -> torch.Tensor:
        """For ``shared_scale`` codecs: this worker's proposal; the exchange takes the max."""
        raise NotImplementedError

    def custom_exchange(self, exchange, key: str, flat: torch.Tensor, shape: Optional[torch.Size] = None):
        """Codecs with their own collective schedule (PowerSGD's two allreduces, GradiVeQ's
        phases) return a generator here, written like ``Exchange._compressed``: it yields
        ``exchange.comm`` collectives, records bytes in ``exchange.stats`` under ``exchange.label``
        and returns the averaged flat fp32 tensor. ``shape`` is the original tensor's shape
        (``flat`` is its fp32 flattening), for codecs that view it as a matrix or a conv kernel.
        ``None`` (the default) uses the standard patterns.
        """
        return None

    # summable codecs: the allreduce carries the compressed tensor itself
    def to_summable(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_summable(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def residual_of(self, key: str) -> Optional[torch.Tensor]:
        """The worker-side error-feedback residual of ``key`` (this codec's or a wrapped one's),
        or ``None``; read by the compression-error counters (``hc.compression_error()``)."""
        residual = getattr(self.state, "residual", {}).get(key)
        inner = getattr(self, "inner", None)
        return residual if residual is not None or inner is None else inner.residual_of(key)

    # ------------------------------------------------------------------ stateful steps
    def worker_encode(
        self, x: torch.Tensor, key: str, bounds: Bounds, draw: Draw, scale: Optional[torch.Tensor] = None
    ) -> List[torch.Tensor]:
        """Encode a worker's tensor as one payload per chunk. Wrappers add error feedback here."""
        return [self.encode(x[a:b], draw(i, 0), scale) for i, (a, b) in enumerate(bounds)]

    def server_encode(
        self, mean: torch.Tensor, key: str, draw: Draw, owner: int, scale: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Re-encode the averaged chunk an owner holds (reduce-scatter pattern)."""
        return self.encode(mean, draw(owner, 1), scale)

    def next_step(self, key: str) -> int:
        step = self.state.step.get(key, 0)
        self.state.step[key] = step + 1
        return step

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """Everything that persists across steps, keyed by tensor name (tensors are cloned)."""
        return {"codec": self.fingerprint(), "state": _clone(self.state.groups())}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        saved = state_dict.get("codec")
        if saved is not None and saved != self.fingerprint():
            raise ValueError(
                f"hvd_compress: state was saved by {saved}, cannot load it into "
                f"{self.fingerprint()}; construct the same codec as the saved run"
            )
        self.state = self.State.from_groups(_clone(state_dict["state"]), self.fingerprint())

    # ------------------------------------------------------------------ Horovod stock API
    def compress(self, tensor: torch.Tensor):
        """Horovod ``Compressor.compress``: start this codec's exchange for ``tensor``.

        Called by ``hvd.DistributedOptimizer``; returns what Horovod's allreduce should carry
        (the compressed tensor for summable codecs, a 1-value placeholder otherwise) and a context.
        """
        if self._stock is None:
            if _stock_engine is None:
                raise RuntimeError(
                    "hvd_compress: no Horovod stock-API engine installed; import "
                    "hvd_compress.torch (it installs hvd_compress.torch.frontends.stock)"
                )
            self._stock = _stock_engine(self)
        return self._stock.compress(tensor)

    def decompress(self, tensor: torch.Tensor, ctx):
        """Horovod ``Compressor.decompress``: the averaged gradient for the tensor behind ``ctx``."""
        return self._stock.decompress(tensor, ctx)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_stock"] = None
        state.pop("plan", None)  # made again where the codec lands: that process's kernels
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.plan = backend.plan()


class NativeDecoding:
    """Mixin for codecs whose payloads a native kernel decodes (``hvd_compress._native``).

    The codec names its kernel and arguments in :meth:`native_decoder`; the mixin routes
    ``decode_into`` and ``aggregate`` through it and falls back to the codec's plain torch path
    (the next class in the MRO) when the native path is off. ``decode`` calls
    :meth:`native_decode` first and keeps its plain body as the definition."""

    def native_decoder(self) -> tuple:
        """``(decode_into_kernel, *args)`` from ``hvd_compress._native.ops``."""
        raise NotImplementedError

    def _decoding_ops(self, *tensors):
        """The module whose ``decode`` / ``decode_to`` / ``aggregate`` run the plan's path for these
        tensors (``kernels`` or the native ops: the same three functions), ``None`` for plain."""
        return _DECODING_OPS.get(self.plan.path(*tensors))

    def native_decode(self, payload, numel):
        """The payload decoded by the kernel the plan picks, or ``None`` on the plain path."""
        ops = self._decoding_ops(payload)
        if ops is None:
            return None
        kernel, *args = self.native_decoder()
        return ops.decode(kernel, payload, numel, *args)

    @validates_payloads
    def decode_into(self, payload, out):
        ops = self._decoding_ops(payload)
        kernel, *args = self.native_decoder()
        if ops is None or not ops.decode_to(kernel, payload, out, *args):
            super().decode_into(payload, out)

    @validates_payloads
    def aggregate(self, payloads, numel):
        ops = self._decoding_ops(*payloads)
        kernel, *args = self.native_decoder()
        out = ops.aggregate(kernel, payloads, numel, *args) if ops is not None else None
        return out if out is not None else super().aggregate(payloads, numel)


_DECODING_OPS = {"triton": kernels, "native": native_ops}


class Wrapper(WrapperFormat, Codec):
    """A codec that delegates the math to ``inner`` and adds state around it (the algebra and the
    wire format are delegated by :class:`hvd_compress.common.WrapperFormat`)."""

    def __init__(self, inner: Codec, **options):
        if not isinstance(inner, Codec):
            raise TypeError(f"{type(self).__name__} wraps an hvd_compress codec, got {inner!r}")
        super().__init__(**options)
        self.inner = inner

    def encode(self, x, generator=None, scale=None):
        return self.inner.encode(x, generator, scale)

    def decode(self, payload, numel):
        return self.inner.decode(payload, numel)

    def decode_into(self, payload, out):
        if type(self).decode is Wrapper.decode:  # decoding is the inner codec's
            return self.inner.decode_into(payload, out)
        return Codec.decode_into(self, payload, out)

    def aggregate(self, payloads, numel):
        return self.inner.aggregate(payloads, numel)

    def local_scale(self, x):
        return self.inner.local_scale(x)

    def to_summable(self, x):
        return self.inner.to_summable(x)

    def worker_encode(self, x, key, bounds, draw, scale=None):
        return self.inner.worker_encode(x, key, bounds, draw, scale)

    def server_encode(self, mean, key, draw, owner, scale=None):
        return self.inner.server_encode(mean, key, draw, owner, scale)

    def from_summable(self, t):
        return self.inner.from_summable(t)

    def state_dict(self):
        sd = super().state_dict()
        sd["inner"] = self.inner.state_dict()
        return sd

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "inner" in state_dict:
            self.inner.load_state_dict(state_dict["inner"])


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return copy.deepcopy(obj)


def bucket_view(x: torch.Tensor, bucket_size: int) -> Tuple[torch.Tensor, int]:
    """``x`` zero-padded to whole buckets, as a (buckets, bucket_size) matrix; and the pad."""
    n = x.numel()
    pad = (-n) % bucket_size
    if pad:
        x = torch.cat([x, x.new_zeros(pad)])
    return x.view(-1, bucket_size), pad


def nan_where_nonfinite(scales: torch.Tensor) -> torch.Tensor:
    """A non-finite input must reach every rank as NaN, not as a silently wrong finite value."""
    return torch.where(torch.isfinite(scales), scales, torch.full_like(scales, float("nan")))
