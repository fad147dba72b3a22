"""The TensorFlow codec interface: the torch codecs' math and wire format, in TF ops.

A codec turns a flat fp32 tensor into a *payload* (one 1-D uint8 tensor: packed codes, then
per-bucket scales, little-endian) and back, with the same bytes as the torch codec of the same
spec for the same input and the same random draws (``encode(x, noise=u)`` takes the uniform
draws explicitly; ``tests/test_tf_torch_wire.py`` checks every codec byte for byte). All math is
plain TF ops on static sizes, so it traces inside ``tf.function``.

Configuration (knobs, validation, descriptions, fingerprints, sizes, exchange pattern) is shared
with torch: :mod:`hvd_compress.common`.

State (error-feedback residuals, server residuals, per-tensor step counters that seed the
stochastic rounding) lives in ``tf.Variable``\\ s held in :attr:`Codec.state`: the codec's typed
state (its ``State``, the same dataclasses as torch's, :mod:`hvd_compress.core.state`), made
trackable, one group per field keyed by tensor name (``state.residual["dense/kernel"]``), and
named after the variables they serve (``hvd_compress/residual/dense/kernel``), so ``tf.train.Checkpoint(compression=codec)``
(or a checkpoint of the optimizer that holds the codec) saves and restores them.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, List, Optional, Sequence, Tuple

import tensorflow as tf

from hvd_compress.common import EXCHANGES, NONFINITE_POLICIES  # noqa: F401 (re-exported)
from hvd_compress.common import CodecConfig, DECODING_METHODS, WrapperFormat, check_payload, payload_validator
from hvd_compress.core.state import TensorState

try:
    _Trackable = tf.__internal__.tracking.AutoTrackable
except AttributeError:  # pragma: no cover - older TF
    from tensorflow.python.trackable.autotrackable import AutoTrackable as _Trackable

Bounds = Sequence[Tuple[int, int]]
Draw = Callable[[int, int], Optional[tf.Tensor]]


@functools.lru_cache(maxsize=None)
def trackable_state(state_class: type) -> type:
    """``state_class`` (a :class:`~hvd_compress.core.state.TensorState` dataclass) as a TF
    trackable: its groups become tracked dicts, so ``tf.train.Checkpoint`` saves the variables in
    them under ``state/<group>/<tensor name>`` (the paths the untyped dict of dicts had)."""
    name = "Trackable" + state_class.__name__
    body = {"__module__": __name__, "__qualname__": name, "__reduce__": _reduce_state}
    return dataclasses.dataclass(eq=False)(type(name, (state_class, _Trackable), body))


def _reduce_state(state):
    # The trackable class is made at run time, so pickle names the declared class instead.
    declared = next(c for c in type(state).__mro__[1:] if issubclass(c, TensorState))
    return _rebuild_state, (declared, {name: dict(group) for name, group in state.groups().items()})


def _rebuild_state(state_class: type, groups: dict):
    return trackable_state(state_class)(**groups)


def check_tf_payload(codec, payload, numel: int) -> None:
    """``ValueError`` naming ``codec`` unless ``payload`` is a 1-D uint8 tensor of exactly
    ``codec.payload_nbytes(numel)`` bytes. Checks the *static* shape: always known in eager mode;
    under ``tf.function`` a dimension the graph leaves unknown is not checked (the exchange's
    payloads have static sizes, so in practice it is checked there too)."""
    shape = getattr(payload, "shape", None)
    rank = None if shape is None else shape.rank if isinstance(shape, tf.TensorShape) else len(shape)
    nbytes = None
    if rank == 1 and shape[0] is not None:
        nbytes = int(shape[0])
    check_payload(codec, numel, nbytes, getattr(payload, "dtype", None) == tf.uint8, rank)


validates_payloads = payload_validator(check_tf_payload)


# Builds the engine behind Codec.compress/decompress (hvd_compress.tensorflow.frontends.stock.StockEngine).
_stock_engine: Optional[Callable[["Codec"], Any]] = None


def install_stock_engine(factory: Callable[["Codec"], Any]) -> None:
    """Install ``factory(codec) -> engine`` for the Horovod ``Compressor`` API (``compress`` /
    ``decompress``). Imports flow one way, codecs -> exchange -> frontends, so the codec layer
    does not import the stock-API engine; ``hvd_compress.tensorflow`` installs it when imported
    (which Python does before any of its submodules, so every codec finds it)."""
    global _stock_engine
    _stock_engine = factory


def variable_name(group: str, key: str) -> str:
    """``hvd_compress/<group>/<key>`` with characters TF refuses in variable names replaced."""
    return "hvd_compress/" + group + "/" + re.sub(r"[^A-Za-z0-9_./-]", "_", key).strip("/")


class Codec(CodecConfig, _Trackable):
    """Base class of every hvd_compress TensorFlow codec.

    Also a Horovod TensorFlow ``Compressor`` (duck-typed: ``compress``/``decompress``): pass it as
    ``compression=`` to ``hvd.DistributedGradientTape`` or ``horovod.tensorflow.keras.DistributedOptimizer``
    and it runs its own bit-packed exchange (see :mod:`hvd_compress.tensorflow.frontends.stock`).

    ``nonfinite="raise"`` (default): a NaN/Inf in any rank's gradient makes the step fail on every
    rank with ``tf.errors.InvalidArgumentError`` whose message names the tensor (the check runs on
    the averaged result, which every rank holds alike). ``"propagate"``: the affected buckets
    come out NaN on every rank, as with an fp32 allreduce, so a loss-scale optimizer can skip the
    step. Error-feedback residuals are reset, never poisoned, either way.
    """

    # The codec's typed state (hvd_compress.core.state); a codec that keeps more declares its own.
    State: type = TensorState

    def __init__(self, **options):
        CodecConfig.__init__(self, **options)
        self.state = trackable_state(self.State)()
        self._stock = None

    def __init_subclass__(cls, **kwargs):
        # Bytes from another rank must never reach the unpacking code unchecked: every codec's own
        # decode/aggregate validates the payload size first (as in hvd_compress.torch).
        super().__init_subclass__(**kwargs)
        for name in DECODING_METHODS:
            if name in cls.__dict__:
                setattr(cls, name, validates_payloads(cls.__dict__[name]))

    # ------------------------------------------------------------------ shapes
    def should_compress(self, tensor) -> bool:
        shape = tensor.shape
        if not shape.is_fully_defined():
            return False
        return self.compresses(int(shape.num_elements()), shape.rank, tensor.dtype.is_floating)

    # ------------------------------------------------------------------ math (override)
    def encode(
        self,
        x: tf.Tensor,
        seed: Optional[tf.Tensor] = None,
        scale: Optional[tf.Tensor] = None,
        noise: Optional[tf.Tensor] = None,
    ) -> tf.Tensor:
        """Payload (uint8, ``payload_nbytes(n)`` bytes) of the flat fp32 ``x``. Stochastic codecs
        draw ``noise`` (uniform in [0, 1), one per value) from ``seed`` (a stateless-RNG seed of
        shape [2]) unless it is given."""
        raise NotImplementedError

    def decode(self, payload: tf.Tensor, numel: int) -> tf.Tensor:
        raise NotImplementedError

    def aggregate(self, payloads: Sequence[tf.Tensor], numel: int) -> tf.Tensor:
        """Mean of the values encoded in ``payloads`` (every rank's payload for one chunk), summed
        in rank order like the torch codec."""
        total = self.decode(payloads[0], numel)
        for p in payloads[1:]:
            total = total + self.decode(p, numel)
        return total / float(len(payloads))

    def local_scale(self, x: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def to_summable(self, x: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def from_summable(self, t: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _noise(self, n: int, seed, noise):
        if noise is not None:
            return tf.reshape(tf.cast(noise, tf.float32), [n])
        if seed is None:
            return tf.random.uniform([n], dtype=tf.float32)
        return tf.random.stateless_uniform([n], seed=seed, dtype=tf.float32)

    # ------------------------------------------------------------------ stateful steps
    def worker_encode(
        self, x: tf.Tensor, key: str, bounds: Bounds, draw: Draw, scale: Optional[tf.Tensor] = None
    ) -> List[tf.Tensor]:
        """Encode a worker's flat tensor as one payload per chunk. Wrappers add error feedback."""
        return [self.encode(x[a:b], draw(i, 0), scale) for i, (a, b) in enumerate(bounds)]

    def server_encode(
        self, mean: tf.Tensor, key: str, draw: Draw, owner: int, scale: Optional[tf.Tensor] = None
    ) -> tf.Tensor:
        """Re-encode the averaged chunk an owner holds (reduce-scatter pattern)."""
        return self.encode(mean, draw(owner, 1), scale)

    def state_variable(
        self, group: str, key: str, shape, dtype=tf.float32, initial: Optional[Callable[[], tf.Tensor]] = None
    ) -> tf.Variable:
        """The ``tf.Variable`` of ``state[group][key]``, created on first use (zeros, or
        ``initial()``), outside any ``tf.function`` being traced (``tf.init_scope``), so it
        persists across steps."""
        if group not in self.state:
            raise ValueError(
                f"hvd_compress: {type(self).__name__} keeps no state group {group!r} (its state, "
                f"{self.State.__name__}, has {list(self.state)})"
            )
        table = self.state[group]
        var = table.get(key)
        if var is None:
            with tf.init_scope():
                value = tf.zeros(shape, dtype) if initial is None else tf.cast(initial(), dtype)
                var = tf.Variable(value, trainable=False, name=variable_name(group, key))
            table[key] = var
        elif var.shape != tf.TensorShape(shape) or var.dtype != dtype:
            raise ValueError(
                f"hvd_compress: state {group}[{key!r}] holds shape {var.shape} "
                f"{var.dtype.name}, the tensor now has {shape} {tf.as_dtype(dtype).name}; "
                "tensor names must be unique and keep their shapes"
            )
        return var

    def initial_state(self, group: str, key: str, var: tf.Variable) -> tf.Tensor:
        """The value ``state[group][key]`` (``var``) starts from: zeros here; codecs whose
        :meth:`state_variable` calls pass ``initial`` say theirs. Elastic training restores a
        variable created after the last commit to this value."""
        return tf.zeros(var.shape, var.dtype)

    def next_step(self, key: str) -> tf.Tensor:
        """This tensor's step number (int64, before this step), then counts the step."""
        var = self.state_variable("step", key, [], tf.int64)
        current = tf.identity(var.read_value())
        with tf.control_dependencies([current]):
            var.assign_add(1)
        return current

    def residual_of(self, key: str) -> Optional[tf.Variable]:
        """The worker-side error-feedback residual of ``key`` (this codec's or a wrapped one's)."""
        var = getattr(self.state, "residual", {}).get(key)
        inner = getattr(self, "inner", None)
        return var if var is not None or inner is None else inner.residual_of(key)

    def custom_exchange(self, exchange, key: str, flat: tf.Tensor, shape: tf.TensorShape):
        """Codecs with their own collective schedule (PowerSGD's two allreduces, GradiVeQ's
        phases) return the averaged flat fp32 tensor here, built from ``exchange.comm``
        collectives (bytes recorded in ``exchange.stats`` under ``exchange.label``); ``shape`` is
        the original tensor's (static) shape, ``flat`` its fp32 flattening. ``None`` (the default)
        uses the standard patterns. Branches on the step counter must be ``tf.cond`` /
        ``tf.switch_case``, so the same code runs eagerly and inside ``tf.function``."""
        return None

    def build_custom_state(self, exchange, key: str, shape: tf.TensorShape, dtype) -> bool:
        """For codecs with a :meth:`custom_exchange`: create the state tensor ``key`` of ``shape``
        will need and return True (the default returns False: the standard patterns' state)."""
        return False

    def build_state(self, key: str, numel: int, owner_numel: Optional[int] = None) -> None:
        """Create the state variables a tensor ``key`` of ``numel`` values will need (so a
        checkpoint can be restored into them before the first step); ``owner_numel``: the size
        of the chunk this rank owns under the reduce-scatter. The default needs none."""

    # ------------------------------------------------------------------ Horovod stock API
    @tf.autograph.experimental.do_not_convert
    def compress(self, tensor):
        """Horovod ``Compressor.compress`` (see :mod:`hvd_compress.tensorflow.frontends.stock`)."""
        if self._stock is None:
            if _stock_engine is None:
                raise RuntimeError(
                    "hvd_compress: no Horovod stock-API engine installed; import "
                    "hvd_compress.tensorflow (it installs hvd_compress.tensorflow.frontends.stock)"
                )
            self._stock = _stock_engine(self)
        return self._stock.compress(tensor)

    @tf.autograph.experimental.do_not_convert
    def decompress(self, tensor, ctx):
        """Horovod ``Compressor.decompress``: the averaged gradient for the tensor behind ``ctx``."""
        return self._stock.decompress(tensor, ctx)


class Wrapper(WrapperFormat, Codec):
    """A codec that delegates the math to ``inner`` and adds state around it."""

    def __init__(self, inner: Codec, **options):
        if not isinstance(inner, Codec):
            raise TypeError(f"{type(self).__name__} wraps an hvd_compress TensorFlow codec, got {inner!r}")
        super().__init__(**options)
        self.inner = inner

    def encode(self, x, seed=None, scale=None, noise=None):
        return self.inner.encode(x, seed, scale, noise)

    def decode(self, payload, numel):
        return self.inner.decode(payload, numel)

    def aggregate(self, payloads, numel):
        return self.inner.aggregate(payloads, numel)

    def local_scale(self, x):
        return self.inner.local_scale(x)

    def to_summable(self, x):
        return self.inner.to_summable(x)

    def from_summable(self, t):
        return self.inner.from_summable(t)

    def worker_encode(self, x, key, bounds, draw, scale=None):
        return self.inner.worker_encode(x, key, bounds, draw, scale)

    def server_encode(self, mean, key, draw, owner, scale=None):
        return self.inner.server_encode(mean, key, draw, owner, scale)

    def build_state(self, key, numel, owner_numel=None):
        self.inner.build_state(key, numel, owner_numel)


# ---------------------------------------------------------------------- helpers
def bucket_view(x: tf.Tensor, n: int, bucket_size: int) -> Tuple[tf.Tensor, int]:
    """``x`` (``n`` values) zero-padded to whole buckets, as a (buckets, bucket_size) matrix."""
    pad = (-n) % bucket_size
    if pad:
        x = tf.pad(x, [[0, pad]])
    return tf.reshape(x, [-1, bucket_size]), pad


def nan_where_nonfinite(scales: tf.Tensor) -> tf.Tensor:
    """A non-finite input must reach every rank as NaN, not as a silently wrong finite value."""
    return tf.where(tf.math.is_finite(scales), scales, tf.fill(tf.shape(scales), float("nan")))


def reduce_max_nan(x: tf.Tensor, axis=None) -> tf.Tensor:
    """``reduce_max`` that returns NaN where any input is NaN (as torch's ``amax`` does)."""
    m = tf.reduce_max(x, axis=axis)
    return tf.where(tf.reduce_any(tf.math.is_nan(x), axis=axis), tf.constant(float("nan"), x.dtype), m)


def numel_of(x: tf.Tensor) -> int:
    n = x.shape.num_elements()
    if n is None:
        raise ValueError(
            f"hvd_compress: a tensor of unknown shape {x.shape} cannot be encoded; " "its size must be static"
        )
    return int(n)
