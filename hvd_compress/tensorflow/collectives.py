"""Horovod TensorFlow collectives, named so every rank issues the same names.

Each call adds one Horovod op to the graph being traced (or runs it, eagerly). Horovod's TF ops
are asynchronous kernels, so independent collectives in one ``tf.function`` run concurrently and
Horovod matches them across ranks by name, whatever order the executor starts them in.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from hvd_compress.common import op_name  # noqa: F401 (re-exported: the exchange names its ops with it)


class HorovodCollectives:
    """Horovod (TensorFlow) backend over Gloo, MPI or NCCL."""

    def __init__(self, process_set=None):
        import horovod.tensorflow as hvd

        self._hvd = hvd
        if not hvd.is_initialized():
            raise RuntimeError("hvd_compress: call hvd.init() before the first compressed step")
        self._process_set = process_set
        self._kw = {} if process_set is None else {"process_set": process_set}

    # Read live, so that after an elastic reset (hvd.shutdown(); hvd.init() in a new world) the
    # next trace derives patterns, chunk bounds and RNG streams from the new world.
    @property
    def rank(self) -> int:
        return self._hvd.rank() if self._process_set is None else self._process_set.rank()

    @property
    def size(self) -> int:
        return self._hvd.size() if self._process_set is None else self._process_set.size()

    def world_guard(self) -> Optional[tf.Operation]:
        """Inside a ``tf.function`` being traced: an op that fails unless the world the graph runs
        in is the one it is traced for (rank and size are baked into the graph as constants).
        Under elastic Horovod a graph traced before a reset must be traced again (see
        ``docs/elastic.md``); this turns a stale graph into a clear error instead of averaging
        the wrong chunks. ``None`` when executing eagerly (rank and size are read live)."""
        if tf.executing_eagerly():
            return None
        hvd = self._hvd
        if self._process_set is None:
            live = tf.stack([hvd.size_op(), hvd.rank_op()])
            traced = [self.size, self.rank]
        else:
            live = tf.reshape(hvd.size_op(process_set_id=self._process_set.process_set_id), [1])
            traced = [self.size]
        return tf.debugging.assert_equal(
            live,
            tf.constant(traced, live.dtype),
            message=f"hvd_compress: this graph was traced for a world of (size, rank) {tuple(traced)}; Horovod "
            "now runs a different one (an elastic reset). Trace the training step again after a "
            "reset: hvd_compress.tensorflow.frontends.elastic's states do it for Keras and Horovod's "
            "frontends; build your own tf.function inside the @hvd.elastic.run function",
        )

    def _op(self, op: str):
        return {"sum": self._hvd.Sum, "average": self._hvd.Average, "max": self._hvd.Max}[op]

    def allreduce(self, tensor: tf.Tensor, name: str, op: str = "average") -> tf.Tensor:
        return self._hvd.allreduce(tensor, op=self._op(op), name=name, ignore_name_scope=True, **self._kw)

    def allgather(self, tensor: tf.Tensor, name: str) -> tf.Tensor:
        return self._hvd.allgather(tensor, name=name, ignore_name_scope=True, **self._kw)

    def alltoall(self, tensor: tf.Tensor, splits: Sequence[int], name: str) -> tf.Tensor:
        out = self._hvd.alltoall(
            tensor, splits=tf.constant(list(splits), tf.int32), name=name, ignore_name_scope=True, **self._kw
        )
        return out[0] if isinstance(out, (tuple, list)) else out

    def broadcast(self, tensor: tf.Tensor, root_rank: int, name: str) -> tf.Tensor:
        return self._hvd.broadcast(tensor, root_rank, name=name, ignore_name_scope=True, **self._kw)


def default_collectives(process_set: Optional[object] = None) -> HorovodCollectives:
    return HorovodCollectives(process_set)
