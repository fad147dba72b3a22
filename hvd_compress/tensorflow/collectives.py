"""Horovod TensorFlow collectives, named so every rank issues the same names.

Each call adds one Horovod op to the graph being traced (or runs it, eagerly). Horovod's TF ops
are asynchronous kernels, so independent collectives in one ``tf.function`` run concurrently and
Horovod matches them across ranks by name, whatever order the executor starts them in.
"""
from __future__ import annotations

import re
import zlib
from typing import Optional, Sequence

import tensorflow as tf


def op_name(key: str, suffix: str) -> str:
    """A TF-legal, rank-independent collective name for tensor ``key`` (plus a hash of the exact
    key, so ``a/b`` and ``a_b`` never collide)."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", key)[-80:]
    return f"hvdc_{clean}_{zlib.crc32(key.encode()):08x}_{suffix}"


class HorovodCollectives:
    """Horovod (TensorFlow) backend over Gloo, MPI or NCCL."""

    def __init__(self, process_set=None):
        import horovod.tensorflow as hvd
        self._hvd = hvd
        if not hvd.is_initialized():
            raise RuntimeError("hvd_compress: call hvd.init() before the first compressed step")
        self._kw = {} if process_set is None else {"process_set": process_set}
        self.rank = hvd.rank() if process_set is None else process_set.rank()
        self.size = hvd.size() if process_set is None else process_set.size()

    def _op(self, op: str):
        return {"sum": self._hvd.Sum, "average": self._hvd.Average, "max": self._hvd.Max}[op]

    def allreduce(self, tensor: tf.Tensor, name: str, op: str = "average") -> tf.Tensor:
        return self._hvd.allreduce(tensor, op=self._op(op), name=name, ignore_name_scope=True, **self._kw)

    def allgather(self, tensor: tf.Tensor, name: str) -> tf.Tensor:
        return self._hvd.allgather(tensor, name=name, ignore_name_scope=True, **self._kw)

    def alltoall(self, tensor: tf.Tensor, splits: Sequence[int], name: str) -> tf.Tensor:
        out = self._hvd.alltoall(tensor, splits=tf.constant(list(splits), tf.int32), name=name,
                                 ignore_name_scope=True, **self._kw)
        return out[0] if isinstance(out, (tuple, list)) else out

    def broadcast(self, tensor: tf.Tensor, root_rank: int, name: str) -> tf.Tensor:
        return self._hvd.broadcast(tensor, root_rank, name=name, ignore_name_scope=True, **self._kw)


def default_collectives(process_set: Optional[object] = None) -> HorovodCollectives:
    return HorovodCollectives(process_set)
