"""The asynchronous parameter server on Ray actors: server shards, workers, and the driver.

* :class:`ServerShard` (one Ray actor per shard) owns a contiguous slice of the model and the
  algorithm's state for it. Every worker message goes through :meth:`ServerShard.handle`, which
  checks it (a malformed message raises :class:`~hvd_compress.ps.wire.MalformedMessage` in the
  sender and changes nothing), counts its bits and the reply's bits, and answers. Ray runs one
  method of an actor at a time, so updates are atomic per shard; different shards and different
  workers proceed independently.
* :class:`Worker` (one Ray actor per worker) loops without barriers: pull every shard's slice
  (quantized by the shard), compute the SVRG gradient on a mini-batch, push each shard its slice
  (quantized by the worker); a shard answers a push with its next model, so an update costs one
  remote call per shard. Shards and workers run inside pooled :class:`Host` actors. The version a shard stamps on a pulled model comes back with the
  gradient, so the shard records each update's **staleness** (updates applied in between).
* :func:`run` (the driver) starts the actors, runs epochs (snapshot, full gradient computed by the
  workers in chunks, inner loop), evaluates the loss at epoch ends and at checkpoints the shards
  record, and stops at ``target_loss`` or after ``epochs``.

Robustness: a worker that dies (its process exits or is killed) is dropped: the shards never wait
for it; the driver notices its failed call, re-assigns its full-gradient chunk to a live worker,
and runs the next epochs with the rest. Gradients from a closed epoch are dropped and counted.
A worker that hangs past ``epoch_timeout_s`` is killed and treated the same way.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hvd_compress.ps import wire
from hvd_compress.ps.wire import MalformedMessage, Message

DEFAULT_RAY_INIT = dict(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False)


# ==================================================================================== server
class ServerShard:
    """One parameter-server shard: values ``[lo, hi)`` of the model and the algorithm's state."""

    def __init__(
        self, shard_id: int, x0: np.ndarray, algorithm, inner_steps: int, checkpoint_every: int, seed: int = 0
    ):
        self.id = int(shard_id)
        self.alg = algorithm
        self.n = int(np.asarray(x0).size)
        self.state = algorithm.init_state(np.asarray(x0, np.float64))
        self.inner_steps = int(inner_steps)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.rng = np.random.default_rng([int(seed), 7919, self.id])
        self.epoch = -1
        self.version = 0
        self.updates_in_epoch = 0
        self.bits: Dict[str, int] = defaultdict(int)
        self.messages: Dict[str, int] = defaultdict(int)
        self.staleness: List[int] = []
        self.model_bits: Counter = Counter()
        self.dropped = 0
        self.rejected = 0
        self.partials: Dict[int, np.ndarray] = {}
        self.full_grad: Optional[np.ndarray] = None
        self.full_grad_epoch = -1
        self.checkpoints: List[Tuple[int, int, int, np.ndarray]] = []

    # ----------------------------------------------------------- driver-side control (not counted)
    def begin_epoch(self, epoch: int) -> None:
        self.alg.begin_epoch(self.state, epoch)
        self.epoch = int(epoch)
        self.updates_in_epoch = 0
        self.partials = {}
        self.full_grad = None

    def finish_full_grad(self, epoch: int, n_chunks: int) -> None:
        missing = [c for c in range(n_chunks) if c not in self.partials]
        if epoch != self.epoch or missing:
            raise RuntimeError(f"shard {self.id}: full gradient of epoch {epoch} lacks chunks {missing}")
        self.full_grad = np.sum([self.partials[c] for c in range(n_chunks)], axis=0)
        self.full_grad_epoch = epoch

    def total_bits(self) -> int:
        return int(sum(self.bits.values()))

    def report(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "output": np.asarray(self.alg.output(self.state), np.float64).copy(),
            "version": self.version,
            "epoch": self.epoch,
            "bits": dict(self.bits),
            "messages": dict(self.messages),
            "n": self.n,
            "total_bits": self.total_bits(),
            "staleness": list(self.staleness),
            "model_bits": dict(self.model_bits),
            "dropped": self.dropped,
            "rejected": self.rejected,
        }

    def get_checkpoints(self):
        return list(self.checkpoints)

    # ----------------------------------------------------------- messages from workers
    def handle(self, msg: Message) -> Message:
        """Check, count and answer one worker message (a pull request or a push)."""
        try:
            wire.check_header(msg, wire.REQUESTS + wire.PUSHES, self.n)
            self.bits["up:" + msg.kind] += msg.nbits()
            self.messages["up:" + msg.kind] += 1
            reply = self._dispatch(msg)
        except MalformedMessage:
            self.rejected += 1
            raise
        self.bits["down:" + reply.kind] += reply.nbits()
        self.messages["down:" + reply.kind] += 1
        return reply

    def _reply(self, kind, enc=None, version=None) -> Message:
        enc = enc or ("none", 0, np.zeros(0, np.uint8))
        return wire.encode(
            kind,
            self.id,
            max(self.epoch, 0),
            enc,
            self.n if enc[0] != "none" else 0,
            version=self.version if version is None else version,
        )

    def _dispatch(self, msg: Message) -> Message:
        kind = msg.kind
        if kind in wire.REQUESTS:
            if msg.encoding != "none" or msg.payload.size:
                raise MalformedMessage(
                    f"malformed message rejected: a {kind} request carries no payload "
                    f"(got encoding={msg.encoding!r}, {msg.payload.size} bytes)"
                )
            if msg.epoch != self.epoch:
                return self._reply("closed")
            if kind == "pull_snapshot":
                return self._reply("snapshot", wire.fp32(self.state["snapshot"]))
            if kind == "pull_full_grad":
                if self.full_grad_epoch != self.epoch:
                    return self._reply("closed")
                return self._reply("full_grad", wire.fp32(self.full_grad))
            return self._model_reply()
        # pushes
        if msg.encoding in ("none", "same"):
            raise MalformedMessage(
                f"malformed message rejected: a {kind} push must carry values " f"(got encoding={msg.encoding!r})"
            )
        if kind == "partial" and (msg.encoding != "fp32" or msg.chunk < 0):
            raise MalformedMessage(
                "malformed message rejected: a partial full gradient is fp32 with a "
                f"chunk id >= 0 (got encoding={msg.encoding!r}, chunk={msg.chunk})"
            )
        if kind == "gradient" and msg.version > self.version:
            raise MalformedMessage(
                f"malformed message rejected: gradient computed on version "
                f"{msg.version}, but this shard is at version {self.version}"
            )
        values = wire.decode(msg)
        if msg.epoch != self.epoch:
            self.dropped += 1
            return self._reply("closed" if kind == "gradient" else "ack")
        if kind == "partial":
            self.partials[int(msg.chunk)] = values.astype(np.float64)
            return self._reply("ack")
        self.staleness.append(self.version - msg.version)
        self.alg.apply(self.state, values.astype(np.float64))
        self.version += 1
        self.updates_in_epoch += 1
        if self.version % self.checkpoint_every == 0:
            out = np.asarray(self.alg.output(self.state), np.float32).copy()
            self.checkpoints.append((self.version, self.epoch, self.total_bits(), out))
        return self._model_reply()  # push-and-pull: the answer to a gradient is the next model

    def _model_reply(self) -> Message:
        if self.updates_in_epoch >= self.inner_steps:
            return self._reply("closed")
        enc = self.alg.encode_model(self.alg.query_point(self.state), self.state["snapshot"], self.rng)
        self.model_bits[int(enc[1])] += 1
        return self._reply("model", enc)


# ==================================================================================== worker
class Worker:
    """One asynchronous worker: pulls models, pushes SVRG gradients; no barriers in the inner loop.

    ``fault`` (for tests and demonstrations): ``{"after": k, "where": "before_push" | "mid_push" |
    "hang"}`` makes the worker's process exit after ``k`` completed updates, either before pushing
    its next gradient or after pushing it to the first shard only (a partially delivered update),
    or stop responding there (``"hang"``).
    """

    def __init__(
        self,
        worker_id: int,
        problem,
        shards: Sequence,
        bounds: Sequence[Tuple[int, int]],
        algorithm,
        batch_size: int,
        seed: int = 0,
        fault: Optional[Dict[str, Any]] = None,
    ):
        self.id = int(worker_id)
        self.problem = problem
        self.shards = list(shards)
        self.bounds = [tuple(b) for b in bounds]
        self.alg = algorithm
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng([int(seed), 104729, self.id])
        self.fault = fault
        self.updates = 0
        self.snapshot: Optional[np.ndarray] = None
        self.full_grad: Optional[np.ndarray] = None

    def _ask(self, kind: str, epoch: int) -> Optional[List[Message]]:
        import ray

        req = [Message(kind=kind, sender=self.id, epoch=int(epoch)) for _ in self.shards]
        replies = ray.get([s.handle.remote(m) for s, m in zip(self.shards, req)])
        for r, (lo, hi) in zip(replies, self.bounds):
            wire.check_header(r, wire.REPLIES, hi - lo)
        if any(r.kind == "closed" for r in replies):
            return None
        return replies

    def _push(self, kind: str, epoch: int, vec: np.ndarray, encode, versions=None, chunk=-1, only=None):
        """Send each shard its slice of ``vec``; returns the replies (checked)."""
        import ray

        futures, sizes = [], []
        for i, (s, (lo, hi)) in enumerate(zip(self.shards, self.bounds)):
            if only is not None and i not in only:
                continue
            msg = wire.encode(
                kind,
                self.id,
                epoch,
                encode(vec[lo:hi]),
                hi - lo,
                version=0 if versions is None else versions[i],
                chunk=chunk,
            )
            futures.append(s.handle.remote(msg))
            sizes.append(hi - lo)
        replies = ray.get(futures)
        for r, n in zip(replies, sizes):
            wire.check_header(r, wire.REPLIES, n)
        return replies

    def begin_epoch(self, epoch: int) -> bool:
        replies = self._ask("pull_snapshot", epoch)
        if replies is None:
            raise RuntimeError(f"worker {self.id}: shards are not in epoch {epoch}")
        self.snapshot = np.concatenate([wire.decode(r) for r in replies]).astype(np.float64)
        self.full_grad = None
        return True

    def full_grad_chunk(self, epoch: int, chunk: int, n_chunks: int) -> int:
        rows = np.array_split(np.arange(self.problem.n_samples), n_chunks)[chunk]
        part = self.problem.grad(self.snapshot, rows) * (len(rows) / self.problem.n_samples)
        self._push("partial", epoch, part, wire.fp32, chunk=chunk)
        return int(chunk)

    def run_epoch(self, epoch: int) -> Dict[str, int]:
        replies = self._ask("pull_full_grad", epoch)
        if replies is None:
            return {"worker": self.id, "updates": 0}
        self.full_grad = np.concatenate([wire.decode(r) for r in replies]).astype(np.float64)
        n_samples, done = self.problem.n_samples, 0
        replies = self._ask("pull_model", epoch)
        encode = lambda v: self.alg.encode_gradient(v.astype(np.float32), self.rng)  # noqa: E731
        while replies is not None:
            parts = []
            for r, (lo, hi) in zip(replies, self.bounds):
                v = wire.decode(r)
                parts.append(self.snapshot[lo:hi] if v is None else v.astype(np.float64))
            x_hat = np.concatenate(parts)
            idx = self.rng.integers(0, n_samples, self.batch_size)
            alpha = self.problem.grad(x_hat, idx) - self.problem.grad(self.snapshot, idx) + self.full_grad
            versions = [r.version for r in replies]
            if self.fault is not None and self.updates >= int(self.fault.get("after", 0)):
                if self.fault.get("where") == "hang":
                    time.sleep(1e6)  # alive but silent: the driver kills it after epoch_timeout_s
                if self.fault.get("where") == "mid_push":
                    self._push("gradient", epoch, alpha, encode, versions, only={0})
                os._exit(1)  # a real crash: the actor's process is gone
            # push the gradient; each shard answers with its next model (or "closed")
            replies = self._push("gradient", epoch, alpha, encode, versions)
            self.updates += 1
            done += 1
            if any(r.kind == "closed" for r in replies):
                break
        return {"worker": self.id, "updates": done}


# ==================================================================================== actors
class Host:
    """A Ray actor process that becomes a :class:`ServerShard` or a :class:`Worker` for one run.

    Starting a Python process per actor costs seconds on a small machine, so :func:`run` keeps
    idle hosts in a pool and reuses them across runs (a host whose process died is never reused).
    ``handle`` is forwarded directly (the hot path); everything else goes through ``call``.
    """

    def __init__(self):
        self.obj = None

    def become(self, cls, *args) -> bool:
        self.obj = cls(*args)
        return True

    def release(self) -> bool:
        self.obj = None
        return True

    def handle(self, msg):
        return self.obj.handle(msg)

    def call(self, method: str, *args):
        return getattr(self.obj, method)(*args)


_POOL: Dict[str, Any] = {"job": None, "idle": []}


def _acquire(ray, k: int) -> List[Any]:
    ctx = ray.get_runtime_context()
    session = f"{ctx.get_job_id()}:{ctx.get_node_id()}"
    if _POOL["job"] != session:  # a new Ray session: the old handles are gone
        _POOL["job"], _POOL["idle"] = session, []
    candidates = [_POOL["idle"].pop() for _ in range(min(k, len(_POOL["idle"])))]
    hosts = []
    if candidates:  # keep only the pooled hosts that still answer
        pings = {h.release.remote(): h for h in candidates}
        ready, pending = ray.wait(list(pings), num_returns=len(pings), timeout=30)
        for f in ready:
            try:
                ray.get(f)
                hosts.append(pings[f])
            except Exception:  # died while idle
                pass
        for f in pending:
            try:
                ray.kill(pings[f])
            except Exception:
                pass
    cls = ray.remote(num_cpus=0, max_restarts=0)(Host)
    hosts += [cls.remote() for _ in range(k - len(hosts))]
    return hosts


def _release(ray, hosts: List[Any]) -> None:
    futures = {h.release.remote(): h for h in hosts}
    ready, pending = ray.wait(list(futures), num_returns=len(futures), timeout=30)
    for f in ready:
        try:
            ray.get(f)
            _POOL["idle"].append(futures[f])
        except Exception:  # a dead host is simply not reused
            pass
    for f in pending:
        try:
            ray.kill(futures[f])
        except Exception:
            pass


# ==================================================================================== driver
@dataclass
class RunResult:
    """What :func:`run` measured. ``history`` rows: ``updates``, ``bits``, ``loss``, ``epoch``,
    ``kind`` ("checkpoint" inside an epoch, "epoch" at an epoch end), sorted by bits."""

    algorithm: str
    settings: Dict[str, Any]
    problem: str
    dim: int
    num_workers: int
    num_shards: int
    target_loss: Optional[float]
    history: List[Dict[str, Any]] = field(default_factory=list)
    bits_to_target: Optional[int] = None
    updates_to_target: Optional[int] = None
    final_loss: float = float("nan")
    total_bits: int = 0
    bits_by_kind: Dict[str, int] = field(default_factory=dict)
    messages_by_kind: Dict[str, int] = field(default_factory=dict)
    shards: List[Dict[str, Any]] = field(default_factory=list)
    updates: int = 0
    epochs: int = 0
    staleness: Dict[str, float] = field(default_factory=dict)
    model_bits: Dict[int, int] = field(default_factory=dict)
    dead_workers: List[int] = field(default_factory=list)
    dropped: int = 0
    rejected: int = 0
    wall_s: float = 0.0

    @property
    def bits_per_update(self) -> float:
        return self.total_bits / max(self.updates, 1)

    @property
    def model_bits_mean(self) -> float:
        """Mean width (bits per value) of the model pulls that carried values (fp32 counts 32;
        "same" replies, which carry none, are left out)."""
        carried = {int(b): c for b, c in self.model_bits.items() if int(b) > 0}
        return sum(b * c for b, c in carried.items()) / max(sum(carried.values()), 1)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["model_bits"] = {str(k): v for k, v in self.model_bits.items()}
        d["bits_per_update"] = self.bits_per_update
        d["model_bits_mean"] = self.model_bits_mean
        return d


def ensure_ray(address: Optional[str] = None, **init_kwargs):
    """Connect to Ray: an existing cluster given ``address`` (``"auto"``, ``"ray://host:10001"``),
    otherwise a local instance with :data:`DEFAULT_RAY_INIT` (2 CPUs, 200 MiB object store,
    no dashboard). Reuses a connection that already exists."""
    import ray

    if ray.is_initialized():
        return ray
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
    kwargs = dict(init_kwargs)
    kwargs.setdefault("runtime_env", env)
    kwargs.setdefault("logging_level", "ERROR")
    if address is None:
        for k, v in DEFAULT_RAY_INIT.items():
            kwargs.setdefault(k, v)
        ray.init(**kwargs)
    else:
        ray.init(address=address, **kwargs)
    return ray


def shard_bounds(dim: int, num_shards: int) -> List[Tuple[int, int]]:
    if not 1 <= num_shards <= dim:
        raise ValueError(f"num_shards must be in [1, {dim}], got {num_shards}")
    edges = np.linspace(0, dim, num_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _is_dead(exc: BaseException) -> bool:
    import ray

    return isinstance(
        exc, (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError, ray.exceptions.WorkerCrashedError)
    )


def run(
    problem,
    algorithm,
    *,
    num_workers: int = 4,
    num_shards: int = 2,
    epochs: int = 20,
    inner_steps: Optional[int] = None,
    batch_size: int = 16,
    target_loss: Optional[float] = None,
    checkpoints_per_epoch: int = 8,
    seed: int = 0,
    address: Optional[str] = None,
    faults: Optional[Dict[int, Dict[str, Any]]] = None,
    epoch_timeout_s: float = 600.0,
    progress=None,
) -> RunResult:
    """Train ``problem`` with ``algorithm`` on ``num_shards`` server actors and ``num_workers``
    worker actors; returns a :class:`RunResult` with every message's bits counted.

    Args:
      inner_steps: updates per shard per epoch (default ``n_samples // batch_size``, one pass).
      target_loss: stop at the first epoch end whose training loss is at or below it;
        ``bits_to_target`` is the bit count at the first checkpoint at or below it.
      checkpoints_per_epoch: how often shards record their model for the loss-vs-bits curve.
      address: an existing Ray cluster (``"auto"``, ``"ray://head:10001"``); local Ray by default.
      faults: ``{worker_id: {"after": k, "where": "before_push"|"mid_push"|"hang"}}`` crash
        injection (see :class:`Worker`).
      epoch_timeout_s: a worker whose call has not returned after this long is killed and
        treated as dead.
      progress: optional callable ``progress(epoch, loss, bits)`` after every epoch.
    """
    ray = ensure_ray(address)
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    n, dim = problem.n_samples, problem.dim
    inner_steps = int(inner_steps or max(1, n // batch_size))
    bounds = shard_bounds(dim, num_shards)
    x0 = np.asarray(problem.init(seed), np.float64)
    every = max(1, inner_steps // max(1, checkpoints_per_epoch))
    t0 = time.time()

    problem_ref = ray.put(problem)
    hosts = _acquire(ray, num_shards + num_workers)
    shards, worker_hosts = hosts[:num_shards], hosts[num_shards:]
    faults = faults or {}
    setup = [
        h.become.remote(ServerShard, i, x0[lo:hi], algorithm, inner_steps, every, seed)
        for i, (h, (lo, hi)) in enumerate(zip(shards, bounds))
    ]
    setup += [
        h.become.remote(Worker, w, problem_ref, shards, bounds, algorithm, batch_size, seed, faults.get(w))
        for w, h in enumerate(worker_hosts)
    ]
    ray.get(setup)
    workers = dict(enumerate(worker_hosts))
    try:
        dead: List[int] = []

        def drop(wid):
            if wid in workers:
                try:
                    ray.kill(workers[wid])
                except Exception:
                    pass
                workers.pop(wid)
                dead.append(wid)

        def call_all(method, *args):
            futures = {h.call.remote(method, *args): w for w, h in workers.items()}
            ready, pending = ray.wait(list(futures), num_returns=len(futures), timeout=epoch_timeout_s)
            for f in pending:  # hung: treat as dead
                drop(futures[f])
            for f in ready:
                try:
                    ray.get(f)
                except Exception as exc:
                    if not _is_dead(exc):
                        raise
                    drop(futures[f])
            if not workers:
                raise RuntimeError(f"hvd_compress.ps: all {num_workers} workers died (during {method})")

        def full_gradient(epoch, n_chunks):
            queue, busy = list(range(n_chunks)), {}
            while queue or busy:
                for w in [w for w in workers if w not in busy.values()]:
                    if not queue:
                        break
                    c = queue.pop(0)
                    busy[workers[w].call.remote("full_grad_chunk", epoch, c, n_chunks)] = w
                    busy_chunk[w] = c
                ready, _ = ray.wait(list(busy), num_returns=1, timeout=epoch_timeout_s)
                if not ready:
                    for f, w in list(busy.items()):
                        queue.append(busy_chunk[w])
                        drop(w)
                    busy.clear()
                for f in ready:
                    w = busy.pop(f)
                    try:
                        ray.get(f)
                    except Exception as exc:
                        if not _is_dead(exc):
                            raise
                        queue.append(busy_chunk[w])
                        drop(w)
                if not workers:
                    raise RuntimeError(f"hvd_compress.ps: all {num_workers} workers died (full gradient)")

        busy_chunk: Dict[int, int] = {}
        history: List[Dict[str, Any]] = []
        epoch_points = []
        epoch = -1
        for epoch in range(epochs):
            ray.get([s.call.remote("begin_epoch", epoch) for s in shards])
            call_all("begin_epoch", epoch)
            full_gradient(epoch, num_workers)
            ray.get([s.call.remote("finish_full_grad", epoch, num_workers) for s in shards])
            call_all("run_epoch", epoch)
            reports = ray.get([s.call.remote("report") for s in shards])
            w = np.concatenate([r["output"] for r in reports])
            loss = float(problem.loss(w))
            bits = int(sum(r["total_bits"] for r in reports))
            updates = int(sum(r["version"] for r in reports) / len(reports))
            epoch_points.append({"updates": updates, "bits": bits, "loss": loss, "epoch": epoch, "kind": "epoch"})
            if progress is not None:
                progress(epoch, loss, bits)
            if not np.isfinite(loss):
                break
            if target_loss is not None and loss <= target_loss:
                break

        reports = ray.get([s.call.remote("report") for s in shards])
        cps = ray.get([s.call.remote("get_checkpoints") for s in shards])
        for k in range(min(len(c) for c in cps)):
            w = np.concatenate([c[k][3] for c in cps]).astype(np.float64)
            history.append(
                {
                    "updates": int(np.mean([c[k][0] for c in cps])),
                    "bits": int(sum(c[k][2] for c in cps)),
                    "loss": float(problem.loss(w)),
                    "epoch": int(cps[0][k][1]),
                    "kind": "checkpoint",
                }
            )
        start = {"updates": 0, "bits": 0, "loss": float(problem.loss(x0)), "epoch": -1, "kind": "start"}
        history = sorted([start] + history + epoch_points, key=lambda r: (r["bits"], r["updates"]))

        result = RunResult(
            algorithm=algorithm.name,
            settings=algorithm.settings(),
            problem=getattr(problem, "name", type(problem).__name__),
            dim=dim,
            num_workers=num_workers,
            num_shards=num_shards,
            target_loss=target_loss,
            history=history,
            epochs=epoch + 1,
        )
        if target_loss is not None:
            hit = next((r for r in history if r["loss"] <= target_loss), None)
            if hit is not None:
                result.bits_to_target, result.updates_to_target = hit["bits"], hit["updates"]
        result.final_loss = epoch_points[-1]["loss"] if epoch_points else start["loss"]
        by_kind: Dict[str, int] = defaultdict(int)
        for r in reports:
            for k, v in r["bits"].items():
                by_kind[k] += v
        result.bits_by_kind = dict(by_kind)
        msgs: Dict[str, int] = defaultdict(int)
        for r in reports:
            for k, v in r["messages"].items():
                msgs[k] += v
        result.messages_by_kind = dict(msgs)
        result.shards = [
            {
                "id": r["id"],
                "n": r["n"],
                "version": r["version"],
                "bits": r["bits"],
                "messages": r["messages"],
                "dropped": r["dropped"],
                "rejected": r["rejected"],
            }
            for r in reports
        ]
        result.total_bits = int(sum(by_kind.values()))
        result.updates = int(sum(r["version"] for r in reports) / len(reports))
        stal = np.concatenate([np.asarray(r["staleness"], np.int64) for r in reports]) if reports else np.zeros(0)
        if stal.size:
            result.staleness = {
                "mean": float(stal.mean()),
                "p50": float(np.percentile(stal, 50)),
                "p90": float(np.percentile(stal, 90)),
                "max": int(stal.max()),
                "count": int(stal.size),
            }
        mb: Counter = Counter()
        for r in reports:
            mb.update({int(k): v for k, v in r["model_bits"].items()})
        result.model_bits = dict(sorted(mb.items()))
        result.dead_workers = sorted(dead)
        result.dropped = int(sum(r["dropped"] for r in reports))
        result.rejected = int(sum(r["rejected"] for r in reports))
        result.wall_s = time.time() - t0
    finally:
        _release(ray, shards + list(workers.values()))
    return result
