"""torch.distributed backend of the collectives interface (Gloo, NCCL, MPI, any process group).

:class:`TorchDistCollectives` offers what :class:`~hvd_compress.torch.collectives.HorovodCollectives`
offers -- ``rank``, ``size``, ``allreduce_async``, ``alltoall_async``, ``allgather_async``,
``broadcast_async``, each returning a :class:`~hvd_compress.torch.collectives.Pending` -- so the
same :class:`~hvd_compress.torch.exchange.Exchange` (every codec, every pattern) runs over a
torch.distributed process group. The DDP communication hook (:mod:`hvd_compress.torch.frontends.ddp`) uses it.

Example (any process group; ``torchrun --nproc_per_node=2 this.py``)::

    import torch, torch.distributed as dist
    from hvd_compress.torch.dist import TorchDistCollectives
    from hvd_compress.torch.exchange import Exchange, drive
    import hvd_compress.torch as hc

    dist.init_process_group("gloo")
    comm = TorchDistCollectives()
    ex = Exchange(hc.QSGD(bits=4), comm)
    grad = torch.randn(256, 64)
    avg = drive({"w": ex.average("w", grad)})["w"]       # 4-bit payloads on the wire

Differences from Horovod that this backend hides:

* **Matching by order, not by name.** Horovod matches collectives across ranks by name;
  torch.distributed matches them by the order they are issued. Names are accepted so the
  interface is the same (they only key the size cache below); every rank must *issue* the same
  collectives in the same order, which the exchange's :class:`~hvd_compress.torch.exchange.Driver`
  guarantees (it visits tensors in a fixed order, round by round). Collectives with a second stage
  (allgather, alltoall) issue their second stages in the order the first stages were issued,
  whatever order ``wait()`` is called in.
* **Variable first dimension in allgather.** Gloo's allgather needs equal sizes, so the first call
  under a name gathers the first dimensions (one int64 per rank), every rank pads to the largest,
  and the result is trimmed: ``allgather_async`` concatenates rank 0's rows, rank 1's rows, ...
  like Horovod. Later calls under the same name pad to the last largest size and carry each
  rank's true size in an 8-byte header: one round while sizes do not grow (the exchange's payload
  sizes repeat step after step), a second round only when some rank's tensor grew.
* **Alltoall.** ``alltoall="native"`` uses ``all_to_all_single`` with uneven splits (Gloo
  supports it on CPU, uint8 included, measured on torch 2.13; so do NCCL and MPI).
  ``"sendrecv"`` emulates it with point-to-point ``isend``/``irecv`` (``batch_isend_irecv``), one
  transfer per pair with data, for process groups without alltoall. ``"auto"`` (default) uses
  native and switches to sendrecv for good if the process group raises that alltoall is not
  supported. Received sizes: the first call under a name exchanges them first (one int64 per
  peer, as Horovod does internally); later calls send each peer its chunk padded to last time's
  size with an 8-byte header, and only a pair whose chunk grew sends it again point to point.
* **Bytes, not dtypes.** Data-movement collectives (allgather, alltoall, broadcast) move raw bytes
  (any dtype, bool and bf16 included, reinterpreted as uint8), so backend dtype gaps never bite.
  Allreduce keeps the dtype (the backend adds the values); ``average`` is a sum followed by a
  division by ``size`` (works on every backend and gives bit-identical results on all ranks).
* **Device.** Gloo runs on CPU copies; NCCL on CUDA copies (``device`` defaults to the current CUDA
  device for NCCL). Results come back on the device of the input tensor.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Set

import torch
import torch.distributed as dist

from hvd_compress.torch.collectives import Pending

OPS = ("sum", "average", "max")
# torch 2.13 renamed all_gather_into_tensor (deprecated there) to all_gather_single
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
ALLTOALL_MODES = ("auto", "native", "sendrecv")


class _Staged(Pending):
    """A collective with a second stage: ``issue()`` waits for stage one and starts stage two (or
    decides that none is needed); ``wait()`` finishes it."""

    __slots__ = ("_issue", "_issued", "_second")

    def __init__(self, issue_fn):
        super().__init__(None)
        self._issue, self._issued, self._second = issue_fn, False, None

    def issue(self):
        if not self._issued:
            self._second, self._issued = self._issue(), True
        return self._second


class TorchDistCollectives:
    """The collectives interface over a ``torch.distributed`` process group.

    Args:
        group: the process group (``None``: the default group). This process must be a member.
        alltoall: ``"auto"``, ``"native"`` (``all_to_all_single``) or ``"sendrecv"`` (pairwise
            ``isend``/``irecv``); see the module docstring.
        device: where collectives run (``None``: the current CUDA device for NCCL, else CPU).

    Round trips: the first allgather / alltoall under a given name exchanges sizes, then data (two
    rounds). Later ones under the same name send the data padded to the sizes seen last time, with
    an 8-byte header per message carrying the true size (one round); if some message is larger
    than last time, the extra round happens only where needed (allgather: everyone; alltoall: the
    pairs concerned, point to point). The exchange's names are stable per tensor and its payload
    sizes repeat, so steady-state training pays one round per collective. Like Horovod, a name may
    not be reused while a collective under it is still in flight (``ValueError``).
    """

    def __init__(self, group=None, alltoall: str = "auto", device=None):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "hvd_compress: torch.distributed is not initialized; call "
                "torch.distributed.init_process_group(...) before the first compressed step"
            )
        if alltoall not in ALLTOALL_MODES:
            raise ValueError(f"alltoall must be one of {ALLTOALL_MODES}, got {alltoall!r}")
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        if self.rank < 0:
            raise ValueError("hvd_compress: this process is not a member of the given process group")
        self.backend = str(dist.get_backend(group)).lower()
        if device is None:
            if self.backend == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            else:
                device = torch.device("cpu")
        self.device = torch.device(device)
        self.alltoall_mode = alltoall
        self._native_alltoall = alltoall != "sendrecv"
        self._staged: List[_Staged] = []  # collectives whose second stage is not issued yet
        self._p2p_tag = 0
        self._sizes: Dict[str, object] = {}  # name -> sizes seen last time (agreed between peers)
        self._unresolved: Set[str] = set()  # names whose sizes are not known yet

    def __repr__(self):
        return (
            f"TorchDistCollectives(backend={self.backend}, rank={self.rank}, size={self.size}, "
            f"alltoall={'native' if self._native_alltoall else 'sendrecv'})"
        )

    # ------------------------------------------------------------------ helpers
    def _global(self, group_rank: int) -> int:
        if self.group is None:
            return group_rank
        return dist.get_global_rank(self.group, group_rank)

    def _dev(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device) if t.device != self.device else t

    def _stage(self, issue_fn, finish_fn) -> _Staged:
        pending = _Staged(issue_fn)

        def wait():
            # issue every earlier second stage first, so the issue order is the same on all ranks
            while not pending._issued and self._staged:
                self._staged.pop(0).issue()
            return finish_fn(pending.issue())

        pending._wait = wait
        self._staged.append(pending)
        return pending

    def _claim(self, kind: str, name: str):
        """The sizes cached for ``name`` (``None``: exchange sizes first); marks it in flight."""
        if not name:
            return None
        key = kind + ":" + name
        if key in self._unresolved:
            raise ValueError(
                f"hvd_compress: a {kind} named {name!r} is already in flight; wait for it "
                "before reusing the name (names must be unique among in-flight collectives)"
            )
        self._unresolved.add(key)
        return self._sizes.get(key)

    def _resolve(self, kind: str, name: str, sizes) -> None:
        if name:
            key = kind + ":" + name
            self._sizes[key] = sizes
            self._unresolved.discard(key)

    def _next_tag(self) -> int:
        self._p2p_tag += 1
        return self._p2p_tag

    def _p2p(self, sends, recvs, tag):
        """Start point-to-point transfers: ``sends``/``recvs`` are (group rank, tensor) pairs."""
        ops = [dist.P2POp(dist.isend, t, self._global(peer), self.group, tag) for peer, t in sends]
        ops += [dist.P2POp(dist.irecv, t, self._global(peer), self.group, tag) for peer, t in recvs]
        return _WaitAll(dist.batch_isend_irecv(ops) if ops else [])

    @staticmethod
    def _check_rows(tensor: torch.Tensor, what: str):
        if tensor.dim() == 0:
            raise ValueError(
                f"hvd_compress: {what} needs a tensor with at least one dimension "
                "(a scalar has no first dimension to concatenate along)"
            )

    # ------------------------------------------------------------------ allreduce
    def allreduce_async(self, tensor: torch.Tensor, name: str = "", op: str = "average") -> Pending:
        """Sum, average or max of ``tensor`` over ranks (a new tensor; the input is untouched)."""
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        if op == "average" and not (tensor.dtype.is_floating_point or tensor.dtype.is_complex):
            raise TypeError(
                f"allreduce op='average' needs a floating-point tensor, got {tensor.dtype}; " "use op='sum' and divide"
            )
        src_device = tensor.device
        buf = tensor.detach().to(self.device, copy=True).contiguous()
        reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
        work = dist.all_reduce(buf, op=reduce_op, group=self.group, async_op=True)
        size = self.size

        def wait():
            work.wait()
            if op == "average":
                buf.div_(size)
            return buf.to(src_device)

        return Pending(wait)

    # ------------------------------------------------------------------ allgather
    def allgather_async(self, tensor: torch.Tensor, name: str = "") -> Pending:
        """Every rank's ``tensor`` concatenated along the first dimension, in rank order. First
        dimensions may differ across ranks; the other dimensions and the dtype must agree."""
        self._check_rows(tensor, "allgather")
        src_device, dtype, rest = tensor.device, tensor.dtype, tuple(tensor.shape[1:])
        row_bytes = math.prod(rest) * tensor.element_size()
        data = self._dev(_as_bytes(tensor))
        rows = int(tensor.shape[0])
        guess = self._claim("allgather", name)
        size = self.size

        def gather(longest_rows, header):
            """Start an allgather of every rank's data padded to ``longest_rows`` rows."""
            hb = HEADER if header else 0
            send = torch.zeros(hb + longest_rows * row_bytes, dtype=torch.uint8, device=self.device)
            if header:
                send[:HEADER] = _int64_bytes(rows, self.device)
            mine = min(rows, longest_rows) * row_bytes
            send[hb : hb + mine] = data[:mine]
            out = torch.empty(size * send.numel(), dtype=torch.uint8, device=self.device)
            work = _all_gather_single(out, send, group=self.group, async_op=True) if out.numel() else None
            return out, work, hb

        def assemble(all_rows, out, hb):
            stride = out.numel() // size
            total = sum(all_rows)
            parts = [out[r * stride + hb : r * stride + hb + n * row_bytes] for r, n in enumerate(all_rows)]
            flat = torch.cat(parts) if parts else out[:0]
            return _from_bytes(flat, dtype, (total,) + rest).to(src_device)

        if guess is None:  # sizes first, then data
            sizes = torch.zeros(size, dtype=torch.int64, device=self.device)
            mine = torch.tensor([rows], dtype=torch.int64, device=self.device)
            size_work = _all_gather_single(sizes, mine, group=self.group, async_op=True)

            def issue():
                size_work.wait()
                all_rows = sizes.cpu().tolist()  # host sync (allow-listed): first call under a name only
                self._resolve("allgather", name, max(all_rows))
                return all_rows, gather(max(all_rows), header=False)
        else:  # one round, padded to last time's longest; a second round only if someone grew
            first = gather(guess, header=True)

            def issue():
                out, work, hb = first
                if work is not None:
                    work.wait()
                stride = out.numel() // size
                all_rows = _read_int64s(out, [r * stride for r in range(size)])
                self._resolve("allgather", name, max(all_rows))
                if max(all_rows) <= guess:
                    return all_rows, first
                return all_rows, gather(max(all_rows), header=False)

        def finish(stage):
            all_rows, (out, work, hb) = stage
            if work is not None:
                work.wait()
            return assemble(all_rows, out, hb)

        return self._stage(issue, finish)

    # ------------------------------------------------------------------ alltoall
    def alltoall_async(self, tensor: torch.Tensor, splits: Sequence[int], name: str = "") -> Pending:
        """Rows ``splits[0]`` of ``tensor`` to rank 0, the next ``splits[1]`` to rank 1, ...;
        returns what every rank sent this one, concatenated in rank order (splits may differ
        across ranks and be zero)."""
        self._check_rows(tensor, "alltoall")
        splits = [int(s) for s in splits]
        if len(splits) != self.size or any(s < 0 for s in splits) or sum(splits) != tensor.shape[0]:
            raise ValueError(
                f"hvd_compress: alltoall splits {splits} must be {self.size} non-negative "
                f"row counts summing to the first dimension {tensor.shape[0]}"
            )
        src_device, dtype, rest = tensor.device, tensor.dtype, tuple(tensor.shape[1:])
        row_bytes = math.prod(rest) * tensor.element_size()
        data = self._dev(_as_bytes(tensor))
        size, me = self.size, self.rank
        offsets = [0]
        for s in splits:
            offsets.append(offsets[-1] + s * row_bytes)
        chunks = [data[offsets[d] : offsets[d + 1]] for d in range(size)]
        cached = self._claim("alltoall", name)

        def assemble(received, pieces):
            flat = torch.cat(pieces) if pieces else data[:0]
            return _from_bytes(flat, dtype, (sum(received),) + rest).to(src_device)

        if cached is None:  # counts first (one int64 per peer), then data
            send_counts = torch.tensor(splits, dtype=torch.int64, device=self.device)
            recv_counts = torch.empty(size, dtype=torch.int64, device=self.device)
            count_work = self._alltoall_bytes_async(
                send_counts.view(torch.uint8), [8] * size, recv_counts.view(torch.uint8), [8] * size
            )

            def issue():
                count_work.wait()
                received = recv_counts.cpu().tolist()  # host sync (allow-listed): first call under a name only
                self._resolve("alltoall", name, (splits, received))
                out = torch.empty(sum(received) * row_bytes, dtype=torch.uint8, device=self.device)
                work = self._alltoall_bytes_async(
                    data, [s * row_bytes for s in splits], out, [r * row_bytes for r in received]
                )
                return received, out, work

            def finish(stage):
                received, out, work = stage
                work.wait()
                return assemble(received, [out])
        else:  # one round: header + data padded to last time's sizes; the pairs that grew go p2p
            last_sent, last_recv = cached
            tag = self._next_tag()
            # to each peer: 8-byte header (true rows) + its chunk padded / cut to what it expects;
            # our own chunk never leaves this process
            send_sizes = [0 if d == me else HEADER + last_sent[d] * row_bytes for d in range(size)]
            recv_sizes = [0 if s == me else HEADER + last_recv[s] * row_bytes for s in range(size)]
            send = torch.zeros(sum(send_sizes), dtype=torch.uint8, device=self.device)
            pos = 0
            for d in range(size):
                if d != me:
                    send[pos : pos + HEADER] = _int64_bytes(splits[d], self.device)
                    n = min(splits[d] * row_bytes, send_sizes[d] - HEADER)
                    send[pos + HEADER : pos + HEADER + n] = chunks[d][:n]
                pos += send_sizes[d]
            out = torch.empty(sum(recv_sizes), dtype=torch.uint8, device=self.device)
            work = self._alltoall_bytes_async(send, send_sizes, out, recv_sizes)

            def issue():
                work.wait()
                starts, pos = [], 0
                for s in range(size):
                    starts.append(pos)
                    pos += recv_sizes[s]
                peers = [s for s in range(size) if s != me]
                sizes_of = dict(zip(peers, _read_int64s(out, [starts[s] for s in peers])))
                received, pieces, recvs, sends, pos = [], [], [], [], 0
                for s in range(size):
                    if s == me:
                        received.append(splits[me])
                        pieces.append(chunks[me])
                    else:
                        n = sizes_of[s]
                        received.append(n)
                        if n <= last_recv[s]:
                            pieces.append(out[pos + HEADER : pos + HEADER + n * row_bytes])
                        else:  # it grew: the whole chunk comes point to point
                            buf = torch.empty(n * row_bytes, dtype=torch.uint8, device=self.device)
                            recvs.append((s, buf))
                            pieces.append(buf)
                    pos += recv_sizes[s]
                sends = [(d, chunks[d].contiguous()) for d in range(size) if d != me and splits[d] > last_sent[d]]
                self._resolve("alltoall", name, (splits, received))
                return received, pieces, self._p2p(sends, recvs, tag)

            def finish(stage):
                received, pieces, p2p = stage
                p2p.wait()
                return assemble(received, pieces)

        return self._stage(issue, finish)

    def _alltoall_bytes_async(
        self, send: torch.Tensor, send_splits: List[int], recv: torch.Tensor, recv_splits: List[int]
    ):
        """Start an alltoall of byte buffers; returns an object with ``wait()``."""
        if self._native_alltoall:
            try:
                return dist.all_to_all_single(
                    recv,
                    send,
                    output_split_sizes=recv_splits,
                    input_split_sizes=send_splits,
                    group=self.group,
                    async_op=True,
                )
            except (RuntimeError, NotImplementedError) as exc:
                text = str(exc).lower()
                if self.alltoall_mode != "auto" or not ("support" in text or "implement" in text):
                    raise
                # the process group has no alltoall at all: the same on every rank, so every rank
                # switches here, before any of them issued anything for this call
                self._native_alltoall = False
        return self._sendrecv(send, send_splits, recv, recv_splits)

    def _sendrecv(self, send, send_splits, recv, recv_splits):
        """alltoall emulated with point-to-point transfers (one per pair with data)."""
        tag = self._next_tag()
        send_off, recv_off = [0], [0]
        for s in send_splits:
            send_off.append(send_off[-1] + s)
        for s in recv_splits:
            recv_off.append(recv_off[-1] + s)
        me = self.rank
        recv[recv_off[me] : recv_off[me + 1]].copy_(send[send_off[me] : send_off[me + 1]])
        sends = [
            (d, send[send_off[d] : send_off[d + 1]].contiguous())
            for d in range(self.size)
            if d != me and send_splits[d]
        ]
        recvs = [(s, recv[recv_off[s] : recv_off[s + 1]]) for s in range(self.size) if s != me and recv_splits[s]]
        return self._p2p(sends, recvs, tag)

    # ------------------------------------------------------------------ broadcast
    def broadcast_async(self, tensor: torch.Tensor, root_rank: int, name: str = "") -> Pending:
        """``tensor`` of rank ``root_rank`` (a rank within the group) on every rank."""
        if not 0 <= root_rank < self.size:
            raise ValueError(f"root_rank {root_rank} out of range for {self.size} ranks")
        src_device = tensor.device
        buf = _as_bytes(tensor).to(self.device, copy=True)
        work = dist.broadcast(buf, self._global(root_rank), group=self.group, async_op=True)

        def wait():
            work.wait()
            return _from_bytes(buf, tensor.dtype, tuple(tensor.shape)).to(src_device)

        return Pending(wait)


HEADER = 8  # bytes: one little-endian int64 (rows) in front of a message


class _WaitAll:
    def __init__(self, works):
        self._works = works

    def wait(self):
        for w in self._works:
            w.wait()


def _int64_bytes(value: int, device) -> torch.Tensor:
    return torch.tensor(list(int(value).to_bytes(8, "little", signed=True)), dtype=torch.uint8, device=device)


def _read_int64s(data: torch.Tensor, starts: List[int]) -> List[int]:
    """The little-endian int64 headers at byte offsets ``starts`` of ``data``, read in one copy."""
    if not starts:
        return []
    headers = torch.cat([data[s : s + HEADER] for s in starts])  # on data's device
    # host sync (allow-listed): the peers' true sizes cut the padded buffer; one copy per collective
    # (per fused bucket with fusion on, not per tensor)
    raw = bytes(headers.cpu().tolist())  # host sync (allow-listed)
    return [int.from_bytes(raw[i * HEADER : (i + 1) * HEADER], "little", signed=True) for i in range(len(starts))]


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's values as a flat uint8 tensor (a view where possible)."""
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.uint8:
        return flat
    return flat.view(torch.uint8)


def _from_bytes(data: torch.Tensor, dtype: torch.dtype, shape) -> torch.Tensor:
    data = data.contiguous()
    if dtype != torch.uint8:
        data = data.view(dtype)
    return data.reshape(shape)
