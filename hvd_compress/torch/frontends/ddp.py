"""DDP communication hook: any hvd_compress codec inside ``torch.nn.parallel.DistributedDataParallel``.

``DistributedDataParallel`` groups gradients into buckets and, by default, allreduces each bucket
in fp32. A communication hook replaces that allreduce. :func:`ddp_comm_hook` builds one from any
hvd_compress codec (an object or a spec string), so the same codecs that ride Horovod ride DDP --
over Gloo, NCCL or MPI, and inside Ray Train's ``TorchTrainer`` (see ``docs/ray.md``).

Example (save as ``train.py``, run ``torchrun --nproc_per_node=2 train.py``)::

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    import hvd_compress.torch as hc

    dist.init_process_group("gloo")                      # "nccl" on GPUs
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    ddp = DDP(model)
    state, hook = hc.ddp_comm_hook("qsgd:bits=4", named_parameters=ddp.named_parameters())
    ddp.register_comm_hook(state, hook)                  # before the first forward
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    for step in range(100):
        x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(x), y).backward()   # the hook runs here
        opt.step()
    rank = dist.get_rank()                               # codec state travels with the checkpoint:
    if rank == 0:                                        # error-feedback residuals differ per rank,
        torch.save({"model": ddp.state_dict(), "opt": opt.state_dict()}, "ckpt.pt")
    torch.save(state.state_dict(), f"ckpt.comm_hook.rank{rank}.pt")     # so every rank saves its own
    print(hc.wire_stats())                               # bytes each codec handed to collectives
    dist.barrier()                                       # tear down together: torch 2.13's Gloo
    dist.destroy_process_group()                         # group can abort a rank whose peer left

    # resuming: build model, DDP, optimizer and hook as above, then, before the first step,
    #   ckpt = torch.load("ckpt.pt")
    #   ddp.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["opt"])
    #   state.load_state_dict(torch.load(f"ckpt.comm_hook.rank{rank}.pt"))
    # and training continues exactly where it stopped (tests/test_ddp.py checks bit-identity).

What the hook does per bucket: DDP hands over a flat buffer and its parameters. The hook names
each parameter (from ``named_parameters``), views the buffer as per-parameter gradients, runs
each compressible gradient through the codec's exchange (:class:`~hvd_compress.torch.exchange.
Exchange`: allreduce for summable codecs, bit-packed allgather or compressed reduce-scatter for
the others, or the codec's own ``custom_exchange`` -- PowerSGD, GradiVeQ), fuses the gradients the
codec leaves uncompressed (biases, small tensors) into one plain allreduce and returns a
``torch.futures.Future``. The collectives of every bucket start at once and stay in flight while
backward goes on; the last bucket's hook call runs all exchanges to the end (round by round, the
same order on every rank), writes the averages into the buffers and completes the futures
(``overlap=False`` finishes each bucket inside its own hook call instead). Every rank ends the step
with the same averaged gradient, so replicas stay bit-identical.

State is keyed by parameter *name*, not by bucket: DDP rebuilds its buckets after the first
iteration (in gradient-ready order), and a parameter's error-feedback residual, RNG step and
PowerSGD/GradiVeQ factors follow it wherever it lands. :meth:`DDPHookState.state_dict` /
:meth:`~DDPHookState.load_state_dict` save and restore that state with the rest of a checkpoint
(on every rank: residuals differ per rank).

Names: pass ``named_parameters`` (the DDP module's ``named_parameters()`` or the inner model's;
an ``nn.Module`` is accepted too). Without it parameters are named ``param.0``, ``param.1``, ...
in the order DDP's first buckets list them, which is the same on every rank and in every run of
the same model, but breaks if the model changes; pass real names for checkpoints you keep.

How to tune:

* The codec decides what to compress: ``min_numel`` (default 1024) and ``compress_1d`` (default
  False) keep small tensors and biases in the fused fp32 allreduce. ``hc.wire_stats()`` shows how
  many values went each way (``"uncompressed"`` row).
* ``bucket_cap_mb`` of DDP only changes how gradients are grouped, not what goes on the wire: the
  hook exchanges each parameter separately (uncompressed ones fused per bucket). Smaller buckets
  start communication earlier in backward; encoding runs in the backward thread either way.
* Gradient accumulation: use ``with ddp.no_sync():`` for the accumulation steps as usual; the hook
  runs only on the step that synchronizes.
* CUDA gradients stay on the GPU for the codecs with Triton kernels (QSGD, TernGrad, OneBit,
  EFSign, SignSGD, TopK; see ``hvd_compress.torch.kernels`` and docs/gpu.md): payloads are encoded,
  exchanged (NCCL, or Gloo's own host copies) and decoded on the gradient's device. Other codecs,
  or ``HVD_COMPRESS_BACKEND=native|plain``, encode CUDA gradients on a host copy.

Errors: a NaN/Inf gradient raises ``FloatingPointError`` naming the parameter on every rank (the
codec's ``nonfinite="propagate"`` lets it through for AMP instead); ranks built with different
codec settings get a ``ValueError`` listing each rank's codec at the first step, not a hang; sparse
gradients are rejected. Unused parameters (``find_unused_parameters=True``) take part as zeros.
"""

from typing import Any, Dict, Iterable, Optional, Tuple, Union

import torch
import torch.distributed as dist

from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.exchange import Driver, Exchange
from hvd_compress.torch.fusion import fused
from hvd_compress.torch.hierarchical import make_exchange
from hvd_compress.torch.kernels import runs_on_device
from hvd_compress.torch.spec import from_spec

__all__ = ["DDPHookState", "ddp_comm_hook", "hvd_compress_hook"]


class DDPHookState:
    """State of :func:`hvd_compress_hook`: the codec (its residuals, RNG steps, factors, keyed by
    parameter name), the parameter names, the process group and the exchange over it.

    Attributes:
        codec: the :class:`~hvd_compress.torch.codecs.base.Codec`.
        iteration: synchronized steps so far (buckets marked ``is_last`` seen).
        process_group: the group the hook communicates over (``None``: the default group).
    """

    def __init__(
        self,
        codec: Union[Codec, str],
        named_parameters: Optional[Union[Iterable[Tuple[str, torch.nn.Parameter]], torch.nn.Module]] = None,
        process_group=None,
        comm=None,
        overlap: bool = True,
        bucket_bytes: Optional[int] = None,
    ):
        self.codec = from_spec(codec)
        self.process_group = process_group
        self.iteration = 0
        self._names: Optional[Dict[int, str]] = None
        self._named_given = named_parameters is not None
        if named_parameters is not None:
            if isinstance(named_parameters, torch.nn.Module):
                named_parameters = named_parameters.named_parameters()
            named = list(named_parameters)
            names = [n for n, _ in named]
            if len(set(names)) != len(names):
                dups = sorted({n for n in names if names.count(n) > 1})
                raise ValueError(f"hvd_compress: parameter names must be unique; duplicates: {dups}")
            self._names = {id(p): n for n, p in named}
        else:
            self._names = {}
        self.overlap = bool(overlap)
        if bucket_bytes is not None and (isinstance(bucket_bytes, bool) or int(bucket_bytes) < 0):
            raise ValueError(
                f"hvd_compress: bucket_bytes must be >= 0 (0: one collective per tensor), " f"got {bucket_bytes!r}"
            )
        self.bucket_bytes = bucket_bytes  # None: HVD_COMPRESS_BUCKET_BYTES, default 64 MiB
        self._comm = comm
        self._exchange: Optional[Exchange] = None
        self._driver: Optional[Driver] = None
        self._buckets: list = []  # buckets of this backward pass whose exchange is in flight

    # ------------------------------------------------------------------ plumbing
    @property
    def comm(self):
        if self._comm is None:
            from hvd_compress.torch.dist import TorchDistCollectives

            # each round's collectives of a DDP bucket's tensors travel as one per kind
            self._comm = fused(TorchDistCollectives(self.process_group), self.bucket_bytes)
        return self._comm

    @property
    def exchange(self) -> Exchange:
        if self._exchange is None:
            # Agree on the codec first: choosing flat or hierarchical (codec.hierarchical; "auto":
            # on where a host holds several ranks and there are several hosts) gathers the ranks'
            # host names, a collective that ranks with different codecs would not all enter.
            Exchange(self.codec, self.comm).ensure_checked()
            self._exchange = make_exchange(self.codec, self.comm)
        return self._exchange

    def name_of(self, param: torch.Tensor) -> str:
        name = self._names.get(id(param))
        if name is None:
            if self._named_given:
                raise ValueError(
                    f"hvd_compress: DDP bucket holds a parameter of shape {tuple(param.shape)} that "
                    "named_parameters does not name; pass the named_parameters() of the module "
                    "wrapped by DistributedDataParallel"
                )
            name = f"param.{len(self._names)}"
            self._names[id(param)] = name
        return name

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> Dict[str, Any]:
        """The codec's state (per parameter name) and the iteration count; tensors are copies."""
        return {"codec": self.codec.state_dict(), "iteration": self.iteration}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved. The codec must be built with the same settings
        (otherwise a ``ValueError`` names both)."""
        if not isinstance(state_dict, dict) or "codec" not in state_dict:
            raise ValueError(
                "hvd_compress: not a DDP hook state (expected the dict returned by " "DDPHookState.state_dict())"
            )
        self.codec.load_state_dict(state_dict["codec"])
        self.iteration = int(state_dict.get("iteration", 0))

    def __repr__(self):
        return f"DDPHookState(codec={self.codec}, iteration={self.iteration})"

    # torch.distributed objects do not pickle; a pickled state keeps the codec and its state only
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_comm"], state["_exchange"], state["process_group"] = None, None, None
        state["_driver"], state["_buckets"] = None, []
        state["_names"], state["_named_given"] = {}, False
        return state


def hvd_compress_hook(state: DDPHookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The DDP communication hook: average the bucket's gradients with ``state.codec``.

    Register with ``ddp.register_comm_hook(state, hvd_compress_hook)``; :func:`ddp_comm_hook`
    builds the state and returns this function.
    """
    buffer = bucket.buffer()
    if buffer.is_sparse:
        raise ValueError(
            "hvd_compress: sparse gradients are not supported by the DDP hook; "
            "use dense gradients (e.g. nn.Embedding(sparse=False))"
        )
    exchange = state.exchange
    codec = exchange.codec
    exchange.ensure_checked()
    if state._driver is None:
        state._driver = Driver(state.comm)  # flushes a fused backend before each round's waits
    driver = state._driver
    # Device-resident where the codec has device kernels; otherwise the CPU codecs get host copies.
    staged = buffer.device.type != "cpu" and not runs_on_device(codec, buffer.device)
    compressed, plain = [], []
    for param, grad in zip(bucket.parameters(), bucket.gradients()):
        name = state.name_of(param)
        g = grad.detach().cpu() if staged else grad.detach()  # host sync (allow-listed): CPU codecs only
        if codec.should_compress(g):
            compressed.append((name, grad))
            driver.start(name, exchange.average(name, g), g.device)
        else:
            plain.append((name, grad, g))
    fused_key = None
    if plain:
        fused_key = "ddp.fused." + plain[0][0]
        flat = torch.cat([g.reshape(-1) for _, _, g in plain]) if len(plain) > 1 else plain[0][2].reshape(-1)
        driver.start(fused_key, exchange.average(fused_key, flat, compress=False), flat.device)
    driver.flush()  # this bucket's first round goes out now, fused, overlapping backward
    fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    state._buckets.append((fut, buffer, compressed, plain, fused_key))
    if bucket.is_last() or not state.overlap:
        _finish(state)
    if bucket.is_last():
        state.iteration += 1
    return fut


def _finish(state: DDPHookState) -> None:
    """Run every started exchange to the end, write the averages into the buckets, complete the
    futures (all of them, with the error if one failed, so DDP never waits forever)."""
    buckets, state._buckets = state._buckets, []
    driver, state._driver = state._driver, None
    try:
        results = driver.finish() if driver is not None else {}
        with torch.no_grad():
            for _, _, compressed, plain, fused_key in buckets:
                for name, grad in compressed:
                    grad.copy_(results[name].view_as(grad))
                if plain:
                    out, pos = results[fused_key], 0
                    for _, grad, _ in plain:
                        n = grad.numel()
                        grad.copy_(out[pos : pos + n].view_as(grad))
                        pos += n
    except BaseException as exc:
        for fut, _, _, _, _ in buckets:
            if not fut.done():
                fut.set_exception(exc)
        raise
    for fut, buffer, _, _, _ in buckets:
        fut.set_result(buffer)


def ddp_comm_hook(
    codec: Union[Codec, str],
    named_parameters: Optional[Union[Iterable[Tuple[str, torch.nn.Parameter]], torch.nn.Module]] = None,
    process_group=None,
    *,
    overlap: bool = True,
    bucket_bytes: Optional[int] = None,
):
    """``(state, hook)`` for ``ddp_model.register_comm_hook(state, hook)``.

    Args:
        codec: an hvd_compress codec object (``hc.QSGD(bits=4)``, ``hc.DoubleSqueeze(hc.OneBit())``,
            PowerSGD, GradiVeQ, ...) or a spec string (``"qsgd:bits=4"``, ``"onebit"``,
            ``"doublesqueeze:codec=onebit"``); see :func:`hvd_compress.torch.from_spec`.
        named_parameters: ``(name, parameter)`` pairs of the model DDP wraps, or the module itself
            (recommended: names key the codec state and the checkpoint).
        process_group: the group DDP runs over (``None``: the default group); pass the same one
            you gave ``DistributedDataParallel(process_group=...)``.
        overlap: ``True`` (default): each bucket's collectives start when DDP hands the bucket
            over and run while backward computes the earlier layers; the last bucket's hook
            finishes them all. ``False``: each hook call finishes its own bucket before returning.
        bucket_bytes: fusion of the compressed exchange (:mod:`hvd_compress.torch.fusion`): each
            round's collectives of the tensors in flight travel as one collective per kind and
            bucket of at most this many payload bytes, instead of one per tensor (a DDP bucket of
            50 weights: 1-2 collectives per round instead of 50). ``None`` (default):
            ``HVD_COMPRESS_BUCKET_BYTES``, else 64 MiB; ``0``: one collective per tensor. The bytes
            moved, and so the results, are the same either way.

    Returns:
        ``(state, hook)``: a :class:`DDPHookState` (checkpoint it with ``state.state_dict()``) and
        :func:`hvd_compress_hook`.

    Example::

        state, hook = hvd_compress.torch.ddp_comm_hook("onebit", ddp.named_parameters())
        ddp.register_comm_hook(state, hook)
    """
    return (
        DDPHookState(codec, named_parameters, process_group, overlap=overlap, bucket_bytes=bucket_bytes),
        hvd_compress_hook,
    )
