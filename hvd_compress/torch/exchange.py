"""Exchange: from "N workers each hold a tensor" to "everyone holds the average".

Each tensor's exchange is a generator that yields in-flight collectives (``Pending``) and returns the
averaged tensor. :func:`drive` advances many such generators round by round: every generator
issues its next collective before any rank blocks on one, so ranks may visit tensors in different
orders without deadlock, and the phases of different tensors overlap.

Patterns (chosen by :meth:`Codec.pattern`):

* ``allreduce``: summable codecs (FP16, NoCompression, linear codecs) and uncompressed tensors.
* ``allgather``: every worker's whole payload to everyone; each decodes and averages N payloads
  (one quantization; traffic grows with N).
* ``reduce_scatter``: the tensor is cut into N chunks; an alltoall sends chunk i's payload to its
  owner i, who averages the N payloads, re-encodes the mean (with a server-side residual under
  DoubleSqueeze), and an allgather returns every owner's payload to everyone. Traffic per worker
  is ``2 (N-1)/N`` payloads, like a ring allreduce of the compressed tensor.

Every byte handed to a collective is counted in :data:`WIRE_STATS`.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from typing import Dict, Generator, List, Optional, Tuple

import torch

from hvd_compress.common import UNCOMPRESSED, chunk_bounds, mix, ring_allreduce_bytes  # re-exported
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.finite import all_finite, sum_is_finite
from hvd_compress.torch.fusion import FusedCollectives
from hvd_compress.torch.stats import WIRE_STATS, WireStats, reset_wire_stats, wire_stats  # noqa: F401 (re-exported)


_mix = mix  # the RNG stream seed hash (hvd_compress.common.mix)


def agree(comm, text: str, name: str, problem: str, fix: str) -> Generator:
    """Generator: allgather every rank's ``text``; if they differ, raise the same ``ValueError``
    (``problem``, each rank's text, ``fix``) on every rank, so a mismatch fails clearly instead of
    hanging in a later collective. Runs unfused (the texts' lengths differ across ranks)."""
    comm = getattr(comm, "unfused", comm)
    mine = text.encode()
    lengths = yield comm.allgather_async(torch.tensor([len(mine)], dtype=torch.int64), name=f"{name}.len")
    gathered = yield comm.allgather_async(torch.frombuffer(bytearray(mine), dtype=torch.uint8), name=name)
    texts, pos = [], 0
    for n in lengths.tolist():  # host sync (allow-listed): the agreement check, once per world
        texts.append(bytes(gathered[pos : pos + n].tolist()).decode())  # host sync (allow-listed): once per world
        pos += n
    if len(set(texts)) > 1:
        listing = "; ".join(f"rank {r}: {t}" for r, t in enumerate(texts))
        raise ValueError(f"hvd_compress: {problem} ({listing}). {fix}")


class Exchange:
    """Runs one codec's exchange for named tensors over a collectives backend."""

    hierarchical = False  # HierarchicalExchange (hvd_compress.torch.hierarchical) says True

    def __init__(self, codec: Codec, comm, label: Optional[str] = None, stats: WireStats = WIRE_STATS):
        self.codec, self.comm, self.stats = codec, comm, stats
        self.label = label or codec.describe()
        self._checked_world = None  # (size, rank) the agreement check last ran for

    # ---------------------------------------------------------------- config agreement
    def check_config(self) -> Generator:
        """Gather every rank's codec fingerprint; raise the same clear error on all on mismatch."""
        yield from agree(
            self.comm,
            self.codec.fingerprint(),
            "hvdc.config_check",
            "ranks use different compression settings",
            "Construct the same codec with the same arguments on every rank.",
        )
        self._checked_world = (self.comm.size, self.comm.rank)

    def ensure_checked(self) -> None:
        """Blocking config agreement check before the first exchange of this engine, and again
        whenever the world changed (an elastic reset: new size or rank) or after
        :meth:`reset_world`, so a worker that joined with other settings fails clearly."""
        if self._checked_world != (self.comm.size, self.comm.rank):
            drive({"hvdc.config_check": self.check_config()})

    def reset_world(self) -> None:
        """Forget the agreement check (chunk bounds and patterns are derived from ``comm.size``
        at every exchange): the next exchange re-runs the check in the current world."""
        self._checked_world = None

    def sub_exchange(self, codec: Codec, label: str) -> "Exchange":
        """A flat exchange of ``codec``, a codec nested in this one (GradiVeQ's fallback and
        sampler), over the same collectives and into the same wire statistics under ``label``."""
        return Exchange(codec, self.comm, label=label, stats=self.stats)

    # ---------------------------------------------------------------- one tensor
    def average(self, key: str, tensor: torch.Tensor, compress: Optional[bool] = None) -> Generator:
        """Generator: yields collectives, returns the average of ``tensor`` over ranks, with the
        shape and dtype of ``tensor``. ``compress=None`` lets the codec decide
        (:meth:`Codec.should_compress`); ``False`` forces the plain allreduce."""
        codec = self.codec
        shape, dtype = tensor.shape, tensor.dtype
        if tensor.numel() == 0:
            return tensor.detach().clone()
        flat = tensor.detach().reshape(-1)
        if compress is None:
            compress = codec.should_compress(tensor)
        if not compress:
            out = yield from self._allreduce_plain(key, flat)
        else:
            out = yield from self.average_compressed(key, flat.to(torch.float32).contiguous(), shape)
        out = out.view(shape).to(dtype)
        yield from self.check_finite(key, tensor, out)
        return out

    def average_compressed(self, key: str, flat: torch.Tensor, shape: Optional[torch.Size] = None) -> Generator:
        """Generator: the codec's compressed exchange of the flat fp32 ``flat`` over ``self.comm``;
        returns the flat fp32 average. No non-finite check (callers that run it on a part of a
        tensor, as the hierarchical exchange does, check the whole result on every rank alike)."""
        codec = self.codec
        pattern = codec.pattern(self.comm.size, flat.numel())
        custom = codec.custom_exchange(self, key, flat, shape if shape is not None else flat.shape)
        if custom is not None:
            return (yield from custom)
        if pattern == "allreduce":
            return (yield from self._allreduce_summable(key, flat))
        return (yield from self._compressed(key, flat, pattern))

    def check_finite(self, key: str, tensor: torch.Tensor, out: torch.Tensor) -> Generator:
        """Generator: unless the codec propagates them, hands the :class:`Driver` a
        :class:`FiniteCheck` of the averaged ``out``, which raises ``FloatingPointError`` naming
        ``key`` when ``out`` holds NaN/Inf (every rank holds the same ``out``, so every rank raises
        alike). The flag stays on ``out``'s device: the driver reads all of a step's flags at once,
        one host sync per step instead of one per tensor on a GPU. The flag is a finite sum (one
        cheap reduction, :mod:`hvd_compress.torch.finite`); a false one is confirmed exactly."""
        if self.codec.nonfinite == "raise" and tensor.dtype.is_floating_point:
            yield FiniteCheck(
                out,
                FloatingPointError(
                    f"hvd_compress: gradient '{key}' holds NaN or Inf on at least one rank "
                    f"(codec {self.label}). Fix the loss or learning rate, or pass nonfinite='propagate' "
                    f"to the codec to let non-finite values through (e.g. for AMP's GradScaler)."
                ),
            )

    def _allreduce_plain(self, key, flat):
        n = flat.numel()
        send = flat
        if flat.dtype not in (torch.float32, torch.float64, torch.float16, torch.int32, torch.int64):
            send = flat.to(torch.float32 if flat.dtype.is_floating_point else torch.int64)
        op = "average" if send.dtype.is_floating_point else "sum"
        out = yield self.comm.allreduce_async(send.contiguous(), name=f"hvdc.{key}.plain", op=op)
        if op == "sum":
            out = out // self.comm.size
        nbytes = send.numel() * send.element_size()
        self.stats.add(UNCOMPRESSED, n, nbytes, _ring_allreduce_bytes(nbytes, self.comm.size))
        return out

    def _allreduce_summable(self, key, flat):
        t = self.codec.to_summable(flat)
        out = yield self.comm.allreduce_async(t.contiguous(), name=f"hvdc.{key}.sum", op="average")
        nbytes = t.numel() * t.element_size()
        self.stats.add(self.label, flat.numel(), nbytes, _ring_allreduce_bytes(nbytes, self.comm.size))
        if self.stats.track_error:  # the cast's rounding (FP16)
            self.stats.add_error(self.label, self.codec.from_summable(t).to(flat.dtype) - flat, flat)
        return self.codec.from_summable(out)

    def _track_error(self, key, flat, payloads, bounds):
        """With ``stats.track_error``: this worker's ``||p - C(p)||^2`` and ``||p||^2``, where ``p``
        is what it encoded: the gradient, or for error-feedback codecs the gradient plus the
        residual (then ``p - C(p)`` is exactly the new residual)."""
        if not self.stats.track_error:
            return
        decoded = torch.cat([self.codec.decode(p, b - a).reshape(-1) for p, (a, b) in zip(payloads, bounds)])
        residual = self.codec.residual_of(key)
        if residual is not None and residual.numel() == decoded.numel():
            self.stats.add_error(self.label, residual, decoded + residual)
        else:
            self.stats.add_error(self.label, decoded - flat.to(decoded.dtype), flat)

    def _compressed(self, key, flat, pattern):
        codec, comm = self.codec, self.comm
        n, size, rank = flat.numel(), comm.size, comm.rank
        step = codec.next_step(key)
        key_hash = zlib.crc32(key.encode())

        def draw(chunk: int, phase: int) -> Optional[torch.Generator]:
            if not codec.stochastic:
                return None
            g = torch.Generator()
            g.manual_seed(_mix(codec.seed, rank, step, key_hash, chunk, phase))
            return g

        scale = None
        if codec.shared_scale:
            proposal = codec.local_scale(flat).reshape(1).to(torch.float32)
            scale = yield comm.allreduce_async(proposal, name=f"hvdc.{key}.scale", op="max")
            self.stats.add(self.label, 0, 4, _ring_allreduce_bytes(4, size), tensors=0)

        if pattern == "allgather":
            payload = codec.worker_encode(flat, key, [(0, n)], draw, scale)[0]
            self._track_error(key, flat, [payload], [(0, n)])
            gathered = yield comm.allgather_async(payload, name=f"hvdc.{key}.ag")
            nbytes = payload.numel()
            self._check_received(key, n, gathered, size * nbytes, "allgathered")
            self.stats.add(self.label, n, nbytes, nbytes * (size - 1))
            return codec.aggregate(list(gathered.view(size, nbytes)), n)

        bounds = chunk_bounds(n, size, codec.alignment())
        payloads = codec.worker_encode(flat, key, bounds, draw, scale)
        self._track_error(key, flat, payloads, bounds)
        splits = [p.numel() for p in payloads]
        received = yield comm.alltoall_async(torch.cat(payloads), splits, name=f"hvdc.{key}.a2a")
        lo, hi = bounds[rank]
        try:
            self._check_received(key, n, received, size * splits[rank], "received by alltoall")
        except ValueError as exc:
            # Only the ranks whose chunk came out wrong know. Raising here would leave the others
            # waiting in the allgather (a hang); send them an empty chunk instead, which makes
            # their allgather total wrong too, and raise after it.
            mismatch: Optional[ValueError] = exc
            reencoded = torch.empty(0, dtype=torch.uint8, device=received.device)
        else:
            mismatch = None
            mine = received.view(size, splits[rank])
            mean = codec.aggregate(list(mine), hi - lo)
            reencoded = codec.server_encode(mean, key, draw, rank, scale)
        # each owner's chunk has its own size: a fused backend needs them to cut the buffer
        sized = {"sizes": splits} if isinstance(comm, FusedCollectives) else {}
        gathered = yield comm.allgather_async(reencoded, name=f"hvdc.{key}.ag", **sized)
        if mismatch is not None:
            raise mismatch
        self._check_received(key, n, gathered, sum(splits), "allgathered")
        out = torch.empty(n, device=flat.device)  # on the gradient's device (GPU codecs)
        pos = 0
        for (a, b), nbytes in zip(bounds, splits):
            codec.decode_into(gathered[pos : pos + nbytes], out[a:b])
            pos += nbytes
        # alltoall: the chunks for the other ranks; ring allgather: the N-1 chunks it does not own
        sent = 2 * (sum(splits) - splits[rank])
        self.stats.add(self.label, n, sum(splits), sent)
        return out

    def _check_received(self, key: str, n: int, data: torch.Tensor, expected: int, what: str) -> None:
        """``ValueError`` naming the codec and tensor unless ``data`` holds exactly ``expected``
        bytes: peers that sent payloads of another size (another shape under this name, another
        codec build) must not be sliced into wrong values. Every rank sees the same totals, so
        every rank raises."""
        if data.numel() != expected:
            raise ValueError(
                f"hvd_compress: {self.codec.describe()} payloads for tensor {key!r} ({n} values here): "
                f"{data.numel()} bytes {what}, expected {expected} from {self.comm.size} ranks; the "
                "ranks' tensors under this name differ in size (same model and parameter names on "
                "every rank?)"
            )


_ring_allreduce_bytes = ring_allreduce_bytes


class CudaSideStreams:
    """Runs the exchange's device work (encode, collectives' stream ordering, decode) on a side
    CUDA stream per device, so on a GPU it overlaps the caller's stream (backward's kernels).

    Ordering is by events (``wait_stream``), never by a host sync:

    * :meth:`enter`: the side stream waits for the caller's current stream, so the gradient the
      generator reads is complete (backward wrote it there);
    * every step of a generator and every ``wait()`` on its collective run under the side stream,
      so collectives (NCCL, Horovod) are ordered after the encode and the decode after them;
    * :meth:`leave`: the caller's stream waits for each side stream used, and each result is
      marked as used by the caller's stream (``record_stream``), so the caching allocator does not
      hand its memory to later side-stream work while the caller still reads it.

    CPU tensors (and ``HVD_COMPRESS_CUDA_STREAMS=0``) use no stream: everything is a no-op.
    """

    def __init__(self):
        self._entered: Dict[object, object] = {}  # side stream -> the caller's stream it follows

    @staticmethod
    def enabled() -> bool:
        return os.environ.get("HVD_COMPRESS_CUDA_STREAMS", "1") != "0"

    def enter(self, device):
        """The side stream for ``device`` (``None`` off CUDA), ordered after the caller's work."""
        if device is None or torch.device(device).type != "cuda" or not self.enabled():
            return None
        device = torch.device(device)
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        stream = _side_stream(device)
        caller = torch.cuda.current_stream(device)
        stream.wait_stream(caller)  # an event recorded on the caller's stream, waited on the side
        self._entered[stream] = caller
        return stream

    def current(self):
        """The side stream entered last (``None``: none): fused collectives run on it."""
        return next(reversed(self._entered), None) if self._entered else None

    @staticmethod
    def on(stream):
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def leave(self, results) -> None:
        """The callers' streams wait for the side streams; results are marked as theirs."""
        if not self._entered:
            return
        for stream, caller in self._entered.items():
            caller.wait_stream(stream)
        for t in results:
            if isinstance(t, torch.Tensor) and t.device.type == "cuda":
                t.record_stream(torch.cuda.current_stream(t.device))
        self._entered = {}


_SIDE_STREAMS: Dict[torch.device, object] = {}


def _side_stream(device: torch.device):
    """One side stream per device for the process (streams are cheap but not free to create)."""
    stream = _SIDE_STREAMS.get(device)
    if stream is None:
        stream = _SIDE_STREAMS[device] = torch.cuda.Stream(device=device)
    return stream


class FiniteCheck:
    """Yielded by an exchange generator between collectives: the averaged ``tensor`` to check and
    the ``error`` to raise when it holds NaN/Inf. ``flag`` is :func:`sum_is_finite` of it, a
    device-side bool (true proves every value finite). The :class:`Driver` sends the generator on
    at once, reads every flag of the step together in :meth:`Driver.finish`, and confirms a false
    one exactly (:meth:`failed`) before raising: finite values can overflow a sum."""

    __slots__ = ("tensor", "flag", "error")

    def __init__(self, tensor: torch.Tensor, error: BaseException):
        self.tensor, self.flag, self.error = tensor, sum_is_finite(tensor), error

    def failed(self) -> bool:
        return not all_finite(self.tensor)


class Driver:
    """Advances exchange generators round by round until all are done.

    Every generator issues its next collective before this rank blocks on any, so all ranks make
    progress whatever order they visit tensors in. An exception from one generator is raised after
    the others have finished, so no collective is left half-done on this rank.
    """

    def __init__(self, comm=None):
        # a fused backend (fusion.py) is flushed before each round's waits, so each fused bucket
        # holds exactly the collectives the previous round issued: the same set on every rank,
        # whatever order this rank visits tensors in
        self._flush = getattr(comm, "flush", None)
        self.results: Dict[str, torch.Tensor] = {}
        self._waiting: Dict[str, Tuple[Generator, object]] = {}
        self._errors: List[BaseException] = []
        self._checks: List[FiniteCheck] = []
        self._streams = CudaSideStreams()
        self._stream_of: Dict[str, object] = {}  # key -> its side stream (CUDA tensors only)

    def start(self, key: str, gen: Generator, device: Optional[torch.device] = None) -> None:
        """Run ``gen`` up to its first collective (which is then in flight). ``device``: where
        the tensor lives; on a CUDA device the generator's work runs on a side stream (see
        :class:`CudaSideStreams`)."""
        stream = self._streams.enter(device)
        if stream is not None:
            self._stream_of[key] = stream
        self._advance(key, gen, None)

    def _advance(self, key, gen, value):
        with self._streams.on(self._stream_of.get(key)):
            try:
                pending = gen.send(value)
                while isinstance(pending, FiniteCheck):  # not a collective: note it, go on at once
                    self._checks.append(pending)
                    pending = gen.send(None)
            except StopIteration as stop:
                self.results[key] = stop.value
            except BaseException as exc:  # re-raised by finish(), after the others
                self._errors.append(exc)
            else:
                self._waiting[key] = (gen, pending)

    def _wait(self, key, pending):
        # waiting under the side stream makes *it* (not the caller's stream) wait for the collective
        with self._streams.on(self._stream_of.get(key)):
            return pending.wait()

    def flush(self) -> None:
        """Send what a fused backend holds now (no-op without one), ordered after the encodes
        (under the side stream on a GPU: the fused buffer is packed from their payloads)."""
        if self._flush is not None:
            with self._streams.on(self._streams.current()):
                self._flush()

    def finish(self) -> Dict[str, torch.Tensor]:
        while self._waiting:
            self.flush()
            batch = list(self._waiting.items())
            self._waiting.clear()
            for key, (gen, pending) in batch:
                self._advance(key, gen, self._wait(key, pending))
        results, errors, checks = self.results, self._errors, self._checks
        self.results, self._errors, self._checks = {}, [], []
        self._streams.leave(results.values())
        self._stream_of = {}
        if errors:
            raise errors[0]
        if checks:
            flags = torch.stack([c.flag.reshape(()) for c in checks]).cpu()  # host sync (allow-listed): once per step
            if not bool(flags.all()):  # host sync (allow-listed): flags are on the host already
                for index in (~flags).nonzero().flatten().tolist():  # host sync (allow-listed): host tensor
                    if checks[index].failed():
                        raise checks[index].error
        return results

    @property
    def busy(self) -> bool:
        return bool(self._waiting)


def drive(generators: Dict[str, Generator], comm=None, device=None) -> Dict[str, torch.Tensor]:
    """Run exchange generators to completion (see :class:`Driver`; ``comm``: the fused backend
    they issue on, if any; ``device``: the tensors' device); returns each one's result."""
    driver = Driver(comm)
    for key, gen in generators.items():
        driver.start(key, gen, device)
    return driver.finish()
