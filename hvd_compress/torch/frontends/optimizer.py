"""hvd_compress's own DistributedOptimizer: bucketed small tensors, codec state in state_dict()."""

from __future__ import annotations

import zlib
from typing import Dict, Iterable, Optional, Tuple

import torch

from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.collectives import HorovodCollectives
from hvd_compress.torch.exchange import Driver, agree, drive
from hvd_compress.torch.fusion import cut_buckets, fused
from hvd_compress.torch.hierarchical import make_exchange
from hvd_compress.torch.spec import from_spec
from hvd_compress.torch.frontends.wrapped import WrappedOptimizer

STATE_KEY = "hvd_compress"


class DistributedOptimizer(WrappedOptimizer):
    """Wraps any torch optimizer (by delegation): averages gradients over Horovod ranks with a
    codec, then steps the wrapped optimizer.

    Differences from ``hvd.DistributedOptimizer(compression=codec)``, which also works:

    * tensors that the codec leaves uncompressed (small, 1-D, integer) are fused into one fp32
      allreduce per dtype instead of one Horovod request each;
    * codec state (error-feedback residuals, RNG steps), keyed by parameter name, is part of
      ``state_dict()`` / ``load_state_dict()``, also before the first step;
    * compressed gradients travel in buckets: each bucket's exchange starts from a gradient
      hook as soon as backward has produced all its gradients (``overlap=True``), one fused
      collective per bucket and round, and ``step()`` (or ``synchronize()``) waits for them;
    * gradient accumulation as in Horovod: ``backward_passes_per_step=N`` exchanges on the N-th
      backward pass before ``step()`` (more passes than that raise a clear error, as the exchange
      has already read the gradients); ``overlap=False`` exchanges only in ``step()``, so any
      number of passes accumulates.

    Example::

        hvd.init()
        opt = hvd_compress.torch.DistributedOptimizer(
            torch.optim.SGD(model.parameters(), lr=0.1),
            named_parameters=model.named_parameters(), compression="onebit")
        loss.backward(); opt.step(); opt.zero_grad()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)

    ``bucket_bytes``: gradients are grouped into buckets of at most this many gradient bytes, and
    the compressed exchanges of one round are fused into one collective per bucket
    (:mod:`hvd_compress.torch.fusion`); ``None`` reads ``HVD_COMPRESS_BUCKET_BYTES`` (default
    64 MiB, Horovod's fusion buffer), ``0`` exchanges tensor by tensor. Smaller buckets (DDP uses
    25 MiB) start earlier during backward; larger ones take fewer collectives.

    How to tune: raise the codec's ``min_numel`` if many mid-sized tensors dominate latency (they
    then ride the fused fp32 allreduce); lower it to compress more of the model.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        named_parameters: Optional[Iterable[Tuple[str, torch.nn.Parameter]]] = None,
        compression: "Codec | str" = "none",
        process_set=None,
        comm=None,
        bucket_bytes: Optional[int] = None,
        backward_passes_per_step: int = 1,
        overlap: bool = True,
    ):
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
            raise ValueError(
                f"named_parameters does not name {len(missing)} of the optimizer's "
                "parameters; pass model.named_parameters() for the model the optimizer trains"
            )
        # A fixed order (sorted by name) so every rank fuses and exchanges the same way; buckets
        # follow the optimizer's order, reversed (backward's order, roughly)
        self._order = [(by_id[id(p)], p) for p in params if p.requires_grad]
        self._params = sorted(self._order, key=lambda t: t[0])
        # one fused collective per bucket and round (fusion.py); bucket_bytes=0: one per tensor
        self.comm = fused(comm if comm is not None else HorovodCollectives(process_set), bucket_bytes)
        self.exchange = make_exchange(self.codec, self.comm)  # flat, or hierarchical (codec.hierarchical)
        self._layout_checked = None  # (size, rank) the parameter-layout agreement last ran for
        if backward_passes_per_step < 1:
            raise ValueError(f"backward_passes_per_step must be >= 1, got {backward_passes_per_step}")
        self.backward_passes_per_step = int(backward_passes_per_step)
        self._plan_buckets()
        self._hooks: list = []
        if overlap:
            self._register_hooks()

    def __repr__(self):
        return f"hvd_compress.DistributedOptimizer({self.optimizer!r}, compression={self.codec})"

    # communication
    def _plan_buckets(self) -> None:
        """Compressed parameters in reverse order (about the order backward produces their
        gradients), cut into buckets of ``bucket_bytes`` gradient bytes; the same on every rank."""
        limit = self.comm.bucket_bytes or 1  # unfused: every tensor is its own bucket
        compressed = [(name, p) for name, p in reversed(self._order) if self.codec.should_compress(p)]
        self._buckets = cut_buckets(compressed, lambda item: item[1].numel() * item[1].element_size(), limit)
        self._bucket_of = {}
        for i, bucket in enumerate(self._buckets):
            for name, _ in bucket:
                self._bucket_of[name] = i
        self._new_step()

    def _new_step(self) -> None:
        self._driver = Driver(self.comm)
        self._passes = {name: 0 for name, _ in self._params}
        self._left = [len(b) for b in self._buckets]
        self._started = [False] * len(self._buckets)

    def _register_hooks(self) -> None:
        for name, p in self._params:
            if hasattr(p, "register_post_accumulate_grad_hook"):
                self._hooks.append(
                    p.register_post_accumulate_grad_hook(lambda param, name=name: self._grad_ready(name))
                )

    def _grad_ready(self, name: str) -> None:
        """Backward produced ``name``'s gradient: on the last pass before ``step()``, the
        gradient is final, and when its bucket is complete, the bucket's exchange starts (it then
        runs in Horovod's background thread while backward goes on)."""
        passes = self._passes[name] + 1
        self._passes[name] = passes
        if passes > self.backward_passes_per_step:
            raise RuntimeError(
                f"hvd_compress: the gradient of '{name}' was computed {passes} times before step(), "
                f"but backward_passes_per_step={self.backward_passes_per_step}: its exchange had "
                "started already. Pass backward_passes_per_step=N to accumulate N backward passes "
                "(like Horovod), or overlap=False to exchange only in step()."
            )
        bucket = self._bucket_of.get(name)
        if passes == self.backward_passes_per_step and bucket is not None:
            self._left[bucket] -= 1
            if self._left[bucket] == 0:
                self._start_bucket(bucket)

    def _start_bucket(self, index: int) -> None:
        self.exchange.ensure_checked()  # blocking, once per world (all ranks reach it alike)
        self._check_layout()
        for name, p in self._buckets[index]:
            grad = _dense_grad(name, p)
            self._driver.start(name, self.exchange.average(name, grad), grad.device)
        self._started[index] = True
        self._driver.flush()  # this bucket alone: the same fused collectives on every rank

    def synchronize(self) -> None:
        """Average every parameter's gradient over the ranks, in place: waits for the buckets
        that backward started, starts the rest (and the small tensors' fused allreduce)."""
        try:
            self.exchange.ensure_checked()
            self._check_layout()
            for index, started in enumerate(self._started):
                if not started:
                    self._start_bucket(index)
            fused: Dict[torch.dtype, list] = {}
            for name, p in self._params:
                if name not in self._bucket_of:
                    fused.setdefault(_dense_grad(name, p).dtype, []).append((name, p))
            for dtype, members in fused.items():
                flat = torch.cat([p.grad.detach().reshape(-1) for _, p in members])
                self._driver.start(
                    _fused_key(dtype), self.exchange.average(_fused_key(dtype), flat, compress=False), flat.device
                )
            results = self._driver.finish()
        finally:
            self.comm.reset()
            self._new_step()
        for name, p in self._params:
            if name in results:
                p.grad.copy_(results[name])
        for dtype, members in fused.items():
            out, pos = results[_fused_key(dtype)], 0
            for _, p in members:
                n = p.grad.numel()
                p.grad.copy_(out[pos : pos + n].view_as(p.grad))
                pos += n

    def reset_world(self) -> None:
        """After an elastic reset: drop queued collectives and re-run the agreement checks (codec
        settings, parameter layout) in the new world at the next step."""
        self.comm.reset()
        self.exchange.reset_world()
        self._layout_checked = None
        self._new_step()

    def _check_layout(self) -> None:
        """Once per world: every rank trains the same parameter names and shapes (otherwise the
        fused buckets would differ and Horovod would wait forever for a name no peer sends)."""
        world = (self.comm.size, self.comm.rank)
        if self._layout_checked == world:
            return
        text = ";".join(f"{n}:{tuple(p.shape)}" for n, p in self._params)
        digest = f"{len(self._params)} tensors, layout {zlib.crc32(text.encode()):08x}"
        drive(
            {
                "hvdc.layout_check": agree(
                    self.comm,
                    digest,
                    "hvdc.layout_check",
                    "ranks train different parameters",
                    "Build the same model on every rank and pass its named_parameters().",
                )
            }
        )
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


def _dense_grad(name: str, p: torch.nn.Parameter) -> torch.Tensor:
    """``p.grad``, zeros where this rank computed none (another rank may have: everyone must
    take part in the exchange); a clear error for a sparse one."""
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    if p.grad.is_sparse:
        raise ValueError(
            f"sparse gradient for '{name}': use dense gradients " "(e.g. nn.Embedding(sparse=False)) with hvd_compress"
        )
    return p.grad


def _fused_key(dtype: torch.dtype) -> str:
    """Name of the one plain allreduce that carries every uncompressed gradient of ``dtype``."""
    return "fused." + str(dtype).replace("torch.", "")
