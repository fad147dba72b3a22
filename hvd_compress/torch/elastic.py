"""Elastic Horovod (``hvd.elastic``) with codec state: commit, restore and re-sync on a reset.

Importing this module registers two handlers in ``horovod.torch.elastic``'s state-handler registry,
so ``hvd.elastic.TorchState`` treats hvd_compress objects like models and optimizers::

    import horovod.torch as hvd
    import hvd_compress.torch as hc
    import hvd_compress.torch.elastic  # noqa: F401  (registers the handlers)

    hvd.init()
    codec = hc.from_spec("onebit")
    # hvd_compress's optimizer: its handler commits the wrapped optimizer *and* the codec
    opt = hc.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                  named_parameters=model.named_parameters(), compression=codec)
    state = hvd.elastic.TorchState(model=model, optimizer=opt, epoch=0, batch=0)
    # Horovod's stock optimizer: pass the codec too, as its own state member
    #   opt = hvd.DistributedOptimizer(base, named_parameters=..., compression=codec)
    #   state = hvd.elastic.TorchState(model=model, optimizer=opt, codec=codec, epoch=0)

    @hvd.elastic.run
    def train(state):
        ...
        state.commit()   # snapshots model, optimizer and codec state together

What each handler does:

* ``save()`` (every ``state.commit()``): a deep copy of the codec's ``state_dict()`` (error-feedback
  residuals, DoubleSqueeze's server residual, RNG step counters, PowerSGD's Q, GradiVeQ's basis,
  mean and sampler), together with the world (size, rank) it belongs to.
* ``restore()`` (after a ``HorovodInternalError``, e.g. a peer was SIGKILLed): the last committed
  copy, so the failed step's half-applied updates (step counters already advanced, residuals
  already replaced) are undone on every survivor.
* ``sync()`` (at start and after every reset, when Horovod runs in the new world):

  - state every rank must hold identically (step counters, PowerSGD's Q, GradiVeQ's basis, mean,
    phase and sampler) is broadcast from rank 0, so a worker that joined gets the survivors';
  - each worker's own error-feedback residual is kept (it is what that worker has not sent yet;
    a new worker starts from zero, a lost worker's residual is lost with it);
  - DoubleSqueeze's server residual, one chunk per owner, is gathered by old rank and re-cut to
    the new world's chunk bounds (chunks of workers that are gone become zero);
  - the exchange forgets its agreement check and the stock engine its half-done exchanges, so the
    next step re-runs the codec agreement among the new ranks and derives patterns and chunk
    bounds from the new world size.

The stock optimizer's own ``state_dict()`` also carries the codec state (under ``"hvd_compress"``)
once a step has run; committing it with the codec member as well is harmless (both copies are
taken at the same commit).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch

from hvd_compress.common import chunk_bounds
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.optimizer import DistributedOptimizer

# codec state entries that belong to one worker (never broadcast); everything else is shared
LOCAL_STATE_KEYS = frozenset({"residual", "server_residual", "samples"})
# nested codec state_dicts (Wrapper.inner, GradiVeQ's fallback codec and sampler)
NESTED_KEYS = ("inner", "fallback", "sampler")


def split_state(sd: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A codec ``state_dict()`` as (shared, local): ``local`` holds the per-worker entries of
    :data:`LOCAL_STATE_KEYS` at every nesting level, ``shared`` the rest."""
    shared, local = {}, {}
    for key, value in sd.items():
        if key == "state" and isinstance(value, dict):
            shared["state"] = {k: v for k, v in value.items() if k not in LOCAL_STATE_KEYS}
            local["state"] = {k: v for k, v in value.items() if k in LOCAL_STATE_KEYS}
        elif key in NESTED_KEYS and isinstance(value, dict) and "state" in value:
            shared[key], local[key] = split_state(value)
        else:
            shared[key] = value
    return shared, local


def merge_state(shared: Dict[str, Any], local: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of :func:`split_state`: rank 0's shared entries with this worker's local ones."""
    out = dict(shared)
    for key, value in local.items():
        if key == "state":
            out["state"] = {**shared.get("state", {}), **value}
        elif key in shared and isinstance(shared[key], dict):
            out[key] = merge_state(shared[key], value)
    return out


def recut_server_residual(pieces: List[Tuple[Optional[int], Optional[int], Dict[str, torch.Tensor]]],
                          numels: Dict[str, int], align: int, new_size: int, new_rank: int
                          ) -> Dict[str, torch.Tensor]:
    """DoubleSqueeze's server residual for ``new_rank`` of ``new_size`` workers.

    ``pieces``: every current worker's ``(old_size, old_rank, {key: chunk residual})`` (``None``
    sizes for workers that joined with no state). The chunks are placed at the old world's chunk
    bounds of each tensor (``numels[key]`` values, ``align`` as the codec's alignment), the chunks
    of workers that are gone stay zero, and the full residual is cut to the new bounds.
    """
    old_sizes = {size for size, _, res in pieces if size is not None and res}
    if len(old_sizes) != 1:
        return {}  # nothing committed yet (or inconsistent commits): start from zero
    (old_size,) = old_sizes
    out = {}
    for key, n in numels.items():
        full = torch.zeros(n, dtype=torch.float32)
        old_bounds = chunk_bounds(n, old_size, align)
        for size, rank, res in pieces:
            chunk = res.get(key)
            if size == old_size and chunk is not None and 0 <= rank < old_size:
                lo, hi = old_bounds[rank]
                if chunk.numel() == hi - lo:
                    full[lo:hi] = chunk.reshape(-1).to(torch.float32)
        lo, hi = chunk_bounds(n, new_size, align)[new_rank]
        out[key] = full[lo:hi].clone()
    return out


def _world() -> Tuple[int, int]:
    import horovod.torch as hvd
    return hvd.size(), hvd.rank()


def _exchanges_of(codec: Codec):
    engine = getattr(codec, "_stock", None)
    if engine is not None:
        yield engine


class CodecStateHandler:
    """``hvd.elastic.TorchState`` handler for an hvd_compress torch codec (see the module doc).

    ``engines``: extra objects with ``reset_world()`` to call on sync (the exchange of an
    :class:`hvd_compress.torch.DistributedOptimizer`); the codec's own stock-API engine is found
    on the codec."""

    def __init__(self, codec: Codec, engines=()):
        self.value = codec
        self.engines = list(engines)
        self.save()

    def save(self):
        self._saved = copy.deepcopy(self.value.state_dict())
        self._saved_world = self._current_world()
        self._world = self._saved_world

    def restore(self):
        self.value.load_state_dict(copy.deepcopy(self._saved))
        self._world = self._saved_world

    def set_value(self, value):
        self.value = value
        self.save()

    @staticmethod
    def _current_world():
        try:
            return _world()
        except ValueError:  # Horovod not initialized (a state built before hvd.init())
            return None

    def sync(self):
        from horovod.torch.functions import allgather_object, broadcast_object
        codec = self.value
        old_world, (size, rank) = self._world, _world()
        shared, local = split_state(codec.state_dict())
        shared = broadcast_object(shared, root_rank=0, name="hvdc.elastic.codec_state")
        sd = merge_state(shared, local)
        if _has_server_residual(codec):
            # tensor sizes ("numel", recorded by DoubleSqueeze) are shared state: rank 0's
            numels = dict(sd["state"].get("numel", {}))
            server = sd["state"].get("server_residual", {})
            piece = (old_world[0], old_world[1], server) if old_world else (None, None, {})
            pieces = allgather_object(piece, name="hvdc.elastic.server_residual")
            sd["state"]["server_residual"] = recut_server_residual(pieces, numels, codec.alignment(), size, rank)
        codec.load_state_dict(sd)
        for engine in list(_exchanges_of(codec)) + self.engines:
            engine.reset_world()
        self._world = (size, rank)
        self.save()  # the committed copy now belongs to the new world


def _has_server_residual(codec) -> bool:
    from hvd_compress.torch.codecs.doublesqueeze import DoubleSqueeze
    return isinstance(codec, DoubleSqueeze)


class CompressedOptimizerStateHandler:
    """``hvd.elastic.TorchState`` handler for :class:`hvd_compress.torch.DistributedOptimizer`:
    the wrapped optimizer's state (like Horovod's own optimizer handler) plus the codec's
    (:class:`CodecStateHandler`)."""

    def __init__(self, optimizer: DistributedOptimizer):
        self.value = optimizer
        self.codec = CodecStateHandler(optimizer.codec, engines=[optimizer])
        self.save()

    def save(self):
        self._saved = copy.deepcopy(self.value.optimizer.state_dict())
        self.codec.save()

    def restore(self):
        self.value.optimizer.load_state_dict(copy.deepcopy(self._saved))
        self.codec.restore()

    def sync(self):
        from horovod.torch.functions import broadcast_optimizer_state
        # the wrapped optimizer: its step() is local, where ours would start an exchange
        broadcast_optimizer_state(self.value.optimizer, root_rank=0)
        self.codec.sync()
        self._saved = copy.deepcopy(self.value.optimizer.state_dict())

    def set_value(self, value):
        self.value = value
        self.codec = CodecStateHandler(value.codec, engines=[value])
        self.save()


def register() -> None:
    """Add the handlers to ``horovod.torch.elastic``'s registry (done on import; idempotent).
    Ours go first: :class:`hvd_compress.torch.DistributedOptimizer` is a ``torch.optim.Optimizer``
    and would otherwise get Horovod's plain optimizer handler."""
    from horovod.torch.elastic import state as hvd_state
    registry = [entry for entry in hvd_state.get_handler_registry()
                if entry[1] not in (CodecStateHandler, CompressedOptimizerStateHandler)]
    hvd_state.set_handler_registry([(DistributedOptimizer, CompressedOptimizerStateHandler),
                                    (Codec, CodecStateHandler)] + registry)


register()
