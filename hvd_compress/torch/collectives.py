"""The small collectives interface the exchange runs on, with a Horovod backend.

Every operation is asynchronous and returns an object with ``wait() -> torch.Tensor``. Names must
agree across ranks (Horovod matches operations by name, so ranks may issue them in any order).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


class Pending:
    """An in-flight collective; ``wait()`` returns its result tensor."""

    __slots__ = ("_wait", "_done", "_value")

    def __init__(self, wait_fn):
        self._wait, self._done, self._value = wait_fn, False, None

    def wait(self) -> torch.Tensor:
        if not self._done:
            self._value, self._done = self._wait(), True
        return self._value


class Ready(Pending):
    """A result already in hand (used where a collective is skipped, e.g. world size 1)."""

    def __init__(self, value):
        super().__init__(None)
        self._value, self._done = value, True


class HorovodCollectives:
    """Horovod (PyTorch) backend: works over Gloo, MPI and NCCL alike."""

    def __init__(self, process_set=None):
        import horovod.torch as hvd

        self._hvd = hvd
        if not hvd.is_initialized():
            raise RuntimeError("hvd_compress: call hvd.init() before the first compressed step")
        self.process_set = process_set
        self._kw = {} if process_set is None else {"process_set": process_set}
        self._process_set = process_set

    # Read live, not cached: under hvd.elastic a reset re-initializes Horovod with a new world
    # (ranks renumbered, size changed) while the optimizer and its exchange live on.
    @property
    def rank(self) -> int:
        ps = self._process_set
        return self._hvd.rank() if ps is None else ps.rank()

    @property
    def size(self) -> int:
        ps = self._process_set
        return self._hvd.size() if ps is None else ps.size()

    def _op(self, op: str):
        return {"sum": self._hvd.Sum, "average": self._hvd.Average, "max": self._hvd.Max}[op]

    def allreduce_async(self, tensor: torch.Tensor, name: str, op: str = "average") -> Pending:
        h = self._hvd.allreduce_async(tensor, name=name, op=self._op(op), **self._kw)
        return Pending(lambda: self._hvd.synchronize(h))

    def reducescatter_async(self, tensor: torch.Tensor, name: str, op: str = "average") -> Pending:
        """Reduce over the ranks and give rank ``i`` the ``i``-th block of the first dimension
        (Horovod splits it as evenly as it can; pass ``size`` rows for one row per rank)."""
        h = self._hvd.reducescatter_async(tensor, name=name, op=self._op(op), **self._kw)
        return Pending(lambda: self._hvd.synchronize(h))

    def alltoall_async(self, tensor: torch.Tensor, splits: Sequence[int], name: str) -> Pending:
        h = self._hvd.alltoall_async(
            tensor, splits=torch.tensor(list(splits), dtype=torch.int32), name=name, **self._kw
        )
        return Pending(lambda: self._hvd.synchronize(h)[0])

    def allgather_async(self, tensor: torch.Tensor, name: str) -> Pending:
        h = self._hvd.allgather_async(tensor, name=name, **self._kw)
        return Pending(lambda: self._hvd.synchronize(h))

    def broadcast_async(self, tensor: torch.Tensor, root_rank: int, name: str) -> Pending:
        h = self._hvd.broadcast_async(tensor, root_rank, name=name, **self._kw)
        return Pending(lambda: self._hvd.synchronize(h))


def default_collectives(process_set: Optional[object] = None) -> HorovodCollectives:
    return HorovodCollectives(process_set)
