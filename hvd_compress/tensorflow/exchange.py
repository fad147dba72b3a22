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
from typing import Callable, List, Optional, Set

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
        self._agreed: Set[str] = set()  # texts every rank agreed on in this world (agree())

    # ---------------------------------------------------------------- config agreement
    def ensure_checked(self) -> None:
        """Every rank's codec fingerprint gathered once, eagerly (also when called while a
        ``tf.function`` is traced: ranks trace the same function at the same point); a mismatch
        raises the same clear ``ValueError`` on every rank instead of a hang."""
        if self._checked:
            return
        self.agree(
            self.codec.fingerprint(),
            "hvdc_config_check",
            "ranks use different compression settings",
            "Construct the same codec with the same arguments on every rank.",
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
        self._agreed = set()

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

    def _drawer(self, key: str) -> Callable[[int, int], Optional[tf.Tensor]]:
        """The stateless-RNG seeds of tensor ``key``'s draws, one per (chunk, phase), from its
        step counter (counted once per exchange)."""
        codec = self.codec
        if not codec.stochastic:
            return lambda chunk, phase: None
        key_hash = zlib.crc32(key.encode())
        step = codec.next_step(key)
        rank = self.comm.rank

        def draw(chunk: int, phase: int):
            static = mix(codec.seed, rank, key_hash, chunk, phase)
            return tf.stack([tf.constant(static, tf.int64), step])

        return draw

    def _proposal(self, flat):
        return tf.reshape(tf.cast(self.codec.local_scale(flat), tf.float32), [1])

    def _count(self, sink: Optional[list], *args, **kwargs) -> None:
        """``stats.add(*args)`` now, or (``sink``, a fused bucket's member) once the bucket is
        done, in member order, so the float sums match the per-tensor exchange's exactly."""
        if sink is None:
            self.stats.add(self.label, *args, **kwargs)
        else:
            sink.append((args, kwargs))

    def _count_scale(self, sink: Optional[list] = None) -> None:
        self._count(sink, 0, 4, ring_allreduce_bytes(4, self.comm.size), tensors=0)

    def _bounds(self, n: int, pattern: str):
        if pattern == "allgather":
            return [(0, n)]
        return chunk_bounds(n, self.comm.size, self.codec.alignment())

    def _encode(self, key, flat, bounds, draw, scale):
        payloads = self.codec.worker_encode(flat, key, bounds, draw, scale)
        self._track_error(flat, payloads, bounds, key)
        return payloads

    def _finish_allgather(self, rows, n: int, sink: Optional[list] = None) -> tf.Tensor:
        """Every rank's payload of the whole tensor (``rows``, in rank order) averaged."""
        nbytes = self.codec.payload_nbytes(n)
        self._count(sink, n, nbytes, nbytes * (self.comm.size - 1))
        return self.codec.aggregate(rows, n)

    def _own_chunk(self, key, rows, bounds, draw, scale) -> tf.Tensor:
        """Reduce-scatter, at the owner: every rank's payload of this rank's chunk averaged and
        re-encoded (with a server residual under DoubleSqueeze)."""
        rank = self.comm.rank
        lo, hi = bounds[rank]
        mean = self.codec.aggregate(rows, hi - lo)
        return self.codec.server_encode(mean, key, draw, rank, scale)

    def _finish_reduce_scatter(self, owned, n: int, bounds, splits, sink: Optional[list] = None) -> tf.Tensor:
        """Reduce-scatter, at the end: every owner's re-encoded chunk (``owned``, in rank order)
        decoded into the whole averaged tensor."""
        parts = [self.codec.decode(p, b - a) for p, (a, b) in zip(owned, bounds)]
        # alltoall: the chunks for the other ranks; ring allgather: the N-1 chunks it does not own
        sent = 2 * (sum(splits) - splits[self.comm.rank])
        self._count(sink, n, sum(splits), sent)
        return tf.concat(parts, 0)

    def _compressed(self, key, flat, pattern):
        codec, comm = self.codec, self.comm
        n, size, rank = int(flat.shape.num_elements()), comm.size, comm.rank
        draw = self._drawer(key)
        scale = None
        if codec.shared_scale:
            scale = comm.allreduce(self._proposal(flat), op_name(key, "scale"), op="max")
            self._count_scale()
        bounds = self._bounds(n, pattern)
        payloads = self._encode(key, flat, bounds, draw, scale)
        if pattern == "allgather":
            nbytes = codec.payload_nbytes(n)
            gathered = tf.reshape(comm.allgather(payloads[0], op_name(key, "ag")), [size, nbytes])
            return self._finish_allgather([gathered[i] for i in range(size)], n)
        splits = [codec.payload_nbytes(b - a) for a, b in bounds]
        received = comm.alltoall(tf.concat(payloads, 0), splits, op_name(key, "a2a"))
        mine = tf.reshape(received, [size, splits[rank]])
        reencoded = self._own_chunk(key, [mine[i] for i in range(size)], bounds, draw, scale)
        gathered = comm.allgather(reencoded, op_name(key, "ag"))
        owned, pos = [], 0
        for nbytes in splits:
            owned.append(gathered[pos : pos + nbytes])
            pos += nbytes
        return self._finish_reduce_scatter(owned, n, bounds, splits)

    # ---------------------------------------------------------------- fused buckets
    def fusable(self, tensor) -> bool:
        """Whether ``tensor`` may join a fused bucket (:meth:`average_bucket`): compressed by a
        standard pattern (allgather or reduce-scatter) of this flat exchange. Summable codecs
        (one allreduce, which Horovod fuses itself), codecs with their own schedule
        (:meth:`Codec.custom_exchange`) and the hierarchical exchange stay per tensor."""
        codec = self.codec
        if getattr(self, "hierarchical", False) or not codec.should_compress(tensor):
            return False
        if type(codec).custom_exchange is not Codec.custom_exchange:
            return False
        n = int(tensor.shape.num_elements())
        return n > 0 and codec.pattern(self.comm.size, n) != "allreduce"

    def bucket_layout(self, members) -> str:
        """The text every rank must agree on for a bucket of ``members`` (key, tensor)."""
        size = self.comm.size
        return ";".join(
            f"{key}:{int(t.shape.num_elements())}:{self.codec.pattern(size, int(t.shape.num_elements()))}"
            for key, t in members
        )

    def agree(self, text: str, name: str, what: str, advice: str) -> None:
        """Every rank's ``text`` gathered once, eagerly (also while a ``tf.function`` is traced);
        a difference raises the same clear ``ValueError`` on every rank instead of a hang."""
        if text in self._agreed:
            return
        with tf.init_scope():
            mine = np.frombuffer(text.encode(), dtype=np.uint8)
            lengths = self.comm.allgather(tf.constant([mine.size], tf.int64), name + "_len")
            gathered = self.comm.allgather(tf.constant(mine, tf.uint8), name)
            lengths, gathered = lengths.numpy().tolist(), gathered.numpy().tobytes()
        texts, pos = [], 0
        for n in lengths:
            texts.append(gathered[pos : pos + n].decode())
            pos += n
        if len(set(texts)) > 1:
            listing = "; ".join(f"rank {r}: {t}" for r, t in enumerate(texts))
            raise ValueError(f"hvd_compress: {what} ({listing}). {advice}")
        self._agreed.add(text)

    @tf.autograph.experimental.do_not_convert
    def average_bucket(self, name: str, members) -> List[tf.Tensor]:
        """The averages of ``members`` (``(key, tensor)`` pairs, every one :meth:`fusable`), each
        pattern's rounds run once for the whole bucket: one allreduce of the shared scales (codecs
        with ``shared_scale``), one allgather of the allgather-pattern members' payloads, one
        alltoall and one allgather for the reduce-scatter members. Payload sizes are static, so
        every member's bytes are cut back out of the fused collectives: each member decodes exactly
        the bytes its own exchange would (results, residuals, RNG draws and wire statistics are
        those of :meth:`average` per tensor). Results come unchecked (see :meth:`check_finite`).

        ``name``: the bucket's collective names, the same on every rank (the caller agrees on
        the layout first, :meth:`agree`)."""
        codec, comm = self.codec, self.comm
        size, rank = comm.size, comm.rank
        items = []
        for key, tensor in members:
            tensor = tf.convert_to_tensor(tensor)
            n = int(tensor.shape.num_elements())
            flat = self.guard_world(tf.cast(tf.reshape(tensor, [-1]), tf.float32))
            pattern = codec.pattern(size, n)
            items.append(
                {
                    "key": key,
                    "shape": tensor.shape,
                    "dtype": tensor.dtype,
                    "n": n,
                    "flat": flat,
                    "pattern": pattern,
                    "draw": self._drawer(key),
                    "bounds": self._bounds(n, pattern),
                    "scale": None,
                    "stats": [],
                }
            )
        if codec.shared_scale:  # max is exact: the fused allreduce gives every member its own max
            proposals = tf.concat([self._proposal(it["flat"]) for it in items], 0)
            scales = comm.allreduce(proposals, op_name(name, "scale"), op="max")
            for i, it in enumerate(items):
                it["scale"] = scales[i : i + 1]
                self._count_scale(it["stats"])
        for it in items:
            it["payloads"] = self._encode(it["key"], it["flat"], it["bounds"], it["draw"], it["scale"])

        gather = [it for it in items if it["pattern"] == "allgather"]
        if gather:
            sizes = [codec.payload_nbytes(it["n"]) for it in gather]
            total = sum(sizes)
            send = tf.concat([it["payloads"][0] for it in gather], 0)
            rows = tf.reshape(comm.allgather(send, op_name(name, "ag")), [size, total])
            pos = 0
            for it, nbytes in zip(gather, sizes):
                it["out"] = self._finish_allgather(
                    [rows[r, pos : pos + nbytes] for r in range(size)], it["n"], it["stats"]
                )
                pos += nbytes

        scatter = [it for it in items if it["pattern"] == "reduce_scatter"]
        if scatter:
            for it in scatter:
                it["splits"] = [codec.payload_nbytes(b - a) for a, b in it["bounds"]]
            # to destination d: every member's payload of chunk d, in member order
            send = tf.concat([it["payloads"][d] for d in range(size) for it in scatter], 0)
            splits = [sum(it["splits"][d] for it in scatter) for d in range(size)]
            received = comm.alltoall(send, splits, op_name(name, "a2a"))
            rows = tf.reshape(received, [size, splits[rank]])
            reencoded, pos = [], 0
            for it in scatter:
                nbytes = it["splits"][rank]
                part = [rows[r, pos : pos + nbytes] for r in range(size)]
                reencoded.append(self._own_chunk(it["key"], part, it["bounds"], it["draw"], it["scale"]))
                pos += nbytes
            gathered = comm.allgather(tf.concat(reencoded, 0), op_name(name, "ag_rs"))
            owned: List[List[tf.Tensor]] = [[] for _ in scatter]
            pos = 0
            for owner in range(size):  # owner's block: its chunk of every member, in member order
                for j, it in enumerate(scatter):
                    nbytes = it["splits"][owner]
                    owned[j].append(gathered[pos : pos + nbytes])
                    pos += nbytes
            for it, parts in zip(scatter, owned):
                it["out"] = self._finish_reduce_scatter(parts, it["n"], it["bounds"], it["splits"], it["stats"])

        for it in items:
            for args, kwargs in it["stats"]:
                self.stats.add(self.label, *args, **kwargs)
        return [tf.cast(tf.reshape(it["out"], it["shape"]), it["dtype"]) for it in items]

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
