"""hvd_compress's own DistributedOptimizer: bucketed small tensors, codec state in state_dict()."""
from __future__ import annotations

import zlib
from typing import Dict, Iterable, Optional, Tuple

import torch

from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.collectives import HorovodCollectives
from hvd_compress.torch.exchange import Driver, agree, drive
from hvd_compress.torch.fusion import fused
from hvd_compress.torch.hierarchical import make_exchange
from hvd_compress.torch.spec import from_spec
from hvd_compress.torch.wrapped import WrappedOptimizer

STATE_KEY = "hvd_compress"


class DistributedOptimizer(WrappedOptimizer):
    """Wraps any torch optimizer (by delegation): averages gradients over Horovod ranks with a
    codec, then steps the wrapped optimizer.

    Differences from ``hvd.DistributedOptimizer(compression=codec)``, which also works:

    * tensors that the codec leaves uncompressed (small, 1-D, integer) are fused into one fp32
      allreduce per dtype instead of one Horovod request each;
    * codec state (error-feedback residuals, RNG steps), keyed by parameter name, is part of
      ``state_dict()`` / ``load_state_dict()``, also before the first step;
    * the exchange runs in ``step()`` (or an explicit ``synchronize()``), after backward, so
      gradient accumulation needs nothing special: call ``step()`` when you want to communicate.

    Example::

        hvd.init()
        opt = hvd_compress.torch.DistributedOptimizer(
            torch.optim.SGD(model.parameters(), lr=0.1),
            named_parameters=model.named_parameters(), compression="onebit")
        loss.backward(); opt.step(); opt.zero_grad()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)

    ``bucket_bytes``: the compressed exchanges of one round are fused into one collective per
    bucket of at most this many payload bytes (:mod:`hvd_compress.torch.fusion`); ``None`` reads
    ``HVD_COMPRESS_BUCKET_BYTES`` (default 64 MiB), ``0`` exchanges tensor by tensor.

    How to tune: raise the codec's ``min_numel`` if many mid-sized tensors dominate latency (they
    then ride the fused fp32 allreduce); lower it to compress more of the model.
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 named_parameters: Optional[Iterable[Tuple[str, torch.nn.Parameter]]] = None,
                 compression: "Codec | str" = "none", process_set=None, comm=None,
                 bucket_bytes: Optional[int] = None):
        self.optimizer = optimizer
        self.codec = from_spec(compression)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if named_parameters is None:
            named = [(f"param.{i}", p) for i, p in enumerate(params)]
        else:
            named = list(named_parameters)
        names = [n for n, _ in named]
        if len(set(names)) != len(names):
            dups = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"parameter names must be unique; duplicates: {dups}")
        by_id = {id(p): n for n, p in named}
        missing = [i for i, p in enumerate(params) if id(p) not in by_id]
        if missing:
            raise ValueError(f"named_parameters does not name {len(missing)} of the optimizer's "
                             "parameters; pass model.named_parameters() for the model the optimizer trains")
        # A fixed order (sorted by name) so every rank fuses and exchanges the same way.
        self._params = sorted(((by_id[id(p)], p) for p in params if p.requires_grad), key=lambda t: t[0])
        # one fused collective per bucket and round (fusion.py); bucket_bytes=0: one per tensor
        self.comm = fused(comm if comm is not None else HorovodCollectives(process_set), bucket_bytes)
        self.exchange = make_exchange(self.codec, self.comm)  # flat, or hierarchical (codec.hierarchical)
        self._layout_checked = None  # (size, rank) the parameter-layout agreement last ran for

    def __repr__(self):
        return f"hvd_compress.DistributedOptimizer({self.optimizer!r}, compression={self.codec})"

    # communication
    def synchronize(self) -> None:
        """Average every parameter's gradient over the ranks, in place."""
        self.exchange.ensure_checked()
        self._check_layout()
        self.comm.reset()  # collectives queued by a step that failed half-way are stale
        driver = Driver()
        fused: Dict[torch.dtype, list] = {}
        for name, p in self._params:
            if p.grad is None:  # another rank may have computed it; everyone must take part
                p.grad = torch.zeros_like(p)
            if p.grad.is_sparse:
                raise ValueError(f"sparse gradient for '{name}': use dense gradients "
                                 "(e.g. nn.Embedding(sparse=False)) with hvd_compress")
            if self.codec.should_compress(p.grad):
                driver.start(name, self.exchange.average(name, p.grad))
            else:
                fused.setdefault(p.grad.dtype, []).append((name, p))
        for dtype, members in fused.items():
            flat = torch.cat([p.grad.detach().reshape(-1) for _, p in members])
            driver.start(_fused_key(dtype), self.exchange.average(_fused_key(dtype), flat, compress=False))
        results = driver.finish()
        for name, p in self._params:
            if name in results:
                p.grad.copy_(results[name])
        for dtype, members in fused.items():
            out, pos = results[_fused_key(dtype)], 0
            for _, p in members:
                n = p.grad.numel()
                p.grad.copy_(out[pos:pos + n].view_as(p.grad))
                pos += n

    def reset_world(self) -> None:
        """After an elastic reset: drop queued collectives and re-run the agreement checks (codec
        settings, parameter layout) in the new world at the next step."""
        self.comm.reset()
        self.exchange.reset_world()
        self._layout_checked = None

    def _check_layout(self) -> None:
        """Once per world: every rank trains the same parameter names and shapes (otherwise the
        fused buckets would differ and Horovod would wait forever for a name no peer sends)."""
        world = (self.comm.size, self.comm.rank)
        if self._layout_checked == world:
            return
        text = ";".join(f"{n}:{tuple(p.shape)}" for n, p in self._params)
        digest = f"{len(self._params)} tensors, layout {zlib.crc32(text.encode()):08x}"
        drive({"hvdc.layout_check": agree(
            self.comm, digest, "hvdc.layout_check", "ranks train different parameters",
            "Build the same model on every rank and pass its named_parameters().")})
        self._layout_checked = world

    def step(self, closure=None):
        self.synchronize()
        return self.optimizer.step(closure)

    # checkpointing
    def state_dict(self):
        sd = self.optimizer.state_dict()
        sd[STATE_KEY] = self.codec.state_dict()
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop(STATE_KEY, None)
        self.optimizer.load_state_dict(state_dict)
        if saved is not None:
            self.codec.load_state_dict(saved)


def _fused_key(dtype: torch.dtype) -> str:
    """Name of the one plain allreduce that carries every uncompressed gradient of ``dtype``."""
    return "fused." + str(dtype).replace("torch.", "")
