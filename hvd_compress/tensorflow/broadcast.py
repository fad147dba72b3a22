"""Parameter-quantizing broadcast (the double-quantization seed's server-to-worker direction).

``broadcast_variables(variables, root_rank=0, bits=8)``: the root encodes each floating-point
variable with unbiased ``bits``-bit QSGD (max-abs scale per bucket of 512 values, stochastic
rounding: the same codec and wire format as the gradients), the packed bytes go out over
``hvd.broadcast`` (uint8), and **every** rank, the root included, sets the variable to the decoded
value, so all replicas end bit-identical. Integer and boolean variables (step counters, BatchNorm's
``num_batches_tracked``) and, by default, non-trainable floats (BatchNorm moving statistics) are
sent exactly. The per-value error is at most ``scale / (2**(bits-1) - 1)``, ``scale`` the bucket's
max-abs; bytes are about ``bits / 32`` of Horovod's fp32 broadcast.

Example::

    hvd.init()
    hvd_compress.tensorflow.broadcast_variables(model.variables, root_rank=0, bits=8)
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from hvd_compress.common import mix
from hvd_compress.tensorflow.codecs.qsgd import QSGD
from hvd_compress.tensorflow.collectives import HorovodCollectives, op_name
from hvd_compress.tensorflow.stats import WIRE_STATS
from hvd_compress.tensorflow.stock import variable_key


def _dtype(v) -> tf.DType:
    return tf.as_dtype(v.dtype)


def broadcast_variables(variables: Sequence, root_rank: int = 0, bits: Optional[int] = 8,
                        bucket_size: int = 512, exact_non_trainable: bool = True, seed: int = 0,
                        process_set=None, name: str = "hvdc_broadcast") -> None:
    """Broadcast ``variables`` (tf or Keras variables) from ``root_rank`` with ``bits``-bit
    quantization (2, 4 or 8; ``None`` sends fp32 exactly). Every rank must pass the same list of
    variables (same shapes, same order). Runs eagerly or inside ``tf.function``."""
    if bits is not None and bits not in (2, 4, 8):
        raise ValueError(f"bits must be 2, 4, 8 or None (exact), got {bits}")
    comm = HorovodCollectives(process_set)
    if not 0 <= root_rank < comm.size:
        raise ValueError(f"root_rank {root_rank} is not a rank of a job of {comm.size}")
    codec = QSGD(bits=bits, bucket_size=bucket_size) if bits is not None else None
    label = f"broadcast({codec.describe()})" if codec is not None else "broadcast(exact)"
    for i, v in enumerate(variables):
        try:
            key = variable_key(v)
        except TypeError:
            key = f"variable.{i}"
        key = f"{name}.{i}.{key}"
        dtype = _dtype(v)
        shape = tf.TensorShape(v.shape)
        n = int(shape.num_elements())
        value = tf.convert_to_tensor(v)
        quantize = (codec is not None and dtype.is_floating and n > 0
                    and (getattr(v, "trainable", True) or not exact_non_trainable))
        if quantize:
            flat = tf.reshape(tf.cast(value, tf.float32), [-1])
            nbytes = codec.payload_nbytes(n)
            if comm.rank == root_rank:
                rng = tf.constant([mix(seed, i) & 0x7FFFFFFF, 0], tf.int64)
                payload = codec.encode(flat, seed=rng)
            else:
                payload = tf.zeros([nbytes], tf.uint8)
            payload = comm.broadcast(payload, root_rank, op_name(key, "bq"))
            new = tf.cast(tf.reshape(codec.decode(payload, n), shape), dtype)
            WIRE_STATS.add(label, n, nbytes, nbytes if comm.rank == root_rank else 0)
        else:
            send = value
            if dtype == tf.bool:
                send = tf.cast(value, tf.uint8)
            elif dtype == tf.bfloat16:
                send = tf.cast(value, tf.float32)
            out = comm.broadcast(send, root_rank, op_name(key, "bx"))
            new = tf.cast(out, dtype)
            nbytes = n * send.dtype.size
            WIRE_STATS.add(label if dtype.is_floating else "broadcast(exact)", n, nbytes,
                           nbytes if comm.rank == root_rank else 0)
        v.assign(new)
