"""The codec interface: pure tensor math, declared algebra, explicit per-name state.

A codec turns a flat fp32 tensor into a *payload* (one contiguous uint8 tensor: packed codes, then
per-bucket scales, little-endian) and back. The math methods (:meth:`Codec.encode`,
:meth:`Codec.decode`, :meth:`Codec.aggregate`) are pure functions of their arguments; whatever must
persist across steps (error-feedback residuals, RNG step counters) lives in :attr:`Codec.state`, a
plain dict of dicts keyed by tensor name, saved by :meth:`Codec.state_dict`.

Every codec is also a Horovod ``Compressor``: pass it as ``compression=`` to
``hvd.DistributedOptimizer`` and it runs its own bit-packed exchange (see ``hvd_compress.torch.stock``).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch

try:  # Subclass Horovod's Compressor where Horovod is installed; the codecs work without it.
    from horovod.torch.compression import Compressor as _HorovodCompressor
except Exception:  # pragma: no cover - exercised only without Horovod
    class _HorovodCompressor:  # type: ignore[no-redef]
        pass

Bounds = Sequence[Tuple[int, int]]
Draw = Callable[[int, int], Optional[torch.Generator]]

EXCHANGES = ("auto", "allgather", "reduce_scatter")
NONFINITE_POLICIES = ("raise", "propagate")


class Codec(_HorovodCompressor):
    """Base class of every hvd_compress codec.

    Common options (all codecs; also valid in spec strings):

    * ``min_numel`` (default 1024): tensors with fewer values go uncompressed (fp32 allreduce,
      fused by Horovod). Compressing tiny tensors costs more in latency and scales than it saves.
    * ``compress_1d`` (default False): whether 1-D tensors (biases, norms) are compressed at all.
    * ``exchange``: ``"auto"`` (allgather for 2 workers or sparse codecs, compressed
      reduce-scatter + allgather from 3), ``"allgather"`` or ``"reduce_scatter"``.
    * ``nonfinite``: ``"raise"`` (default) raises ``FloatingPointError`` naming the tensor on every
      rank when any rank's gradient holds NaN/Inf; ``"propagate"`` passes the non-finite values
      through (the affected buckets become NaN on every rank, as with an fp32 allreduce) so AMP's
      ``GradScaler`` can skip the step; error-feedback residuals are reset, never poisoned.
    * ``seed`` (default 0): base of the stochastic-rounding streams (seeded by seed, rank, step,
      tensor name), so runs are reproducible and resumable.
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
        self.state: Dict[str, Dict[str, Any]] = {"step": {}}
        self._stock = None  # the Horovod stock-API engine, created on first compress()

    # ------------------------------------------------------------------ configuration
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

    def should_compress(self, tensor: torch.Tensor) -> bool:
        if not tensor.dtype.is_floating_point or tensor.numel() == 0:
            return False
        if tensor.dim() <= 1 and not self.compress_1d:
            return False
        return tensor.numel() >= self.min_numel

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

    # ------------------------------------------------------------------ math (override)
    def alignment(self) -> int:
        """Chunks for the reduce-scatter start at multiples of this (the bucket size)."""
        return 8

    def payload_nbytes(self, numel: int) -> int:
        raise NotImplementedError

    def nominal_bits(self, numel: int = 1 << 20) -> float:
        """Bits per value on the wire for a tensor of ``numel`` values, scales included."""
        return 8.0 * self.payload_nbytes(numel) / numel

    def encode(self, x: torch.Tensor, generator: Optional[torch.Generator] = None,
               scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, payload: torch.Tensor, numel: int) -> torch.Tensor:
        raise NotImplementedError

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

    # ------------------------------------------------------------------ stateful steps
    def worker_encode(self, x: torch.Tensor, key: str, bounds: Bounds, draw: Draw,
                      scale: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """Encode a worker's tensor as one payload per chunk. Wrappers add error feedback here."""
        return [self.encode(x[a:b], draw(i, 0), scale) for i, (a, b) in enumerate(bounds)]

    def server_encode(self, mean: torch.Tensor, key: str, draw: Draw, owner: int,
                      scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Re-encode the averaged chunk an owner holds (reduce-scatter pattern)."""
        return self.encode(mean, draw(owner, 1), scale)

    def next_step(self, key: str) -> int:
        steps = self.state.setdefault("step", {})
        step = steps.get(key, 0)
        steps[key] = step + 1
        return step

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """Everything that persists across steps, keyed by tensor name (tensors are cloned)."""
        return {"codec": self.fingerprint(), "state": _clone(self.state)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        saved = state_dict.get("codec")
        if saved is not None and saved != self.fingerprint():
            raise ValueError(f"hvd_compress: state was saved by {saved}, cannot load it into "
                             f"{self.fingerprint()}; construct the same codec as the saved run")
        self.state = _clone(state_dict["state"])

    # ------------------------------------------------------------------ Horovod stock API
    def compress(self, tensor: torch.Tensor):
        """Horovod ``Compressor.compress``: start this codec's exchange for ``tensor``.

        Called by ``hvd.DistributedOptimizer``; returns what Horovod's allreduce should carry
        (the compressed tensor for summable codecs, a 1-value placeholder otherwise) and a context.
        """
        if self._stock is None:
            from hvd_compress.torch.stock import StockEngine
            self._stock = StockEngine(self)
        return self._stock.compress(tensor)

    def decompress(self, tensor: torch.Tensor, ctx):
        """Horovod ``Compressor.decompress``: the averaged gradient for the tensor behind ``ctx``."""
        return self._stock.decompress(tensor, ctx)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_stock"] = None
        return state


class Wrapper(Codec):
    """A codec that delegates the math to ``inner`` and adds state around it."""

    def __init__(self, inner: Codec, **options):
        if not isinstance(inner, Codec):
            raise TypeError(f"{type(self).__name__} wraps an hvd_compress codec, got {inner!r}")
        super().__init__(**options)
        self.inner = inner

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

    def encode(self, x, generator=None, scale=None):
        return self.inner.encode(x, generator, scale)

    def decode(self, payload, numel):
        return self.inner.decode(payload, numel)

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
