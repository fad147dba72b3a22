"""N workers as N threads of one process, for unit tests of multi-round codecs.

``run_workers(n, fn)`` calls ``fn(comm)`` in ``n`` threads, each with a :class:`ThreadCollectives`
implementing the exchange's collectives interface (``allreduce_async``, ``allgather_async``,
``alltoall_async``, ``broadcast_async``) by rendezvous on the collective's name, like Horovod. Results
are computed once, in rank order, and handed to every rank, so they are identical across ranks as
with Horovod's ring. Real multi-process behaviour is covered by the horovodrun tests; this exists so
that the codecs' math and schedules can be tested in milliseconds.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, Sequence

import torch

from hvd_compress.torch.collectives import Pending


class _Group:
    def __init__(self, size: int):
        self.size = size
        self.cond = threading.Condition()
        self.slots: Dict[tuple, dict] = {}
        self.seq: List[Dict[str, int]] = [dict() for _ in range(size)]


class ThreadCollectives:
    def __init__(self, group: _Group, rank: int, timeout: float = 30.0):
        self.group, self.rank, self.size, self.timeout = group, rank, group.size, timeout

    def _submit(self, name: str, value, combine: Callable[[list], object], pick: Callable[[object, int], torch.Tensor]):
        g = self.group
        with g.cond:
            n = g.seq[self.rank].get(name, 0)
            g.seq[self.rank][name] = n + 1
            slot = g.slots.setdefault((name, n), {"inputs": [None] * g.size, "count": 0, "result": None, "taken": 0})
            slot["inputs"][self.rank] = value
            slot["count"] += 1
            if slot["count"] == g.size:
                slot["result"] = combine(slot["inputs"])
                g.cond.notify_all()
        rank = self.rank

        def wait():
            with g.cond:
                if not g.cond.wait_for(lambda: slot["result"] is not None, timeout=self.timeout):
                    raise TimeoutError(f"collective {name!r} #{n}: not every rank joined (a hang)")
                out = pick(slot["result"], rank)
                slot["taken"] += 1
                if slot["taken"] == g.size:
                    g.slots.pop((name, n), None)
                return out

        return Pending(wait)

    def allreduce_async(self, tensor, name, op="average"):
        def combine(xs):
            if op == "max":
                out = xs[0].clone()
                for x in xs[1:]:
                    out = torch.maximum(out, x)
                return out
            out = xs[0].clone()
            for x in xs[1:]:
                out += x
            return out / len(xs) if op == "average" else out

        return self._submit(name, tensor.detach().clone(), combine, lambda r, rank: r.clone())

    def allgather_async(self, tensor, name):
        return self._submit(name, tensor.detach().clone(), lambda xs: torch.cat(xs), lambda r, rank: r.clone())

    def alltoall_async(self, tensor, splits: Sequence[int], name):
        def pick(xs, rank):
            parts = []
            for src in xs:
                t, sp = src
                start = sum(sp[:rank])
                parts.append(t[start : start + sp[rank]])
            return torch.cat(parts)

        return self._submit(name, (tensor.detach().clone(), list(splits)), lambda xs: xs, pick)

    def broadcast_async(self, tensor, root_rank, name):
        return self._submit(name, tensor.detach().clone(), lambda xs: xs[root_rank], lambda r, rank: r.clone())


def run_workers(n: int, fn: Callable[[ThreadCollectives], object], timeout: float = 60.0) -> list:
    """Run ``fn(comm)`` on ``n`` simulated workers; returns each one's result, by rank."""
    group = _Group(n)
    results, errors = [None] * n, []

    def body(rank):
        try:
            results[rank] = fn(ThreadCollectives(group, rank))
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads):
        raise TimeoutError("simulated workers did not finish (a hang)")
    return results


class SyncCollectives:
    """The TensorFlow exchange's (synchronous) collectives interface over :class:`ThreadCollectives`,
    for eager TF tests: ``allreduce(tensor, name, op)``, ``allgather``, ``alltoall``, ``broadcast``
    return TF tensors; values cross as numpy copies."""

    def __init__(self, comm: ThreadCollectives):
        self.comm, self.rank, self.size = comm, comm.rank, comm.size

    @staticmethod
    def _call(fn, tensor, *args, **kwargs):
        import numpy as np
        import tensorflow as tf

        out = fn(torch.from_numpy(np.array(tensor.numpy())), *args, **kwargs).wait()
        return tf.constant(out.numpy())

    def allreduce(self, tensor, name, op="average"):
        return self._call(self.comm.allreduce_async, tensor, name, op=op)

    def allgather(self, tensor, name):
        return self._call(self.comm.allgather_async, tensor, name)

    def alltoall(self, tensor, splits, name):
        return self._call(self.comm.alltoall_async, tensor, list(splits), name)

    def broadcast(self, tensor, root_rank, name):
        return self._call(self.comm.broadcast_async, tensor, root_rank, name)


def run_workers_tf(n: int, fn: Callable[[SyncCollectives], object], timeout: float = 60.0) -> list:
    """:func:`run_workers` for eager TensorFlow code: ``fn(comm)`` gets a :class:`SyncCollectives`."""
    return run_workers(n, lambda comm: fn(SyncCollectives(comm)), timeout)
