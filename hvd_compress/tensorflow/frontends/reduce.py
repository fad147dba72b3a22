"""Average a list of gradients over Horovod ranks with a codec: the core of
``hvd_compress.tensorflow.frontends.keras.DistributedOptimizer``, usable in any custom training loop.

Example (a ``GradientTape`` loop, eager or inside ``tf.function``)::

    import horovod.tensorflow as hvd, hvd_compress.tensorflow as hct
    hvd.init()
    reducer = hct.GradientReducer("onebit")
    with tf.GradientTape() as tape:
        loss = loss_fn(model(x), y)
    grads = reducer(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
"""

from __future__ import annotations

import zlib
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from hvd_compress.common import bucket_bytes_from_env, cut_buckets
from hvd_compress.tensorflow.codecs.base import Codec
from hvd_compress.tensorflow.collectives import HorovodCollectives
from hvd_compress.tensorflow.exchange import Exchange
from hvd_compress.tensorflow.hierarchical import make_exchange
from hvd_compress.tensorflow.spec import from_spec
from hvd_compress.tensorflow.frontends.stock import variable_key


class GradientReducer:
    """Averages gradients over the ranks with ``compression`` (a codec or a spec string).

    * compressed tensors run the codec's exchange, keyed by variable name (``var.path`` under
      Keras 3, ``var.name`` without ``:0`` otherwise), so residuals are named after the variables;
    * tensors the codec leaves uncompressed (small, 1-D) are fused into one fp32/fp64 allreduce
      per dtype;
    * compressed tensors are fused too: in variable order, cut into buckets of at most
      ``bucket_bytes`` fp32 bytes (``None``: ``HVD_COMPRESS_BUCKET_BYTES``, default 64 MiB like
      Horovod's fusion buffer; ``0``: one exchange per tensor), each bucket's payloads go through
      one collective per round (:meth:`Exchange.average_bucket`), with results bit-identical to
      the per-tensor exchange. Summable codecs, codecs with their own schedule (PowerSGD,
      GradiVeQ) and the hierarchical exchange stay per tensor. Every rank must form the same
      buckets: the layout is agreed once (eagerly) and a difference is a clear ``ValueError``;
    * ``None`` gradients stay ``None`` (every rank has the same graph, so the same ones);
      ``tf.IndexedSlices`` are densified;
    * with ``nonfinite="raise"`` the NaN/Inf check runs after every exchange of the step has
      finished, so all ranks fail together with a message naming the tensor.
    """

    def __init__(
        self, compression: "Codec | str" = "none", process_set=None, comm=None, bucket_bytes: Optional[int] = None
    ):
        self.codec = from_spec(compression)
        if bucket_bytes is None:
            bucket_bytes = bucket_bytes_from_env()
        if int(bucket_bytes) < 0:
            raise ValueError(f"bucket_bytes must be >= 0 (0 disables fusion), got {bucket_bytes}")
        self.bucket_bytes = int(bucket_bytes)
        self._process_set = process_set
        self._comm = comm
        self._exchange: Optional[Exchange] = None

    @property
    def exchange(self) -> Exchange:
        if self._exchange is None:
            comm = self._comm if self._comm is not None else HorovodCollectives(self._process_set)
            self._exchange = make_exchange(self.codec, comm)  # flat, or hierarchical (codec.hierarchical)
        return self._exchange

    @staticmethod
    def keys(variables: Sequence) -> List[str]:
        keys = [variable_key(v) for v in variables]
        if len(set(keys)) != len(keys):
            dups = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(
                f"hvd_compress: variable names must be unique (state is keyed by them); "
                f"duplicates: {dups}. Give the layers distinct names."
            )
        return keys

    def build(self, variables: Sequence) -> None:
        """Create the codec state for ``variables`` now (e.g. before restoring a checkpoint). No
        collective runs here (the agreement check waits for the first exchange), so a worker
        joining an elastic job may build its optimizer while the others are in ``state.sync()``."""
        exchange = self.exchange
        for key, v in zip(self.keys(variables), variables):
            if getattr(v, "trainable", True):
                exchange.build_state(key, v.shape, v.dtype)

    @tf.autograph.experimental.do_not_convert
    def __call__(self, grads: Sequence, variables: Sequence) -> List:
        grads, variables = list(grads), list(variables)
        if len(grads) != len(variables):
            raise ValueError(f"{len(grads)} gradients for {len(variables)} variables")
        exchange = self.exchange
        exchange.ensure_checked()
        keys = self.keys(variables)
        out: List = [None] * len(grads)
        fused: Dict[tf.DType, List[int]] = {}
        bucketed: List[int] = []
        for i, (key, g) in enumerate(zip(keys, grads)):
            if g is None:
                continue
            if isinstance(g, tf.IndexedSlices):
                g = tf.convert_to_tensor(g)
            g = tf.convert_to_tensor(g)
            grads[i] = g
            if self.codec.should_compress(g):
                if self.bucket_bytes > 0 and exchange.fusable(g):
                    bucketed.append(i)
                else:
                    out[i] = exchange.average(key, g, check=False)
            else:
                fused.setdefault(g.dtype, []).append(i)
        if bucketed:
            self._average_buckets(exchange, keys, grads, bucketed, out)
        for dtype, members in fused.items():
            flat = tf.concat([tf.reshape(grads[i], [-1]) for i in members], 0)
            avg = exchange.average(f"fused.{dtype.name}", flat, compress=False, check=False)
            pos = 0
            for i in members:
                n = int(grads[i].shape.num_elements())
                out[i] = tf.reshape(avg[pos : pos + n], grads[i].shape)
                pos += n
        done = [t for t in out if t is not None]
        with tf.control_dependencies(done):  # every exchange finished before any check can fail
            return [None if t is None else exchange.check_finite(k, t) for k, t in zip(keys, out)]

    def _average_buckets(self, exchange: Exchange, keys, grads, members: List[int], out: List) -> None:
        """``members`` (indices, in variable order) cut into buckets and averaged bucket by bucket."""
        buckets = cut_buckets(members, lambda i: 4 * int(grads[i].shape.num_elements()), self.bucket_bytes)
        layouts = [exchange.bucket_layout([(keys[i], grads[i]) for i in b]) for b in buckets]
        exchange.agree(
            f"bucket_bytes={self.bucket_bytes}\n" + "\n".join(layouts),
            "hvdc_bucket_check",
            "ranks form different fused buckets of compressed gradients",
            "Use the same model, codec and bucket_bytes (HVD_COMPRESS_BUCKET_BYTES) on every rank; "
            "bucket_bytes=0 exchanges tensor by tensor.",
        )
        for idx, (bucket, layout) in enumerate(zip(buckets, layouts)):
            name = f"bucket{idx}_{len(bucket)}_{zlib.crc32(layout.encode()):08x}"
            results = exchange.average_bucket(name, [(keys[i], grads[i]) for i in bucket])
            for i, avg in zip(bucket, results):
                out[i] = avg


def allreduce_gradients(grads: Sequence, variables: Sequence, compression: "Codec | str" = "none"):
    """Functional form of :class:`GradientReducer`: one reducer (and so one codec state) is kept
    per codec object or per spec string, so repeated calls continue the same residuals."""
    cache_key = compression if isinstance(compression, str) else id(compression)
    reducer = _REDUCERS.get(cache_key)
    if reducer is None or (not isinstance(compression, str) and reducer.codec is not compression):
        reducer = _REDUCERS[cache_key] = GradientReducer(compression)
    return reducer(grads, variables)


_REDUCERS: Dict[object, GradientReducer] = {}
