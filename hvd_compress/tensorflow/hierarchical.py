"""Hierarchical (topology-aware) exchange for the TensorFlow frontends.

The same three legs as :mod:`hvd_compress.torch.hierarchical` (read its docstring for the why):
with ``hierarchical=True`` (or ``"auto"`` where a host holds several ranks and there are several
hosts) a compressed tensor of ``n`` values is

1. averaged in fp32 inside the host (an allreduce over a Horovod process set per host);
2. cut into ``local_size`` shards (``chunk_bounds(n, local_size, codec.alignment())``); the rank
   at position ``i`` of its host runs the codec's ordinary exchange on shard ``i`` with the ranks
   at position ``i`` of the other hosts (one process set per position), so each host sends one
   compressed tensor's worth across hosts instead of ``local_size`` of them;
3. rebuilt by an allgather of the averaged shards inside the host.

State (error-feedback residuals, RNG steps, DoubleSqueeze's server residual) is keyed by
``"<name>.shard<i>of<local_size>"``, this rank's shard, and lives in the codec like the flat
mode's. Wire statistics: the cross-host leg under the codec's label, the intra-host legs under
``"intra-host (fp32)"``.

Process sets must exist: run with ``HOROVOD_DYNAMIC_PROCESS_SETS=1`` (added at the first step,
eagerly, in the same order on every rank) or pass them to ``hvd.init(process_sets=...)``. Without
them ``"auto"`` runs flat (with a warning) and ``True`` raises. Not covered, as in torch: codecs
with their own collective schedule (PowerSGD, GradiVeQ), a ``process_set=`` or custom ``comm=``,
hosts with different numbers of ranks (``"auto"`` runs flat there; ``True`` raises saying why).
"""

from __future__ import annotations

import os
import warnings
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from hvd_compress.common import chunk_bounds, ring_allreduce_bytes
from hvd_compress.tensorflow.codecs.base import Codec
from hvd_compress.tensorflow.collectives import HorovodCollectives, op_name
from hvd_compress.tensorflow.exchange import Exchange

INTRA_HOST = "intra-host (fp32)"
_warned_no_sets = False


def _basics():
    from horovod.tensorflow.mpi_ops import _basics as basics

    return basics


def unsupported_reason(codec: Codec, comm) -> Optional[str]:
    """Why the hierarchical exchange cannot run for ``codec`` over ``comm`` (None: it can)."""
    if type(codec).custom_exchange is not Codec.custom_exchange:
        return (
            f"codec {codec.describe()} runs its own collective schedule on the tensor's matrix shape, "
            "which a per-rank shard does not have"
        )
    if type(comm) is not HorovodCollectives or comm._kw:
        return "it runs over Horovod's global set of ranks (no process_set= or custom comm=)"
    if not comm._hvd.is_homogeneous():
        return "hosts hold different numbers of ranks"
    return None


def _sets_available(hvd) -> bool:
    if os.environ.get("HOROVOD_DYNAMIC_PROCESS_SETS", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    registered = {tuple(r) for r in _basics()._get_process_set_ids_and_ranks().values()}
    size, local = hvd.size(), hvd.local_size()
    hosts = {tuple(range(h * local, (h + 1) * local)) for h in range(size // local)}
    positions = {tuple(range(i, size, local)) for i in range(local)}
    return hosts <= registered and positions <= registered


def resolve(codec: Codec, comm) -> bool:
    """Whether ``codec.hierarchical`` turns the hierarchical exchange on over ``comm`` (see
    :func:`hvd_compress.torch.hierarchical.resolve`: the same rules)."""
    global _warned_no_sets
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
    if reason is not None:
        return False
    hvd = comm._hvd
    if hvd.local_size() <= 1 or hvd.cross_size() <= 1:
        return False
    if not _sets_available(hvd):
        if not _warned_no_sets:
            warnings.warn(
                "hvd_compress: hierarchical='auto' runs the flat exchange: Horovod process sets are "
                "off. Run with HOROVOD_DYNAMIC_PROCESS_SETS=1 to average inside each host uncompressed "
                "and compress only the cross-host leg (or pass hierarchical=False to silence this)."
            )
            _warned_no_sets = True
        return False
    return True


def _process_set(hvd, ranks: List[int]):
    """The registered Horovod process set with exactly ``ranks``, added if dynamic sets are on."""
    from horovod.common import process_sets as ps_mod

    existing = {tuple(r): i for i, r in _basics()._get_process_set_ids_and_ranks().items()}
    if tuple(ranks) in existing:
        ps = ps_mod.ProcessSet(ranks)
        ps.process_set_id = existing[tuple(ranks)]
        return ps
    try:
        return hvd.add_process_set(ranks)
    except ValueError as exc:
        raise ValueError(
            f"hvd_compress: the hierarchical exchange needs a Horovod process set for ranks {ranks}: run with "
            "HOROVOD_DYNAMIC_PROCESS_SETS=1, or pass the sets to hvd.init(process_sets=...), or use "
            f"hierarchical=False. Horovod said: {exc}"
        ) from exc


def host_process_sets(hvd) -> Tuple[List[List[int]], List[List[int]]]:
    """``(per_host, per_local_position)`` rank lists, gathered eagerly (a collective)."""
    with tf.init_scope():
        mine = tf.constant([[hvd.rank(), hvd.cross_rank(), hvd.local_rank()]], tf.int64)
        table = hvd.allgather(mine, name="hvdc_hierarchical_topology").numpy().tolist()
    hosts: Dict[int, List[int]] = {}
    for rank, cross_rank, _local in table:
        hosts.setdefault(cross_rank, []).append(rank)
    per_host = [sorted(hosts[h]) for h in sorted(hosts)]
    per_position = [sorted(host[i] for host in per_host) for i in range(len(per_host[0]))]
    return per_host, per_position


class HierarchicalExchange(Exchange):
    """:class:`Exchange` whose compressed tensors average inside the host in fp32 and cross hosts
    compressed on a ``1/local_size`` shard (see the module docstring)."""

    hierarchical = True

    def __init__(self, codec: Codec, comm: HorovodCollectives, label: Optional[str] = None, **kwargs):
        super().__init__(codec, comm, label, **kwargs)
        self.local: Optional[HorovodCollectives] = None
        self.cross: Optional[Exchange] = None

    def ensure_checked(self) -> None:
        """The codec agreement (all ranks), then the topology and the process sets (eagerly,
        the same order on every rank)."""
        if self.cross is not None:
            return
        super().ensure_checked()
        hvd = self.comm._hvd
        with tf.init_scope():
            per_host, per_position = host_process_sets(hvd)
            local_sets = [_process_set(hvd, r) for r in per_host]
            cross_sets = [_process_set(hvd, r) for r in per_position]
        me = hvd.rank()
        host = next(i for i, r in enumerate(per_host) if me in r)
        self.position = per_host[host].index(me)
        self.local_size = len(per_host[0])
        self.local = HorovodCollectives(local_sets[host])
        self.cross = Exchange(
            self.codec, HorovodCollectives(cross_sets[self.position]), label=self.label, stats=self.stats
        )
        self.cross._checked = True  # agreed above, over all ranks

    def reset_world(self) -> None:
        """After an elastic reset: topology and process sets are found again at the next step."""
        super().reset_world()
        self.local = self.cross = None

    def shard_key(self, key: str) -> str:
        return f"{key}.shard{self.position}of{self.local_size}"

    def _shard_bounds(self, n: int) -> Tuple[int, int]:
        return chunk_bounds(n, self.local_size, self.codec.alignment())[self.position]

    def build_state(self, key: str, shape, dtype) -> None:
        shape = tf.TensorShape(shape)
        if not shape.is_fully_defined():
            return
        n = int(shape.num_elements())
        if not self.codec.compresses(n, shape.rank, tf.as_dtype(dtype).is_floating):
            return super().build_state(key, shape, dtype)
        self.ensure_checked()
        lo, hi = self._shard_bounds(n)
        if hi > lo:
            self.cross.build_compressed_state(self.shard_key(key), hi - lo)

    @tf.autograph.experimental.do_not_convert
    def average(self, key: str, tensor: tf.Tensor, compress: Optional[bool] = None, check: bool = True) -> tf.Tensor:
        tensor = tf.convert_to_tensor(tensor)
        if compress is None:
            compress = self.codec.should_compress(tensor)
        n = tensor.shape.num_elements()
        if not compress or not n:
            return super().average(key, tensor, compress=compress, check=check)
        self.ensure_checked()
        shape, dtype = tensor.shape, tensor.dtype
        flat = tf.cast(tf.reshape(tensor, [-1]), tf.float32)
        host_mean = self.local.allreduce(flat, op_name(key, "host"), op="average")
        lo, hi = self._shard_bounds(int(n))
        shard = host_mean[lo:hi]
        if hi > lo:
            shard = self.cross.average(self.shard_key(key), shard, compress=True, check=False)
        whole = self.local.allgather(shard, op_name(key, "host_ag"))
        local_n = self.local_size
        self.stats.add(
            INTRA_HOST, 0, 4 * n, ring_allreduce_bytes(4 * n, local_n) + 4 * n * (local_n - 1) / local_n, tensors=0
        )
        out = tf.cast(tf.reshape(whole, shape), dtype)
        return self.check_finite(key, out) if check else out


def make_exchange(codec: Codec, comm, label: Optional[str] = None) -> Exchange:
    """The exchange ``codec.hierarchical`` asks for over ``comm``: hierarchical or flat."""
    if resolve(codec, comm):
        return HierarchicalExchange(codec, comm, label)
    return Exchange(codec, comm, label)
