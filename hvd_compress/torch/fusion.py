"""Fused compressed buckets: many tensors' collectives as one collective per bucket.

Horovod fuses allreduces into one buffer per cycle, but every compressed tensor's exchange is its
own allgather/alltoall (Horovod negotiates each name each cycle, and on a real network each
collective also pays a latency). :class:`FusedCollectives` wraps a collectives backend
(:mod:`hvd_compress.torch.collectives`) and turns the collectives that the exchange generators
issue in one round into one collective per kind and bucket:

* ``allgather``: every member's flat bytes concatenated (in name order), one allgather, each
  rank's block cut back into members;
* ``alltoall``: per destination, every member's part for it concatenated; one alltoall whose
  splits are the sums; what each source sent is cut back into members;
* ``allreduce``: members of one dtype and op concatenated, one allreduce, sliced back.

Data movement is unchanged byte for byte, so a fused exchange decodes exactly what the unfused one
does (allgather/alltoall results are bit-identical; a fused allreduce sums the same values, in an
order that depends on the backend's ring, like Horovod's own fusion buffer).

When a round is cut into buckets. Exchange generators are driven round by round
(:class:`hvd_compress.torch.exchange.Driver`): every generator issues its next collective before
any rank blocks on one. The wrapper queues what is issued and flushes the queue when someone waits
on a queued collective (or :meth:`FusedCollectives.flush` is called, as the optimizer does when a
bucket of gradients is ready), so one flush holds one round's collectives of the same tensors on
every rank. Members are sorted by name and cut into buckets of at most ``bucket_bytes`` bytes (a
member larger than that is a bucket of its own). Every rank therefore forms the same buckets; the
fused collective's name is derived from its members' names, so Horovod matches it across ranks.

Safety: each rank's block in a fused allgather/alltoall starts with a 4-byte fingerprint of the
bucket's layout (member names and byte sizes). A rank whose layout differs (another model, other
shapes under the same names) makes every rank raise the same ``ValueError`` naming the problem,
instead of slicing wrong or hanging. The 4 bytes per rank and bucket are counted in
:func:`collective_stats`, not in ``wire_stats()`` (which stays the codecs' payload bytes).

How to tune: ``bucket_bytes`` trades latency for pipelining. One bucket per round (64 MiB of
compressed payload, Horovod's fusion-buffer size: ``hc.DistributedOptimizer``'s default)
minimises collectives per step; smaller buckets let the first buckets' collectives run while later
ones are encoded. ``0`` disables fusion (one collective per tensor): the stock API's default,
where a fused round would wait for ``synchronize()`` (docs/fusion.md has the measurement).
"""

from __future__ import annotations

import threading
import zlib
from typing import Dict, List, Optional, Sequence

import torch

# The knob and the bucket cut are shared with the TensorFlow frontend (hvd_compress.common).
from hvd_compress.common import (  # noqa: F401 (re-exported)
    DEFAULT_BUCKET_BYTES,
    ENV_BUCKET_BYTES,
    bucket_bytes_from_env,
    cut_buckets,
)
from hvd_compress.torch.collectives import Pending

HEADER_BYTES = 4


class CollectiveStats:
    """Collectives handed to the backend, per kind, since start or the last reset; ``requested``
    counts the exchange's collectives before fusion (so fused/unfused is visible at a glance)."""

    KINDS = ("allreduce", "allgather", "alltoall")

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = {k: 0 for k in self.KINDS}
            self._requested = {k: 0 for k in self.KINDS}
            self._header_bytes = 0

    def add(self, kind: str, requested: int, header_bytes: int = 0) -> None:
        with self._lock:
            self._counts[kind] += 1
            self._requested[kind] += requested
            self._header_bytes += header_bytes

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            out = dict(self._counts)
            out["collectives"] = sum(self._counts.values())
            out["requested"] = sum(self._requested.values())
            out.update({f"requested_{k}": v for k, v in self._requested.items()})
            out["header_bytes"] = self._header_bytes
            return out


COLLECTIVE_STATS = CollectiveStats()


def collective_stats() -> Dict[str, int]:
    """Collectives the compressed exchanges handed to Horovod / torch.distributed since start or
    the last :func:`reset_collective_stats`: ``allreduce``, ``allgather``, ``alltoall``, their
    total ``collectives``, and ``requested`` (``requested_<kind>``): what the exchanges asked for
    before fusion. Unfused, the two are equal; fused, ``collectives`` is buckets x rounds. Horovod's
    own per-parameter allreduces (the stock API's placeholders, uncompressed tensors there) are not
    counted: Horovod fuses those itself."""
    return COLLECTIVE_STATS.snapshot()


def reset_collective_stats() -> None:
    COLLECTIVE_STATS.reset()


class _Member:
    __slots__ = ("kind", "tensor", "name", "op", "splits", "result", "error", "flushed", "bucket")

    def __init__(self, kind, tensor, name, op=None, splits=None):
        self.kind, self.tensor, self.name, self.op, self.splits = kind, tensor, name, op, splits
        self.result, self.error, self.flushed, self.bucket = None, None, False, None


class _Bucket:
    """One fused collective in flight and the members it carries."""

    __slots__ = ("pending", "finish", "done", "members")

    def __init__(self, members, pending, finish):
        self.members, self.pending, self.finish, self.done = members, pending, finish, False

    def wait(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.finish(self.pending.wait())
        except BaseException as exc:  # every member of the bucket reports it
            for m in self.members:
                m.error = exc


class FusedCollectives:
    """A collectives backend that fuses what is issued in one round (see the module docstring).

    ``comm``: the backend (``HorovodCollectives``, ``TorchDistCollectives``, a test's local one).
    ``bucket_bytes=0`` passes every call straight through (still counted in
    :func:`collective_stats`). Anything not fused (broadcasts, reduce-scatters, process sets) is
    delegated to ``comm``.
    """

    def __init__(self, comm, bucket_bytes: int = DEFAULT_BUCKET_BYTES, stats: CollectiveStats = COLLECTIVE_STATS):
        if bucket_bytes < 0:
            raise ValueError(f"bucket_bytes must be >= 0 (0 disables fusion), got {bucket_bytes}")
        self.inner, self.bucket_bytes, self.stats = comm, int(bucket_bytes), stats
        self._queue: List[_Member] = []

    # Delegated, read live (elastic resets change rank and size under the wrapper).
    @property
    def rank(self) -> int:
        return self.inner.rank

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def unfused(self):
        """The wrapped backend, for collectives that must not be fused (variable-size ones)."""
        return self.inner

    def __getattr__(self, attr):  # broadcast_async, reducescatter_async, process_set, ...
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    @property
    def fused(self) -> bool:
        return self.bucket_bytes > 0

    def reset(self) -> None:
        """Drop queued collectives (after a failed step / an elastic reset: their peers are gone)."""
        self._queue = []

    # ------------------------------------------------------------------ the collectives
    def allreduce_async(self, tensor: torch.Tensor, name: str, op: str = "average") -> Pending:
        if not self.fused:
            self.stats.add("allreduce", 1)
            return self.inner.allreduce_async(tensor, name=name, op=op)
        return self._enqueue(_Member("allreduce", tensor, name, op=op))

    def allgather_async(self, tensor: torch.Tensor, name: str, sizes: Optional[Sequence[int]] = None) -> Pending:
        """``sizes``: every rank's element count, where they differ by rank (``None``: all send
        as many as this rank). Fusion needs them to cut the gathered buffer; unfused they are
        not needed."""
        if not self.fused or tensor.dim() != 1:
            self.stats.add("allgather", 1)
            return self.inner.allgather_async(tensor, name=name)
        return self._enqueue(
            _Member("allgather", tensor, name, splits=None if sizes is None else [int(n) for n in sizes])
        )

    def alltoall_async(self, tensor: torch.Tensor, splits: Sequence[int], name: str) -> Pending:
        if not self.fused or tensor.dim() != 1:
            self.stats.add("alltoall", 1)
            return self.inner.alltoall_async(tensor, splits, name=name)
        return self._enqueue(_Member("alltoall", tensor, name, splits=[int(s) for s in splits]))

    def _enqueue(self, member: _Member) -> Pending:
        self._queue.append(member)
        return Pending(lambda: self._wait(member))

    def _wait(self, member: _Member) -> torch.Tensor:
        if not member.flushed:
            self.flush()
        if member.bucket is None:  # its round's flush failed (the error was raised there)
            raise RuntimeError(
                f"hvd_compress: collective '{member.name}' was never issued: an earlier "
                "error in the same round stopped the flush"
            )
        member.bucket.wait()
        if member.error is not None:
            raise member.error
        return member.result

    # ------------------------------------------------------------------ flushing
    def flush(self) -> None:
        """Issue every queued collective, fused into buckets (deterministic on every rank: members
        sorted by kind, dtype, op and name, cut at ``bucket_bytes``)."""
        queue, self._queue = self._queue, []
        groups: Dict[tuple, List[_Member]] = {}
        for m in queue:
            m.flushed = True
            groups.setdefault((m.kind, str(m.tensor.dtype), m.op or "", str(m.tensor.device)), []).append(m)
        for key in sorted(groups):
            members = sorted(groups[key], key=lambda m: m.name)
            names = [m.name for m in members]
            if len(set(names)) != len(names):
                raise ValueError(
                    f"hvd_compress: two collectives named {sorted({n for n in names if names.count(n) > 1})}"
                    " in one round; names must be unique"
                )
            for bucket in self._cut(members):
                self._issue(key[0], bucket)

    def _cut(self, members: List[_Member]) -> List[List[_Member]]:
        return cut_buckets(members, lambda m: m.tensor.numel() * m.tensor.element_size(), self.bucket_bytes)

    def _issue(self, kind: str, members: List[_Member]) -> None:
        if len(members) == 1:  # nothing to fuse: the member's own collective, under its own name
            m = members[0]
            if kind == "allreduce":
                pending = self.inner.allreduce_async(m.tensor, name=m.name, op=m.op)
            elif kind == "allgather":
                pending = self.inner.allgather_async(m.tensor, name=m.name)
            else:
                pending = self.inner.alltoall_async(m.tensor, m.splits, name=m.name)
            self.stats.add(kind, 1)

            def finish_one(out, m=m):
                m.result = out

            self._attach(members, pending, finish_one)
            return
        tag = zlib.crc32("\0".join(m.name for m in members).encode())
        name = f"hvdc.fused.{kind}.{len(members)}.{tag:08x}"
        if kind == "allreduce":
            self._issue_allreduce(members, name)
        elif kind == "allgather":
            self._issue_allgather(members, name)
        else:
            self._issue_alltoall(members, name)

    def _attach(self, members, pending, finish) -> None:
        bucket = _Bucket(members, pending, finish)
        for m in members:
            m.bucket = bucket

    def _issue_allreduce(self, members: List[_Member], name: str) -> None:
        flat = torch.cat([m.tensor.reshape(-1) for m in members])
        pending = self.inner.allreduce_async(flat, name=name, op=members[0].op)
        self.stats.add("allreduce", len(members))

        def finish(out):
            pos = 0
            for m in members:
                n = m.tensor.numel()
                m.result = out[pos : pos + n].view(m.tensor.shape)
                pos += n

        self._attach(members, pending, finish)

    # byte-level layouts (every fused block starts with the layout's fingerprint)
    def _fingerprint(self, members: List[_Member], layout: List[List[int]], device) -> torch.Tensor:
        """4 bytes naming the whole bucket: members and every rank's byte count for each. Every
        rank sends it to every peer and compares what it receives with its own, so a rank whose
        layout differs anywhere is seen by all (and all raise alike)."""
        text = ";".join(f"{m.name}:{','.join(map(str, sizes))}" for m, sizes in zip(members, layout))
        value = zlib.crc32(text.encode())
        return torch.tensor(list(value.to_bytes(4, "little")), dtype=torch.uint8, device=device)

    def _layout_error(self, kind: str, members: List[_Member], detail: str) -> ValueError:
        names = ", ".join(m.name for m in members[:4]) + (" ..." if len(members) > 4 else "")
        return ValueError(
            f"hvd_compress: the ranks' fused {kind} buckets differ ({detail}; bucket of {len(members)} "
            f"tensors: {names}). Every rank must exchange the same tensors with the same shapes "
            "(the same model and codec); set HVD_COMPRESS_BUCKET_BYTES=0 / bucket_bytes=0 to "
            "exchange tensor by tensor and see which one differs."
        )

    def _issue_allgather(self, members: List[_Member], name: str) -> None:
        device = members[0].tensor.device
        world, me = self.size, self.rank
        as_bytes = [m.tensor.contiguous().view(torch.uint8) for m in members]
        # bytes of each member in each rank's block: the exchange says where sizes differ by rank
        # (each owner's re-encoded chunk); otherwise every rank sends what this one does
        per_rank = [
            [b.numel()] * world if m.splits is None else [s * m.tensor.element_size() for s in m.splits]
            for m, b in zip(members, as_bytes)
        ]
        for m, b, sizes in zip(members, as_bytes, per_rank):
            if sizes[me] != b.numel():
                raise ValueError(
                    f"hvd_compress: allgather '{m.name}' sends {b.numel()} bytes but its "
                    f"sizes say {sizes[me]} for rank {me}"
                )
        header = self._fingerprint(members, per_rank, device)
        send = torch.cat([header] + as_bytes)
        pending = self.inner.allgather_async(send, name=name)
        self.stats.add("allgather", len(members), HEADER_BYTES * world)
        block = [HEADER_BYTES + sum(sizes[r] for sizes in per_rank) for r in range(world)]

        def finish(out):
            if out.numel() != sum(block):
                raise self._layout_error("allgather", members, f"{out.numel()} bytes gathered, {sum(block)} expected")
            starts = [sum(block[:r]) for r in range(world)]
            heads = torch.stack([out[a : a + HEADER_BYTES] for a in starts])
            # one host sync per bucket (not per tensor): the check must decide before slicing
            if not bool((heads == header).all()):
                raise self._layout_error("allgather", members, "layout fingerprints differ")
            offsets = [a + HEADER_BYTES for a in starts]
            for m, sizes in zip(members, per_rank):
                pieces = []
                for r in range(world):
                    pieces.append(out[offsets[r] : offsets[r] + sizes[r]])
                    offsets[r] += sizes[r]
                m.result = torch.cat(pieces).view(m.tensor.dtype)

        self._attach(members, pending, finish)

    def _issue_alltoall(self, members: List[_Member], name: str) -> None:
        device = members[0].tensor.device
        world, me = self.size, self.rank
        row = [m.tensor.element_size() for m in members]
        parts: List[List[torch.Tensor]] = [[] for _ in range(world)]
        per_dest_sizes: List[List[int]] = [[] for _ in range(world)]
        for m, esize in zip(members, row):
            data = m.tensor.contiguous().view(torch.uint8)
            pos = 0
            for d, s in enumerate(m.splits):
                nb = s * esize
                parts[d].append(data[pos : pos + nb])
                per_dest_sizes[d].append(nb)
                pos += nb
        # what I expect from each source: the codecs' payload sizes depend only on the tensor's
        # size and the world (chunk bounds), so they equal my own part for myself
        expect = per_dest_sizes[me]
        header = self._fingerprint(members, [[s * e for s in m.splits] for m, e in zip(members, row)], device)
        blocks = [torch.cat([header] + parts[d]) for d in range(world)]
        send = torch.cat(blocks)
        splits = [b.numel() for b in blocks]
        pending = self.inner.alltoall_async(send, splits, name=name)
        self.stats.add("alltoall", len(members), HEADER_BYTES * world)
        block = HEADER_BYTES + sum(expect)

        def finish(out):
            if out.numel() != world * block:
                raise self._layout_error(
                    "alltoall", members, f"{out.numel()} bytes received, {world} x {block} expected"
                )
            got = out.view(world, block)
            if not bool((got[:, :HEADER_BYTES] == header).all()):
                raise self._layout_error("alltoall", members, "layout fingerprints differ")
            pos = HEADER_BYTES
            for m, n in zip(members, expect):
                m.result = got[:, pos : pos + n].reshape(-1).view(m.tensor.dtype)
                pos += n

        self._attach(members, pending, finish)


def fused(comm, bucket_bytes: Optional[int] = None) -> FusedCollectives:
    """``comm`` wrapped in :class:`FusedCollectives` (``bucket_bytes=None``: from
    ``HVD_COMPRESS_BUCKET_BYTES``, default 64 MiB); an already wrapped ``comm`` is returned as is."""
    if isinstance(comm, FusedCollectives):
        return comm
    return FusedCollectives(comm, bucket_bytes_from_env() if bucket_bytes is None else bucket_bytes)
