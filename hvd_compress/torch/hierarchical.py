"""Hierarchical (topology-aware) exchange for the Horovod torch frontends.

Links inside a host (NVLink, PCIe, shared memory; in the emulated cluster each host's own ``lo``)
are much faster than the network between hosts, so only the cross-host leg is worth compressing.
With ``hierarchical=True`` (or ``"auto"`` where a host holds several ranks and there are several
hosts) a compressed tensor of ``n`` values goes through three legs:

1. **inside the host, uncompressed**: an fp32 allreduce (average) over the host's ranks (a Horovod
   process set per host). Every local rank then takes its shard: ``chunk_bounds(n, local_size,
   codec.alignment())``, shard ``i`` for the rank at position ``i`` of its host.
2. **across hosts, compressed**: shard ``i`` goes through the codec's ordinary exchange
   (:meth:`Exchange.average_compressed`: allgather or reduce-scatter, error feedback, shared
   scales) among the ranks holding shard ``i`` on every host (one Horovod process set per local
   position, ``cross_size`` ranks each). Each cross-host exchange carries ``1/local_size`` of the
   tensor, and the ``local_size`` of them run side by side, so the bytes leaving a host are one
   compressed tensor's worth instead of ``local_size`` of them.
3. **inside the host, uncompressed**: an allgather of the averaged shards over the host's ranks
   rebuilds the whole averaged tensor, identical on every rank of every host.

Error-feedback residuals and RNG steps stay per rank, in ``codec.state``, keyed by
``"<name>.shard<i>of<local_size>"`` (the shard this rank compresses), so they are part of
``state_dict()`` like the flat mode's. A checkpoint taken with another topology loads, and those
shard residuals start from zero.

Process sets. Horovod needs them registered: run with ``HOROVOD_DYNAMIC_PROCESS_SETS=1`` (the
exchange adds them on its first step, the same on every rank), or create them at ``hvd.init``
(:func:`host_process_sets` lists the rank lists to pass as
``hvd.init(process_sets=[hvd.ProcessSet(r) for r in ...])``); they are found and reused. Without
either, ``"auto"`` runs the flat exchange (with a warning) and ``True`` raises saying so.

What is counted in :func:`hvd_compress.torch.wire_stats`: the cross-host leg under the codec's
label (``sent_bytes`` per the cross-host collectives' sizes) and the two intra-host legs under
``"intra-host (fp32)"``.

Not covered: codecs with their own collective schedule (PowerSGD, GradiVeQ: they need the tensor's
matrix shape, which a shard does not have), a ``process_set=`` or custom ``comm=`` for the
optimizer, and hosts with different numbers of ranks. ``"auto"`` runs the flat exchange there;
``True`` raises ``ValueError`` saying why. TensorFlow: the same legs over Horovod's TF process
sets, :mod:`hvd_compress.tensorflow.hierarchical`.

torch.distributed (the DDP hook, over the default process group): hosts are told apart by
``socket.gethostname()`` (gathered once, when the exchange is built: every rank must build it,
as DDP's first hook call does), and the legs run over ``torch.distributed.new_group`` subgroups
(one per host, one per local position, created in the same order on every rank). ``torchrun
--nnodes 2 --nproc_per_node 2`` gives two hosts of two ranks: ``"auto"`` turns it on there.
"""

from __future__ import annotations

import os
import warnings
from typing import Dict, Generator, List, Optional, Tuple

import torch

from hvd_compress.common import chunk_bounds, ring_allreduce_bytes
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.collectives import HorovodCollectives
from hvd_compress.torch.exchange import WIRE_STATS, Exchange, WireStats, agree

INTRA_HOST = "intra-host (fp32)"


def _is_homogeneous() -> bool:
    """Horovod's own check (every host holds the same number of ranks); horovod.torch does not
    re-export it."""
    from horovod.torch.mpi_ops import _basics

    return bool(_basics.is_homogeneous())


def host_process_sets(hvd=None) -> Tuple[List[List[int]], List[List[int]]]:
    """``(per_host, per_local_position)`` rank lists from Horovod's topology: ``per_host[h]`` the
    ranks on host ``h`` (by ``cross_rank``), ``per_local_position[i]`` the ranks with
    ``local_rank == i`` on every host. Needs ``hvd.init()`` and equal ranks per host (the
    homogeneous layout ``horovodrun -H host1:P,host2:P`` gives); raises ``ValueError`` otherwise.
    A collective: every rank must call it."""
    if hvd is None:
        import horovod.torch as hvd
    if not _is_homogeneous():
        raise ValueError(
            "hvd_compress: the hierarchical exchange needs the same number of ranks on every host "
            f"(this job: local_size {hvd.local_size()} here, not the same everywhere)"
        )
    mine = torch.tensor([[hvd.rank(), hvd.cross_rank(), hvd.local_rank()]], dtype=torch.int64)
    table = hvd.allgather(mine, name="hvdc.hierarchical.topology").tolist()  # host sync (allow-listed): once
    hosts: Dict[int, List[int]] = {}
    for rank, cross_rank, _local in table:
        hosts.setdefault(cross_rank, []).append(rank)
    per_host = [sorted(hosts[h]) for h in sorted(hosts)]
    # position i inside a host is the rank's position in its sorted host set: the rank Horovod
    # gives it in that process set, so the intra-host allgather returns shards in shard order
    per_position = [sorted(host[i] for host in per_host) for i in range(len(per_host[0]))]
    return per_host, per_position


def _process_set(hvd, ranks: List[int]):
    """The registered Horovod process set with exactly ``ranks``, adding it if dynamic process sets
    are on; a ``ValueError`` saying how to enable them otherwise."""
    from horovod.common import process_sets as ps_mod
    from horovod.torch.mpi_ops import _basics

    existing = {tuple(r): i for i, r in _basics._get_process_set_ids_and_ranks().items()}
    if tuple(ranks) in existing:
        ps = ps_mod.ProcessSet(ranks)
        ps.process_set_id = existing[tuple(ranks)]
        return ps
    try:
        return hvd.add_process_set(ranks)
    except ValueError as exc:
        raise ValueError(
            f"hvd_compress: the hierarchical exchange needs a Horovod process set for ranks {ranks}: run with "
            "HOROVOD_DYNAMIC_PROCESS_SETS=1 (e.g. horovodrun -x HOROVOD_DYNAMIC_PROCESS_SETS=1, or set it before "
            "hvd.init()), or pass the sets to hvd.init(process_sets=...) (see "
            "hvd_compress.torch.hierarchical.host_process_sets), or use hierarchical=False. "
            f"Horovod said: {exc}"
        ) from exc


def _is_torch_dist(comm) -> bool:
    return type(comm).__name__ == "TorchDistCollectives"  # no import: dist.py needs torch.distributed


def unsupported_reason(codec: Codec, comm) -> Optional[str]:
    """Why the hierarchical exchange cannot run for ``codec`` over ``comm`` (None: it can). Over
    torch.distributed this gathers every rank's host name (a collective, see the module docstring)."""
    if type(codec).custom_exchange is not Codec.custom_exchange:
        return (
            f"codec {codec.describe()} runs its own collective schedule on the tensor's matrix shape, "
            "which a per-rank shard does not have"
        )
    if _is_torch_dist(comm):
        if comm.group is not None:
            return "it runs over the default torch.distributed process group (no process_group=)"
        sizes = {len(ranks) for ranks in TorchDistTopology.of(comm).per_host}
        return "hosts hold different numbers of ranks" if len(sizes) > 1 else None
    if not isinstance(comm, HorovodCollectives) or comm.process_set is not None:
        return "it runs over Horovod's global set of ranks (no process_set= or custom comm=)"
    if not _is_homogeneous():
        return "hosts hold different numbers of ranks"
    return None


def resolve(codec: Codec, comm) -> bool:
    """Whether ``codec.hierarchical`` turns the hierarchical exchange on over ``comm``: ``"auto"``
    where it can run and ``local_size > 1`` and ``cross_size > 1``; ``True`` where it can run
    (``ValueError`` with the reason otherwise); ``False`` never."""
    mode = codec.hierarchical
    if mode is False:
        return False
    reason = unsupported_reason(codec, comm)
    if mode is True:
        if reason is not None:
            raise ValueError(
                f"hvd_compress: hierarchical=True cannot run: {reason}. "
                "Use hierarchical='auto' (flat where it cannot run) or False."
            )
        return True
    if reason is not None:  # a custom comm= has no Horovod topology to ask
        return False
    if _is_torch_dist(comm):
        per_host = TorchDistTopology.of(comm).per_host
        return len(per_host) > 1 and len(per_host[0]) > 1
    hvd = comm._hvd
    if hvd.local_size() <= 1 or hvd.cross_size() <= 1:
        return False
    if not _process_sets_available(hvd):
        # the same answer on every rank (horovodrun forwards the environment; sets made at init
        # are the same everywhere), so all ranks fall back alike
        global _warned_no_sets
        if not _warned_no_sets:
            warnings.warn(
                "hvd_compress: hierarchical='auto' runs the flat exchange: Horovod process sets are "
                "off. Run with HOROVOD_DYNAMIC_PROCESS_SETS=1 to average inside each host uncompressed "
                "and compress only the cross-host leg (or pass hierarchical=False to silence this)."
            )
            _warned_no_sets = True
        return False
    return True


_warned_no_sets = False


def _process_sets_available(hvd) -> bool:
    """Whether the hierarchical process sets exist or can be added: dynamic process sets are on,
    or the per-host sets were passed to ``hvd.init(process_sets=...)``."""
    if os.environ.get("HOROVOD_DYNAMIC_PROCESS_SETS", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    from horovod.torch.mpi_ops import _basics

    registered = {tuple(r) for r in _basics._get_process_set_ids_and_ranks().values()}
    size, local = hvd.size(), hvd.local_size()
    # placement host by host (horovodrun -H): host h holds ranks h*local .. (h+1)*local-1
    hosts = {tuple(range(h * local, (h + 1) * local)) for h in range(size // local)}
    positions = {tuple(range(i, size, local)) for i in range(local)}
    return hosts <= registered and positions <= registered


class TorchDistTopology:
    """Hosts of a torch.distributed job: ``per_host[h]``, the global ranks on host ``h`` (hosts
    ordered by their lowest rank), from every rank's ``socket.gethostname()``. Gathered once per
    world (:meth:`of` caches it on the collectives object); a collective on first use."""

    def __init__(self, per_host: List[List[int]]):
        self.per_host = per_host

    @classmethod
    def of(cls, comm) -> "TorchDistTopology":
        cached = getattr(comm, "_hvdc_topology", None)
        if cached is not None and cached[0] == (comm.size, comm.rank):
            return cached[1]
        import socket

        import torch.distributed as dist

        names: List[Optional[str]] = [None] * dist.get_world_size()
        dist.all_gather_object(names, socket.gethostname())
        hosts: Dict[str, List[int]] = {}
        for rank, name in enumerate(names):
            hosts.setdefault(str(name), []).append(rank)
        topo = cls(sorted(hosts.values()))
        comm._hvdc_topology = ((comm.size, comm.rank), topo)
        return topo

    def legs(self, comm):
        """``(local comm, cross comm, position)`` over new subgroups: every rank creates every
        group in the same order, as ``torch.distributed.new_group`` requires."""
        import torch.distributed as dist

        from hvd_compress.torch.dist import TorchDistCollectives

        per_host = self.per_host
        per_position = [sorted(host[i] for host in per_host) for i in range(len(per_host[0]))]
        me = dist.get_rank()
        local_groups = [dist.new_group(ranks) for ranks in per_host]
        cross_groups = [dist.new_group(ranks) for ranks in per_position]
        host = next(i for i, r in enumerate(per_host) if me in r)
        position = per_host[host].index(me)
        return (
            TorchDistCollectives(local_groups[host], device=comm.device),
            TorchDistCollectives(cross_groups[position], device=comm.device),
            position,
        )


class HierarchicalExchange(Exchange):
    """:class:`Exchange` whose compressed tensors average inside the host uncompressed and go
    compressed across hosts on a ``1/local_size`` shard (see the module docstring). Tensors the
    codec leaves uncompressed keep the flat fp32 allreduce over all ranks (``self.comm``)."""

    hierarchical = True

    def __init__(self, codec: Codec, comm, label: Optional[str] = None, stats: WireStats = WIRE_STATS):
        super().__init__(codec, comm, label, stats)
        self.local = self.cross_comm = self.cross = None  # set up after the config check agrees

    def check_config(self) -> Generator:
        # The fingerprint (which holds an explicit hierarchical=) is agreed first, so a rank that
        # runs flat fails here with the others instead of leaving them in the topology allgather.
        yield from super().check_config()
        yield from agree(
            self.comm,
            "hierarchical",
            "hvdc.hierarchical_check",
            "ranks chose different exchange modes (hierarchical vs flat)",
            "Pass the same hierarchical= setting on every rank and run the same number of ranks " "on every host.",
        )
        self._setup()

    def _setup(self) -> None:
        if _is_torch_dist(self.comm):
            topo = TorchDistTopology.of(self.comm)
            per_host = topo.per_host
            self.local, self.cross_comm, self.position = topo.legs(self.comm)
        else:
            hvd = self.comm._hvd
            per_host, per_position = host_process_sets(hvd)
            local_sets = [_process_set(hvd, r) for r in per_host]  # the same order on every rank
            cross_sets = [_process_set(hvd, r) for r in per_position]
            me = hvd.rank()
            host = next(i for i, r in enumerate(per_host) if me in r)
            self.position = per_host[host].index(me)
            self.local = HorovodCollectives(local_sets[host])
            self.cross_comm = HorovodCollectives(cross_sets[self.position])
        self.local_size, self.cross_size = len(per_host[0]), len(per_host)
        self.cross = Exchange(self.codec, self.cross_comm, label=self.label, stats=self.stats)
        # agreed above, over all ranks: the cross exchange never runs its own check
        self.cross._checked_world = (self.cross_comm.size, self.cross_comm.rank)

    def shard_key(self, key: str) -> str:
        """The name of this rank's shard of ``key``: its codec state and its collectives' names."""
        return f"{key}.shard{self.position}of{self.local_size}"

    def average(self, key: str, tensor: torch.Tensor, compress: Optional[bool] = None) -> Generator:
        if compress is None:
            compress = self.codec.should_compress(tensor)
        if not compress or tensor.numel() == 0:
            return (yield from super().average(key, tensor, compress=False))
        if self.cross is None:
            raise RuntimeError("hvd_compress: call ensure_checked() before the first hierarchical exchange")
        shape, dtype = tensor.shape, tensor.dtype
        flat = tensor.detach().reshape(-1).to(torch.float32).contiguous()
        n, local_n = flat.numel(), self.local_size
        host_mean = yield self.local.allreduce_async(flat, name=f"hvdc.{key}.host", op="average")
        lo, hi = chunk_bounds(n, local_n, self.codec.alignment())[self.position]
        shard = host_mean[lo:hi].contiguous()
        if hi > lo:
            shard = yield from self.cross.average_compressed(self.shard_key(key), shard)
        whole = yield self.local.allgather_async(shard.contiguous(), name=f"hvdc.{key}.host_ag")
        self.stats.add(
            INTRA_HOST, 0, 4 * n, ring_allreduce_bytes(4 * n, local_n) + 4 * n * (local_n - 1) / local_n, tensors=0
        )
        out = whole.view(shape).to(dtype)
        yield from self.check_finite(key, tensor, out)  # the whole tensor, alike on every rank
        return out


def make_exchange(codec: Codec, comm, label: Optional[str] = None) -> Exchange:
    """The exchange ``codec.hierarchical`` asks for over ``comm``: :class:`HierarchicalExchange`
    or the flat :class:`Exchange`. A collective where it resolves to hierarchical (every rank
    must construct it, as with the optimizers). The hierarchical exchange runs its legs on the
    unfused backend (its process sets are its own), so a fused ``comm`` is unwrapped for it."""
    base = getattr(comm, "unfused", comm)
    if resolve(codec, base):
        return HierarchicalExchange(codec, base, label)
    return Exchange(codec, comm, label)
