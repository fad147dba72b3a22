"""Elastic Horovod (``hvd.elastic``) with TensorFlow codec state: commit, restore and re-sync.

Horovod's TensorFlow states (``hvd.elastic.TensorFlowKerasState``, ``TensorFlowState``) have no
handler registry (torch's ``TorchState`` has one, see :mod:`hvd_compress.torch.frontends.elastic`): their
extra keyword arguments are plain Python values, pickled and broadcast from rank 0. A codec holds
``tf.Variable``\\ s, some of which must not be broadcast (residuals) or change shape with the world
(DoubleSqueeze's server residual), so this module subclasses both states::

    import horovod.tensorflow as hvd
    import hvd_compress.tensorflow.frontends.keras as hck
    from hvd_compress.tensorflow.frontends import elastic

    hvd.init()
    opt = hck.DistributedOptimizer(tf.keras.optimizers.SGD(0.05), compression="onebit")
    opt.build(model.trainable_variables)  # the same optimizer variables on every worker, joining ones too
    state = elastic.CompressedKerasState(model, opt, epoch=0, batch=0)  # the codec is found on opt
    # Horovod's optimizer instead (tf-keras):
    #   opt = horovod.tensorflow.keras.DistributedOptimizer(tf.keras.optimizers.SGD(0.05), compression=codec)
    #   state = elastic.CompressedKerasState(model, opt, codec=codec, epoch=0, batch=0)

    @elastic.run  # hvd.elastic.run that also recognizes hvdc_ collectives failing
    def train(state):
        ...   # a tf.function step created here, or model.fit(..., callbacks=[CommitStateCallback(state)])
        state.commit()

``CompressedTensorFlowState(variables, codec=codec, ...)`` does the same around ``TensorFlowState``
(custom loops with ``hvd.DistributedGradientTape(tape, compression=codec)`` or
:class:`hvd_compress.tensorflow.GradientReducer`). The codec part, :class:`CodecState`:

* ``save()`` (every ``state.commit()``): a host copy of every codec state variable (the codec's,
  and its inner / fallback / sampler codecs').
* ``restore()`` (after a ``HorovodInternalError``): the copy assigned back; a variable created
  after the commit goes back to its initial value (:meth:`Codec.initial_state`).
* ``sync()`` (at start and after every reset, in the new world, collectively):

  - shared state (step counters, PowerSGD's Q, GradiVeQ's basis, mean, phase, sample moments) is
    broadcast from rank 0; a worker that joined creates the variables it lacked;
  - each worker keeps its error-feedback residuals (a new worker's are created at zero when its
    first step runs; a lost worker's are lost with it);
  - DoubleSqueeze's server residual is gathered by old rank and re-cut to the new world's chunk
    bounds (:func:`hvd_compress.elastic.recut_server_residual`; lost chunks become zero), the
    variable replaced when its chunk's length changed;
  - the codec agreement check runs again, here, among the new world's ranks, for every exchange
    of the codec (Horovod's stock frontends' and hvd_compress's Keras optimizer's);
  - if this worker's (size, rank) changed, the graphs that baked the old world in are dropped so
    the next step traces again: the ``tf.function``\\ s Horovod caches for
    ``DistributedGradientTape`` / its Keras ``DistributedOptimizer`` with this codec, and (Keras
    state) the model's ``train_function``. A ``tf.function`` of your own that runs a compressed
    exchange must be traced again too: create it inside the ``@hvd.elastic.run`` function. A
    stale graph fails with a clear ``InvalidArgumentError`` (the exchange's world guard) rather
    than exchange the wrong chunks.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from hvd_compress.common import chunk_bounds
from hvd_compress.elastic import NESTED_KEYS, merge_state, recut_server_residual, split_state
from hvd_compress.tensorflow.codecs.base import Codec, variable_name
from hvd_compress.tensorflow.exchange import Exchange

World = Tuple[int, int]


# ---------------------------------------------------------------------------- codec state as data
def _children(codec: Codec) -> Iterable[Tuple[str, Codec]]:
    for name in NESTED_KEYS:
        child = getattr(codec, name, None)
        if isinstance(child, Codec):
            yield name, child


def codec_snapshot(codec: Codec) -> Dict[str, Any]:
    """The codec's state variables as numpy copies, nested like torch's ``state_dict()``:
    ``{"state": {group: {key: array}}, "inner": {...}, "fallback": {...}, "sampler": {...}}``."""
    out: Dict[str, Any] = {
        "state": {
            group: {key: np.array(var.numpy(), copy=True) for key, var in table.items()}
            for group, table in codec.state.items()
        }
    }
    for name, child in _children(codec):
        out[name] = codec_snapshot(child)
    return out


def _set_variable(codec: Codec, group: str, key: str, value: np.ndarray) -> None:
    """``codec.state[group][key] = value``: assigned in place when the shape and dtype agree (so
    traced graphs keep updating the same variable), else a new variable (shape changed)."""
    table = codec.state[group]
    var = table.get(key)
    value = np.asarray(value)
    if var is not None and tuple(var.shape) == value.shape and var.dtype.as_numpy_dtype == value.dtype:
        var.assign(value)
        return
    with tf.init_scope():
        table[key] = tf.Variable(value, trainable=False, name=variable_name(group, key))


def load_snapshot(codec: Codec, sd: Dict[str, Any], reset_missing: bool) -> None:
    """Inverse of :func:`codec_snapshot`. ``reset_missing``: variables absent from ``sd`` (created
    after it was taken) go back to :meth:`Codec.initial_state`; otherwise they are left alone."""
    groups = sd.get("state", {})
    for group, table in codec.state.items():
        values = groups.get(group, {})
        for key, var in list(table.items()):
            if key not in values and reset_missing:
                var.assign(codec.initial_state(group, key, var))
        for key, value in values.items():
            _set_variable(codec, group, key, value)
    for name, child in _children(codec):
        if name in sd:
            load_snapshot(child, sd[name], reset_missing)


def _server_residual_codec(codec: Codec) -> Optional[Codec]:
    from hvd_compress.tensorflow.codecs.doublesqueeze import DoubleSqueeze

    return codec if isinstance(codec, DoubleSqueeze) else None


def _server_numels(codec: Codec) -> Dict[str, int]:
    """Full size of every tensor with a server residual: its worker residual's length (DoubleSqueeze
    always keeps one, its inner codec's or :class:`ErrorFeedback`'s)."""
    out = {}
    for key in codec.state["server_residual"]:
        residual = codec.residual_of(key)
        if residual is not None:
            out[key] = int(residual.shape.num_elements())
    return out


# ---------------------------------------------------------------------------- traces to drop
def _horovod_cached_functions(codec: Codec) -> List[Any]:
    """The ``tf.function``\\ s Horovod built around ``codec`` (``horovod.tensorflow`` caches one
    per argument tuple of ``_make_cached_allreduce_grads_fn``; its ``DistributedGradientTape`` and
    Keras ``DistributedOptimizer`` call them)."""
    try:
        import horovod.tensorflow as hvd
    except ImportError:  # pragma: no cover
        return []
    maker = getattr(hvd, "_make_cached_allreduce_grads_fn", None)
    found = []
    for cell in getattr(maker, "__closure__", None) or ():
        cache = cell.cell_contents
        if isinstance(cache, dict):
            found.extend(fn for key, fn in cache.items() if _mentions(key, codec))
    return found


def _mentions(key, codec) -> bool:
    """Whether a cache key (nested tuples of arguments) holds ``codec`` itself."""
    if key is codec:
        return True
    return isinstance(key, (tuple, list, frozenset)) and any(_mentions(k, codec) for k in key)


def forget_traces(function) -> bool:
    """Make a ``tf.function`` trace again on its next call (TF has no public call for this; its
    trace cache is ``_function_cache``, TF 2.13-2.21). False where that is not available."""
    cache = getattr(function, "_function_cache", None)
    if cache is None or not hasattr(cache, "clear"):
        return False
    cache.clear()
    return True


def _world() -> World:
    import horovod.tensorflow as hvd

    return hvd.size(), hvd.rank()


# ---------------------------------------------------------------------------- the codec's state
class CodecState:
    """Commit, restore and re-sync one TF codec (see the module doc). ``exchanges``: callables
    returning the :class:`Exchange` objects that run the codec, besides the stock frontends' (found
    on the codec), e.g. ``lambda: optimizer._hvdc_reducer.exchange``. ``models``: Keras models whose
    compiled train/test/predict functions are dropped when the world changes."""

    def __init__(self, codec: Codec, exchanges=(), models=()):
        if not isinstance(codec, Codec):
            raise TypeError(f"hvd_compress: CodecState takes an hvd_compress TensorFlow codec, got {codec!r}")
        self.codec = codec
        self.exchanges = list(exchanges)
        self.models = list(models)
        # the world this worker's state belongs to: none until its first sync (a worker that joins
        # has built zero state for the world it starts in, which must not count as committed)
        self._world: Optional[World] = None
        self.save()

    def save(self) -> None:
        self._saved = codec_snapshot(self.codec)
        self._saved_world = self._world

    def restore(self) -> None:
        load_snapshot(self.codec, self._saved, reset_missing=True)
        self._world = self._saved_world

    def _all_exchanges(self) -> List[Exchange]:
        from hvd_compress.tensorflow.frontends.stock import StockEngine

        codec = self.codec
        if codec._stock is None:  # a worker that joined: the stock frontend has not run here yet
            codec._stock = StockEngine(codec)
        return [codec._stock.exchange] + [get() for get in self.exchanges]

    def sync(self) -> None:
        from horovod.tensorflow.functions import allgather_object, broadcast_object

        codec = self.codec
        old_world, world = self._world, _world()
        size, rank = world
        shared, local = split_state(codec_snapshot(codec))
        shared = broadcast_object(shared, root_rank=0, name="hvdc.elastic.codec_state")
        load_snapshot(codec, merge_state(shared, local), reset_missing=False)
        server = _server_residual_codec(codec)
        if server is not None:
            chunks = {k: v.numpy() for k, v in server.state["server_residual"].items()}
            piece = ((old_world[0], old_world[1], chunks) if old_world else (None, None, {}), _server_numels(server))
            pieces = allgather_object(piece, name="hvdc.elastic.server_residual")
            # at the job's start nobody has a committed world: each keeps what it holds (zeros, or a
            # checkpoint's); after a reset the survivors' chunks are re-cut for everyone
            if any(p[0] is not None for p, _ in pieces):
                numels: Dict[str, int] = {}
                for _, n in pieces:
                    numels.update(n)
                recut = recut_server_residual([p for p, _ in pieces], numels, server.alignment(), size, rank)
                for key, n in numels.items():
                    lo, hi = chunk_bounds(n, size, server.alignment())[rank]
                    _set_variable(server, "server_residual", key, recut.get(key, np.zeros(hi - lo, np.float32)))
        for exchange in self._all_exchanges():
            exchange.reset_world()
            exchange.ensure_checked()  # collectively, now, rather than in some rank's next trace
        if world != old_world:
            self.drop_traces()
        self._world = world
        self.save()  # the committed copy now belongs to the new world

    def drop_traces(self) -> None:
        """Traced graphs baked in the old world's rank and size: make them trace again."""
        for fn in _horovod_cached_functions(self.codec):
            # (a plain Python function where Horovod was called inside a tf.function: traced
            # as part of that function, which is the caller's to trace again)
            if isinstance(fn, tf.types.experimental.PolymorphicFunction) and not forget_traces(fn):
                warnings.warn(
                    "hvd_compress: cannot make Horovod's gradient function trace again after an "
                    "elastic reset on this TensorFlow version; its next step will fail the world "
                    "guard. Create the DistributedGradientTape / optimizer inside the "
                    "@hvd.elastic.run function."
                )
        for model in self.models:
            for attr in ("train_function", "test_function", "predict_function"):
                if getattr(model, attr, None) is not None:
                    setattr(model, attr, None)


def _codec_of(optimizer, codec) -> Tuple[Optional[Codec], List]:
    """The codec to track and the extra exchanges: hvd_compress's Keras optimizer carries its own."""
    reducer = getattr(optimizer, "_hvdc_reducer", None)
    if reducer is not None:
        if codec is not None and codec is not reducer.codec:
            raise ValueError("hvd_compress: codec= is not the codec of the hvd_compress optimizer given")
        return reducer.codec, [lambda: reducer.exchange]
    if codec is not None:
        from hvd_compress.tensorflow.spec import from_spec

        if not isinstance(codec, Codec):
            codec = from_spec(codec)
    return codec, []


def _state_mixin(base):
    """``base`` (a Horovod TF state class) with a codec folded into save/restore/sync."""

    class Compressed(base):
        def _hvdc_init(self, codec, exchanges, models):
            self.codec_state = None if codec is None else CodecState(codec, exchanges, models)

        def save(self):
            super().save()
            if self.codec_state is not None:
                self.codec_state.save()

        def restore(self):
            super().restore()
            if self.codec_state is not None:
                self.codec_state.restore()

        def sync(self):
            super().sync()
            if self.codec_state is not None:
                self.codec_state.sync()

    return Compressed


def _horovod_states():
    from horovod.tensorflow.elastic import TensorFlowKerasState, TensorFlowState

    return TensorFlowKerasState, TensorFlowState


_KerasBase, _TFBase = _horovod_states()


class CompressedKerasState(_state_mixin(_KerasBase)):  # type: ignore[misc]
    """``hvd.elastic.TensorFlowKerasState(model, optimizer, ...)`` plus the codec's state.

    ``optimizer``: :func:`hvd_compress.tensorflow.frontends.keras.DistributedOptimizer` (its codec is found
    on it) or Horovod's ``DistributedOptimizer(opt, compression=codec)`` with ``codec=codec``.
    Other keyword arguments are Horovod's (``backend``, and plain values to sync: ``epoch=0``).
    When the world changes, ``model``'s compiled functions are dropped so ``fit`` traces again."""

    def __init__(self, model, optimizer=None, codec: "Codec | str | None" = None, **kwargs):
        codec, exchanges = _codec_of(optimizer or getattr(model, "optimizer", None), codec)
        super().__init__(model, optimizer=optimizer, **kwargs)
        self._hvdc_init(codec, exchanges, [model])


class CompressedTensorFlowState(_state_mixin(_TFBase)):  # type: ignore[misc]
    """``hvd.elastic.TensorFlowState(variables, ...)`` plus the codec's state (custom loops:
    ``hvd.DistributedGradientTape(tape, compression=codec)``, or a
    :class:`~hvd_compress.tensorflow.GradientReducer`, passed as ``reducer=``)."""

    def __init__(self, variables=None, codec: "Codec | str | None" = None, reducer=None, **kwargs):
        exchanges: List = []
        if reducer is not None:
            if codec is not None and codec is not reducer.codec:
                raise ValueError("hvd_compress: codec= is not the codec of the reducer given")
            codec, exchanges = reducer.codec, [lambda: reducer.exchange]
        elif codec is not None and not isinstance(codec, Codec):
            from hvd_compress.tensorflow.spec import from_spec

            codec = from_spec(codec)
        super().__init__(variables=variables, **kwargs)
        self._hvdc_init(codec, exchanges, [])


def is_horovod_failure(error: BaseException) -> bool:
    """Whether a TF error comes from a Horovod collective that failed because the world broke (a
    peer died): Horovod's own ``run`` recognizes only its default op names (``HorovodAllreduce``...),
    not hvd_compress's named collectives (``hvdc_...``) nor ``HorovodAlltoall``."""
    if not isinstance(error, (tf.errors.UnknownError, tf.errors.AbortedError, tf.errors.FailedPreconditionError)):
        return False
    text = str(error)
    return "Horovod" in text or "hvdc_" in text


def run(func):
    """``hvd.elastic.run`` for TensorFlow that also treats a failed hvd_compress collective as a
    ``HorovodInternalError`` (restore the last commit, reset, sync, go on): use it in place of
    ``horovod.tensorflow.elastic.run`` when codecs exchange compressed gradients."""
    from horovod.common.elastic import run_fn
    from horovod.common.exceptions import HorovodInternalError
    from horovod.tensorflow.elastic import _reset

    def wrapper(state, *args, **kwargs):
        try:
            return func(state, *args, **kwargs)
        except tf.errors.OpError as e:
            if is_horovod_failure(e):
                raise HorovodInternalError(e) from e
            raise

    return run_fn(wrapper, _reset)


__all__ = [
    "run",
    "CodecState",
    "CompressedKerasState",
    "CompressedTensorFlowState",
    "codec_snapshot",
    "load_snapshot",
    "forget_traces",
]
