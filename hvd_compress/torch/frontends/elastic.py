"""Elastic Horovod (``hvd.elastic``) with codec state: commit, restore and re-sync on a reset.

Importing this module registers two handlers in ``horovod.torch.elastic``'s state-handler registry,
so ``hvd.elastic.TorchState`` treats hvd_compress objects like models and optimizers::

    import horovod.torch as hvd
    import hvd_compress.torch as hc
    import hvd_compress.torch.frontends.elastic  # noqa: F401  (registers the handlers)

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
from typing import Dict, List, Optional, Tuple

import torch

from hvd_compress import elastic as elastic_common
from hvd_compress.elastic import LOCAL_STATE_KEYS, NESTED_KEYS, merge_state, split_state  # noqa: F401 (re-exported)
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.frontends.optimizer import DistributedOptimizer


def recut_server_residual(
    pieces: List[Tuple[Optional[int], Optional[int], Dict[str, torch.Tensor]]],
    numels: Dict[str, int],
    align: int,
    new_size: int,
    new_rank: int,
) -> Dict[str, torch.Tensor]:
    """DoubleSqueeze's server residual for ``new_rank`` of ``new_size`` workers, as CPU float32
    tensors (:func:`hvd_compress.elastic.recut_server_residual` on torch tensors)."""
    pieces_np = [
        (size, rank, {k: v.detach().reshape(-1).to("cpu", torch.float32).numpy() for k, v in res.items()})
        for size, rank, res in pieces
    ]
    out = elastic_common.recut_server_residual(pieces_np, numels, align, new_size, new_rank)
    return {key: torch.from_numpy(value) for key, value in out.items()}


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

    registry = [
        entry
        for entry in hvd_state.get_handler_registry()
        if entry[1] not in (CodecStateHandler, CompressedOptimizerStateHandler)
    ]
    hvd_state.set_handler_registry(
        [(DistributedOptimizer, CompressedOptimizerStateHandler), (Codec, CodecStateHandler)] + registry
    )


register()
