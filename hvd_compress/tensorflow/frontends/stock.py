"""Making Horovod's stock TensorFlow APIs carry real savings.

``hvd.DistributedGradientTape(tape, compression=codec)`` and (tf-keras)
``horovod.tensorflow.keras.DistributedOptimizer(opt, compression=codec)`` call
``codec.compress(grad)``, allreduce what it returns, then ``codec.decompress(out, ctx)``, all
inside the ``tf.function`` Horovod builds for the gradient allreduce. Horovod's own ``fp16``
compressor is called the same way.

* Summable codecs (FP16, NoCompression): ``compress`` returns the compressed tensor and Horovod's
  fused allreduce carries it.
* The others: ``compress`` runs the codec's whole bit-packed exchange (uint8 payloads over
  allgather / alltoall, named after the variable, plus a one-value allreduce-MAX for TernGrad's
  shared scale) and hands Horovod a one-value placeholder to allreduce; ``decompress`` returns the
  exchange's result, ordered after the placeholder's allreduce. So the gradient never crosses the
  wire in fp32: the placeholder costs 4 bytes per tensor.

Names without extra calls: ``compress`` receives only the gradient. Horovod calls it from its
``allreduce_grads(grads, vars)``; the engine finds that frame on the stack
(:mod:`hvd_compress.horovod_names`) and maps the gradient to its variable (``var.path`` under
Keras 3, else ``var.name`` without ``:0``), so error-feedback residuals and RNG streams are
``tf.Variable``\\ s keyed by variable name (``codec.state``; checkpoint them with
``tf.train.Checkpoint(compression=codec)``). Where no variable is found (a bare
``hvd.allreduce(t, compression=codec)``) it falls back to call order within the trace.

Horovod's ``op=hvd.Sum`` is honoured (the average times the world size); ``hvd.Adasum`` cannot take
compressed gradients and raises.
"""

from __future__ import annotations

import warnings

import tensorflow as tf

from hvd_compress.common import UNCOMPRESSED, ring_allreduce_bytes
from hvd_compress.horovod_names import tf_gradient_variable
from hvd_compress.tensorflow.collectives import HorovodCollectives, op_name
from hvd_compress.tensorflow.hierarchical import make_exchange
from hvd_compress.tensorflow.stats import WIRE_STATS

_PLAIN = (tf.float16, tf.float32, tf.float64)


def variable_key(var) -> str:
    """The name state is keyed by: ``var.path`` (Keras 3), else ``var.name`` without ``:0``."""
    path = getattr(var, "path", None)
    name = path if isinstance(path, str) and path else getattr(var, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"hvd_compress: cannot name variable {var!r}")
    return name[:-2] if name.endswith(":0") else name


class StockEngine:
    def __init__(self, codec):
        self.codec = codec
        self.comm = HorovodCollectives()
        self.exchange = make_exchange(codec, self.comm)  # flat, or hierarchical (codec.hierarchical)
        self._anonymous = 0
        self._warned_anonymous = False

    def compress(self, tensor):
        import horovod.tensorflow as hvd

        variable, op = tf_gradient_variable(tensor)
        name = None if variable is None else variable_key(variable)
        if op is not None and op not in (hvd.Average, hvd.Sum):
            raise ValueError(
                "hvd_compress codecs support op=hvd.Average and hvd.Sum (Adasum combines "
                "raw gradients and cannot take them compressed)"
            )
        if isinstance(tensor, tf.IndexedSlices):
            raise ValueError(
                "hvd_compress: sparse gradients (tf.IndexedSlices) are not compressed; pass "
                "sparse_as_dense=True to Horovod's DistributedGradientTape/DistributedOptimizer"
            )
        if name is None:
            if getattr(self.codec, "worker_feedback", False) and not self._warned_anonymous:
                warnings.warn(
                    "hvd_compress: could not find the variable of a gradient; error-feedback "
                    "state is keyed by call order. Use hvd.DistributedGradientTape or "
                    "hvd_compress.tensorflow.frontends.keras.DistributedOptimizer."
                )
                self._warned_anonymous = True
            if hasattr(tensor, "graph"):  # symbolic: the graph's tensor name is stable across retraces
                name = "anonymous." + tensor.name.replace(":0", "")
            else:
                name = f"anonymous.{self._anonymous}"
                self._anonymous += 1
        self.exchange.ensure_checked()
        codec, dtype = self.codec, tensor.dtype
        op_sum = op is not None and op == hvd.Sum
        if not codec.should_compress(tensor):
            send = tensor if dtype in _PLAIN or not dtype.is_floating else tf.cast(tensor, tf.float32)
            n = tensor.shape.num_elements() or 0
            nbytes = n * send.dtype.size
            WIRE_STATS.add(UNCOMPRESSED, n, nbytes, ring_allreduce_bytes(nbytes, self.comm.size))
            return send, ("plain", name, dtype)
        n = int(tensor.shape.num_elements())
        if codec.summable:
            flat = tf.reshape(tf.cast(tensor, tf.float32), [-1])
            summable = codec.to_summable(flat)
            self.exchange.track_summable_error(flat, summable)
            t = tf.reshape(summable, tensor.shape)
            nbytes = n * t.dtype.size
            WIRE_STATS.add(self.exchange.label, n, nbytes, ring_allreduce_bytes(nbytes, self.comm.size))
            return t, ("sum", name, dtype)
        out = self.exchange.average(name, tensor, compress=True)
        placeholder = tf.zeros([1], tf.float32, name=op_name(name, "placeholder"))
        return placeholder, ("exchange", name, dtype, out, op_sum)

    def decompress(self, tensor, ctx):
        kind, name, dtype = ctx[0], ctx[1], ctx[2]
        if kind == "exchange":
            out, op_sum = ctx[3], ctx[4]
            with tf.control_dependencies([tensor]):
                out = tf.identity(out)
            return out * tf.cast(self.comm.size, out.dtype) if op_sum else out
        if kind == "sum":
            out = tf.cast(self.codec.from_summable(tensor), dtype)
        else:
            out = tf.cast(tensor, dtype)
        return self.exchange.check_finite(name, out)
