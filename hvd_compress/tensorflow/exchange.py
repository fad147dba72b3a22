"""Exchange in TensorFlow: from "N workers each hold a tensor" to "everyone holds the average".

The same patterns and wire bytes as ``hvd_compress.torch.exchange`` (chosen by the shared
:meth:`hvd_compress.common.CodecConfig.pattern`):

* ``allreduce``: summable codecs (FP16, NoCompression) and uncompressed tensors;
* ``allgather``: every worker's payload to everyone, each decodes and averages N payloads;
* ``reduce_scatter``: an alltoall sends chunk i's payload to its owner i, who averages, re-encodes
  (with a server residual under DoubleSqueeze), and an allgather returns every owner's chunk;
* the codec's own schedule where it has one (:meth:`Codec.custom_exchange`: GradiVeQ, PowerSGD).

Design choice, different from torch: the whole exchange of one tensor is a straight run of TF ops
(:meth:`Exchange.average` returns the averaged tensor), not a generator driven round by round.
Inside ``tf.function`` the executor already starts every collective whose inputs are ready and
Horovod's TF kernels are asynchronous, so the exchanges of different tensors overlap without a
driver, and ranks may reach them in any order (Horovod matches by name). Eagerly, ops run in
program order, which is the same on every rank because tensors are visited in a fixed order.
Sizes, chunk bounds and the rank are static Python values baked into the traced graph.

Every byte handed to a collective is counted in :data:`hvd_compress.tensorflow.stats.WIRE_STATS`.
"""

from __future__ import annotations

import zlib
from typing import Optional

import numpy as np
import tensorflow as tf

from hvd_compress.common import UNCOMPRESSED, chunk_bounds, mix, ring_allreduce_bytes
from hvd_compress.tensorflow.codecs.base import Codec
from hvd_compress.tensorflow.collectives import op_name
from hvd_compress.tensorflow.stats import WIRE_STATS, WireStats

PLAIN_DTYPES = (tf.float16, tf.float32, tf.float64, tf.int32, tf.int64)


def nonfinite_message(key: str, label: str) -> str:
    return (
        f"hvd_compress: gradient '{key}' holds NaN or Inf on at least one rank (codec {label}). "
        "Fix the loss or learning rate, or pass nonfinite='propagate' to the codec to let "
        "non-finite values through (e.g. for a loss-scale optimizer)"
    )


class Exchange:
    """Runs one codec's exchange for named tensors over a collectives backend."""

    def __init__(self, codec: Codec, comm, label: Optional[str] = None, stats: WireStats = WIRE_STATS):
        self.codec, self.comm, self.stats = codec, comm, stats
        self.label = label or codec.describe()
        self._checked = False

    # ---------------------------------------------------------------- config agreement
    def ensure_checked(self) -> None:
        """Every rank's codec fingerprint gathered once, eagerly (also when called while a
        ``tf.function`` is traced: ranks trace the same function at the same point); a mismatch
        raises the same clear ``ValueError`` on every rank instead of a hang."""
        if self._checked:
            return
        with tf.init_scope():
            mine = np.frombuffer(self.codec.fingerprint().encode(), dtype=np.uint8)
            lengths = self.comm.allgather(tf.constant([mine.size], tf.int64), "hvdc_config_check_len")
            gathered = self.comm.allgather(tf.constant(mine, tf.uint8), "hvdc_config_check")
            lengths, gathered = lengths.numpy().tolist(), gathered.numpy().tobytes()
        texts, pos = [], 0
        for n in lengths:
            texts.append(gathered[pos : pos + n].decode())
            pos += n
        if len(set(texts)) > 1:
            listing = "; ".join(f"rank {r}: {t}" for r, t in enumerate(texts))
            raise ValueError(
                "hvd_compress: ranks use different compression settings ("
                + listing
                + "). Construct the same codec with the same arguments on every rank."
            )
        self._checked = True

    def sub_exchange(self, codec: Codec, label: str) -> "Exchange":
        """An exchange of ``codec``, a codec nested in this one (GradiVeQ's fallback and sampler),
        over the same collectives and into the same wire statistics under ``label``. No agreement
        check of its own: this codec's fingerprint, agreed already, covers the nested codec."""
        sub = Exchange(codec, self.comm, label=label, stats=self.stats)
        sub._checked = True
        return sub

    def reset_world(self) -> None:
        """After an elastic reset: the agreement check runs again, among the new world's ranks."""
        self._checked = False

    def guard_world(self, flat: tf.Tensor) -> tf.Tensor:
        """``flat``, ordered after the backend's world guard where it has one (see
        :meth:`HorovodCollectives.world_guard`): a graph traced for another world fails before its
        first collective."""
        guard = getattr(self.comm, "world_guard", None)
        check = guard() if guard is not None else None
        if check is None:
            return flat
        with tf.control_dependencies([check]):
            return tf.identity(flat)

    # ---------------------------------------------------------------- state up front
    def build_state(self, key: str, shape, dtype) -> None:
        """Create the state variables the exchange of tensor ``key`` will use (RNG step counter,
        residuals; the server residual of this rank's chunk under DoubleSqueeze), so that a
        checkpoint can be restored into them before the first step."""
        shape = tf.TensorShape(shape)
        if not shape.is_fully_defined():
            return
        n = int(shape.num_elements())
        codec = self.codec
        if not codec.compresses(n, shape.rank, tf.as_dtype(dtype).is_floating):
            return
        if codec.build_custom_state(self, key, shape, dtype):
            return
        self.build_compressed_state(key, n)

    def build_compressed_state(self, key: str, n: int) -> None:
        """The state of a compressed exchange of ``n`` values under ``key`` (whatever the codec
        would decide for the tensor's shape: the hierarchical exchange compresses 1-D shards)."""
        codec = self.codec
        pattern = codec.pattern(self.comm.size, n)
        if pattern == "allreduce":
            return
        if codec.stochastic:
            codec.state_variable("step", key, [], tf.int64)
        owner = None
        if pattern == "reduce_scatter":
            lo, hi = chunk_bounds(n, self.comm.size, codec.alignment())[self.comm.rank]
            owner = hi - lo
        codec.build_state(key, n, owner)

    # ---------------------------------------------------------------- one tensor
    @tf.autograph.experimental.do_not_convert
    def average(self, key: str, tensor: tf.Tensor, compress: Optional[bool] = None, check: bool = True) -> tf.Tensor:
        """The average of ``tensor`` over ranks (same shape and dtype). ``compress=None`` lets the
        codec decide (:meth:`Codec.should_compress`); ``False`` forces the plain allreduce.
        ``check=False`` leaves the non-finite check to the caller (see :meth:`check_finite`)."""
        codec = self.codec
        tensor = tf.convert_to_tensor(tensor)
        shape, dtype = tensor.shape, tensor.dtype
        n = shape.num_elements()
        if n is None:
            raise ValueError(
                f"hvd_compress: gradient '{key}' has no static shape ({shape}); every rank "
                "must know the sizes it exchanges"
            )
        if n == 0:
            return tf.identity(tensor)
        if compress is None:
            compress = codec.should_compress(tensor)
        flat = tf.reshape(tensor, [-1])
        if not compress:
            out = self._allreduce_plain(key, flat)
        else:
            flat = self.guard_world(tf.cast(flat, tf.float32))
            pattern = codec.pattern(self.comm.size, int(n))
            custom = codec.custom_exchange(self, key, flat, shape)
            if custom is not None:
                out = custom
            elif pattern == "allreduce":
                out = self._allreduce_summable(key, flat)
            else:
                out = self._compressed(key, flat, pattern)
        out = tf.cast(tf.reshape(out, shape), dtype)
        if check:
            out = self.check_finite(key, out)
        return out

    def check_finite(self, key: str, out: tf.Tensor) -> tf.Tensor:
        if self.codec.nonfinite == "raise" and out.dtype.is_floating:
            return tf.debugging.assert_all_finite(out, nonfinite_message(key, self.label))
        return out

    def _allreduce_plain(self, key, flat):
        send = flat
        if flat.dtype not in PLAIN_DTYPES:
            send = tf.cast(flat, tf.float32 if flat.dtype.is_floating else tf.int64)
        op = "average" if send.dtype.is_floating else "sum"
        out = self.comm.allreduce(send, op_name(key, "plain"), op=op)
        if op == "sum":
            out = out // self.comm.size
        n = int(flat.shape.num_elements())
        nbytes = n * send.dtype.size
        self.stats.add(UNCOMPRESSED, n, nbytes, ring_allreduce_bytes(nbytes, self.comm.size))
        return out

    def _allreduce_summable(self, key, flat):
        t = self.codec.to_summable(flat)
        self.track_summable_error(flat, t)
        out = self.comm.allreduce(t, op_name(key, "sum"), op="average")
        n = int(flat.shape.num_elements())
        nbytes = n * t.dtype.size
        self.stats.add(self.label, n, nbytes, ring_allreduce_bytes(nbytes, self.comm.size))
        return self.codec.from_summable(out)

    def _compressed(self, key, flat, pattern):
        codec, comm = self.codec, self.comm
        n, size, rank = int(flat.shape.num_elements()), comm.size, comm.rank
        key_hash = zlib.crc32(key.encode())
        step = codec.next_step(key) if codec.stochastic else None

        def draw(chunk: int, phase: int):
            if not codec.stochastic:
                return None
            static = mix(codec.seed, rank, key_hash, chunk, phase)
            return tf.stack([tf.constant(static, tf.int64), step])

        scale = None
        if codec.shared_scale:
            proposal = tf.reshape(tf.cast(codec.local_scale(flat), tf.float32), [1])
            scale = comm.allreduce(proposal, op_name(key, "scale"), op="max")
            self.stats.add(self.label, 0, 4, ring_allreduce_bytes(4, size), tensors=0)

        if pattern == "allgather":
            bounds = [(0, n)]
            payloads = codec.worker_encode(flat, key, bounds, draw, scale)
            self._track_error(flat, payloads, bounds, key)
            nbytes = codec.payload_nbytes(n)
            gathered = tf.reshape(comm.allgather(payloads[0], op_name(key, "ag")), [size, nbytes])
            self.stats.add(self.label, n, nbytes, nbytes * (size - 1))
            return codec.aggregate([gathered[i] for i in range(size)], n)

        bounds = chunk_bounds(n, size, codec.alignment())
        payloads = codec.worker_encode(flat, key, bounds, draw, scale)
        self._track_error(flat, payloads, bounds, key)
        splits = [codec.payload_nbytes(b - a) for a, b in bounds]
        received = comm.alltoall(tf.concat(payloads, 0), splits, op_name(key, "a2a"))
        lo, hi = bounds[rank]
        mine = tf.reshape(received, [size, splits[rank]])
        mean = codec.aggregate([mine[i] for i in range(size)], hi - lo)
        reencoded = codec.server_encode(mean, key, draw, rank, scale)
        gathered = comm.allgather(reencoded, op_name(key, "ag"))
        parts, pos = [], 0
        for (a, b), nbytes in zip(bounds, splits):
            parts.append(codec.decode(gathered[pos : pos + nbytes], b - a))
            pos += nbytes
        # alltoall: the chunks for the other ranks; ring allgather: the N-1 chunks it does not own
        sent = 2 * (sum(splits) - splits[rank])
        self.stats.add(self.label, n, sum(splits), sent)
        return tf.concat(parts, 0)

    def track_summable_error(self, flat, summable):
        """With ``stats.track_error``: the cast error of a summable codec (FP16's rounding)."""
        if self.stats.track_error:
            err = self.codec.from_summable(summable) - flat
            self.stats.add_error(self.label, tf.reduce_sum(err * err), tf.reduce_sum(flat * flat))

    def _track_error(self, flat, payloads, bounds, key):
        """With ``stats.track_error``: this worker's ``||p - C(p)||^2`` and ``||p||^2``, where ``p``
        is what it encoded: the gradient, or for error-feedback codecs the gradient plus the
        residual (then ``p - C(p)`` is exactly the new residual)."""
        if not self.stats.track_error:
            return
        residual = self.codec.residual_of(key)
        if residual is not None:
            err = residual.read_value()  # read after the encoder's update (same resource, in order)
            decoded = tf.concat([self.codec.decode(p, b - a) for p, (a, b) in zip(payloads, bounds)], 0)
            ref = decoded + err
        else:
            decoded = tf.concat([self.codec.decode(p, b - a) for p, (a, b) in zip(payloads, bounds)], 0)
            err, ref = decoded - flat, flat
        self.stats.add_error(self.label, tf.reduce_sum(err * err), tf.reduce_sum(ref * ref))
