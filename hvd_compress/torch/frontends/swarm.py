"""SwarmSGD (Nadiradze et al., "Asynchronous Decentralized SGD with Quantized and Local Updates").

No global averaging: every worker takes ``local_steps`` (H) SGD steps on its own data, then
averages its model with ONE random partner, exchanging a quantized model. Over Horovod, which has
no point-to-point messages, a gossip round is a random perfect matching of the workers (drawn
from a seed every rank shares; one worker idles when N is odd) and one ``alltoall`` in which each
worker's only non-empty split goes to its partner.

Example (runnable under ``horovodrun -np 4 --gloo python train.py``)::

    import torch, horovod.torch as hvd
    import hvd_compress.torch as hc

    hvd.init()
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = hc.SwarmSGD(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), model,
                      local_steps=2, codec="lattice:bits=8")      # broadcasts rank 0's weights
    for x, y in my_shard_of_the_data:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()                 # local step; every 2nd call also a gossip round
    opt.average_models()           # exact allreduce average: every replica holds the same model
    print(opt.bytes_per_step())    # bytes this worker sent per step

What a gossip round does, per tensor (``x`` own model, ``y`` the partner's):

* ``codec="lattice:bits=8"`` (the default; :class:`hvd_compress.torch.codecs.lattice.Lattice`):
  ``x`` is rounded onto a random lattice and sent as residues mod 256; the partner decodes to the
  lattice point nearest ITS OWN model. The error scales with ``||x - y||``, so it shrinks as the
  swarm agrees. ``eps`` per tensor = ``safety * D / 127`` with the distance estimate
  ``D = (distance to last round's partner, as observed) + 2 * (own drift since the last
  averaging)``. A payload that does not decode (checksum mismatch: the models were further apart
  than ``127 eps``) triggers a full-precision exchange of that tensor, for that pair, that round:
  counted in ``stats["fallback_tensors"]``, never a silently wrong value.
* any other hvd_compress codec (``"qsgd:bits=8"``, ``"fp16"``, ``"topk:ratio=0.1"``, ...):
  encodes the model's difference from an *anchor* every rank holds identically (the broadcast
  initial model, refreshed by each :meth:`SwarmSGD.average_models`), and decodes by adding the
  anchor back. Why the difference: codecs whose error scales with the input's norm (QSGD, TernGrad,
  casts) then pay for how far training has moved, not for the weights' full size, and sparsifiers
  (TopK) send the coordinates that changed instead of zeroing most weights. The raw model would be
  wrong for sparsifiers and noisier for everything else; the difference to the *partner's* model
  (the ideal) is unknown to the sender, which is exactly what the lattice code solves.
* tensors the codec does not compress (``min_numel``, 1-D unless ``compress_1d``) travel in their
  own dtype, exactly.

Both partners then set their model to the pair's average: ``x <- (x + y_hat) / 2``. Each keeps its
own model exactly and uses the partner's decoded one, so partners end within the quantization
error of each other (identical for exact tensors); :meth:`average_models` removes the residue.

Non-blocking mode (``nonblocking=True``): a gossip round starts the exchange of a snapshot ``s``
of the model and returns at once; the next ``H`` local steps run while it is in flight. At the next
round the worker applies ``x <- x + (y_hat(s_partner) - s) / 2``: the pair's average of the
snapshots plus its own progress since, i.e. averaging with a one-round-stale copy. The lattice
decodes relative to the snapshot ``s``.

Buffers (BatchNorm running statistics): ``buffers="average"`` (default) exchanges floating
buffers exactly (their own dtype, uncompressed: they are small) and averages them in the pair,
like parameters; ``buffers="local"`` leaves them to each worker during training. Either way
:meth:`average_models` averages floating buffers over all workers (``buffers=False`` to skip).
Integer buffers (``num_batches_tracked``) are never averaged: they count steps, which every worker
takes equally. Optimizer state (momentum) stays local, as in the paper.

How to tune: ``local_steps`` 1 to 4 keeps the models close (the lattice's error and fallback rate
grow with the distance); larger H saves bytes but drifts. ``lattice:bits=8`` is robust;
``lattice:bits=4,safety=3`` halves the bytes again. Watch ``stats["fallback_tensors"]``: a few
per hundred rounds is normal; many means raise ``safety`` or lower H.
"""

from __future__ import annotations

import zlib
from typing import Dict, List, Optional, Tuple

import torch

from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.codecs.lattice import Lattice
from hvd_compress.torch.exchange import UNCOMPRESSED, WIRE_STATS, Driver, _mix, _ring_allreduce_bytes, agree, drive
from hvd_compress.torch.spec import from_spec
from hvd_compress.torch.frontends.wrapped import WrappedOptimizer

STATE_KEY = "hvd_compress.swarm"
BUFFER_MODES = ("average", "local")
_FAILED, _NONFINITE = 1, 2


def random_matching(size: int, round_index: int, seed: int = 0) -> List[Optional[int]]:
    """The gossip pairs of one round: ``partner[r]`` for every rank ``r`` (``None``: idle, only
    when ``size`` is odd). A uniformly random perfect matching, the same on every rank for the
    same ``(size, round_index, seed)``."""
    g = torch.Generator().manual_seed(_mix(int(seed), int(round_index), 0x5A4E))
    perm = torch.randperm(size, generator=g).tolist()
    partner: List[Optional[int]] = [None] * size
    for i in range(0, size - 1, 2):
        a, b = perm[i], perm[i + 1]
        partner[a], partner[b] = b, a
    return partner


def _raw_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _from_raw(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return b.clone().view(dtype)


class SwarmSGD(WrappedOptimizer):
    """Decentralized SGD: local steps plus quantized pairwise gossip over Horovod (see the module
    docstring for the algorithm, the codecs and the buffer policy).

    Args:
        optimizer: the local optimizer (any torch optimizer over ``model``'s parameters).
        model: the module whose parameters (and buffers) are gossiped.
        local_steps: H, local steps between gossip rounds (``step()`` calls).
        codec: ``"lattice:bits=8"`` (default) or any hvd_compress spec string / codec object.
        seed: seed of the random matchings (must agree on every rank; checked).
        nonblocking: overlap each round's exchange with the next H local steps.
        buffers: ``"average"`` or ``"local"`` for floating buffers (BatchNorm statistics).
        broadcast: broadcast rank 0's parameters and buffers at construction (exact), so every
            worker starts from the same model. Set False if you already did.
        process_set, comm: Horovod process set, or an explicit collectives backend.

    ``stats`` holds this worker's counters: ``steps``, ``rounds``, ``idle_rounds``,
    ``fallback_tensors``, ``fallback_rounds``, ``bytes_sent`` (gossip payloads to partners),
    ``control_bytes_sent`` (the per-round status allgather), ``fallback_bytes_sent``,
    ``average_bytes_sent`` (:meth:`average_models`), ``compressed_values`` and
    ``compressed_payload_bytes`` (the codec's part), ``mean_distance`` (mean observed inf-norm
    distance to the partner over lattice tensors and rounds). The same bytes also go to
    :func:`hvd_compress.torch.wire_stats`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: torch.nn.Module,
        local_steps: int = 1,
        codec: "Codec | str" = "lattice:bits=8",
        seed: int = 0,
        nonblocking: bool = False,
        buffers: str = "average",
        broadcast: bool = True,
        process_set=None,
        comm=None,
    ):
        if int(local_steps) < 1:
            raise ValueError(f"local_steps must be >= 1, got {local_steps}")
        if buffers not in BUFFER_MODES:
            raise ValueError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"SwarmSGD gossips a torch.nn.Module's parameters; got {type(model).__name__}")
        self.optimizer = optimizer
        self.model = model
        self.local_steps = int(local_steps)
        self.codec = from_spec(codec)
        self.seed = int(seed)
        self.nonblocking = bool(nonblocking)
        self.buffers = buffers
        if comm is None:
            from hvd_compress.torch.collectives import HorovodCollectives

            comm = HorovodCollectives(process_set)
        self.comm = comm
        self._lattice = isinstance(self.codec, Lattice)

        params = sorted(
            ((n, p) for n, p in model.named_parameters() if p.requires_grad and p.dtype.is_floating_point),
            key=lambda t: t[0],
        )
        bufs = sorted(((n, b) for n, b in model.named_buffers() if b.dtype.is_floating_point), key=lambda t: t[0])
        opt_ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
        stray = [n for n, p in params if id(p) not in opt_ids]
        if stray and len(stray) == len(params):
            raise ValueError(
                "the optimizer does not train any of the model's parameters; "
                "pass the model the optimizer was built for"
            )
        self._tensors: Dict[str, torch.Tensor] = {f"param.{n}": p for n, p in params}
        self._all_buffers: Dict[str, torch.Tensor] = {f"buffer.{n}": b for n, b in bufs}
        if buffers == "average":
            self._tensors.update(self._all_buffers)
        self._keys = list(self._tensors)
        if not self._keys:
            raise ValueError("SwarmSGD: the model has no trainable floating-point parameters to gossip")
        self._kind: Dict[str, str] = {}
        for key, t in self._tensors.items():
            if key.startswith("param.") and self.codec.should_compress(t):
                self._kind[key] = "lattice" if self._lattice else "codec"
            else:
                self._kind[key] = "plain"
        self._key_hash = {k: zlib.crc32(k.encode()) for k in self._keys}

        self._local = 0
        self._round = 0
        self._pending: Optional[Tuple[Driver, Dict[str, torch.Tensor]]] = None
        self._distance: Dict[str, float] = {k: 0.0 for k, kind in self._kind.items() if kind == "lattice"}
        self._synced: Dict[str, torch.Tensor] = {}
        self._anchor: Dict[str, torch.Tensor] = {}
        self.stats: Dict[str, float] = {
            "steps": 0,
            "rounds": 0,
            "idle_rounds": 0,
            "fallback_tensors": 0,
            "fallback_rounds": 0,
            "bytes_sent": 0,
            "control_bytes_sent": 0,
            "fallback_bytes_sent": 0,
            "average_bytes_sent": 0,
            "compressed_values": 0,
            "compressed_payload_bytes": 0,
            "distance_sum": 0.0,
            "distance_count": 0,
        }

        self._check_config()
        if broadcast:
            self._broadcast_initial()
        self._reset_references(anchor_from_average=not broadcast)

    def __repr__(self):
        return (
            f"hvd_compress.SwarmSGD({self.optimizer!r}, local_steps={self.local_steps}, "
            f"codec={self.codec}, nonblocking={self.nonblocking}, buffers={self.buffers!r})"
        )

    # ------------------------------------------------------------------ setup
    def fingerprint(self) -> str:
        """Everything that must agree across ranks for the rounds to match."""
        shapes = ";".join(
            f"{k}:{tuple(t.shape)}:{str(t.dtype).replace('torch.', '')}" for k, t in self._tensors.items()
        )
        return (
            f"SwarmSGD(local_steps={self.local_steps},seed={self.seed},nonblocking={self.nonblocking},"
            f"buffers={self.buffers},codec={self.codec.fingerprint()},tensors={shapes})"
        )

    def _check_config(self):
        drive(
            {
                "config": agree(
                    self.comm,
                    self.fingerprint(),
                    "hvdc.swarm.config",
                    "SwarmSGD settings or models differ across ranks",
                    "Build the same model and SwarmSGD(...) arguments on every rank.",
                )
            }
        )

    def _broadcast_initial(self):
        items = list(self._tensors.items()) + [(k, b) for k, b in self._all_buffers.items() if k not in self._tensors]
        driver = Driver()
        for key, t in items:
            driver.start(
                key, _single(self.comm.broadcast_async(t.detach().contiguous(), 0, name=f"hvdc.swarm.bcast.{key}"))
            )
        results = driver.finish()
        with torch.no_grad():
            for key, t in items:
                t.copy_(results[key].view_as(t))

    def _reset_references(self, anchor_from_average: bool = False):
        """After a synchronization every rank agrees: refresh the lattice's drift references and
        the generic codecs' anchor (identical on every rank)."""
        self._synced = {k: self._flat(k).clone() for k, kind in self._kind.items() if kind == "lattice"}
        coded = [k for k, kind in self._kind.items() if kind == "codec"]
        if not coded:
            return
        if anchor_from_average:  # models may differ: agree on their exact average as the anchor
            driver = Driver()
            for k in coded:
                driver.start(
                    k,
                    _single(
                        self.comm.allreduce_async(
                            self._flat(k).to(torch.float32).contiguous(), name=f"hvdc.swarm.anchor.{k}", op="average"
                        )
                    ),
                )
            res = driver.finish()
            self._anchor = {k: res[k].clone() for k in coded}
        else:
            self._anchor = {k: self._flat(k).to(torch.float32).clone() for k in coded}

    def _flat(self, key: str) -> torch.Tensor:
        return self._tensors[key].detach().reshape(-1)

    # ------------------------------------------------------------------ training
    def step(self, closure=None):
        """One local optimizer step; every ``local_steps``-th call also runs a gossip round."""
        loss = self.optimizer.step(closure)
        self._local += 1
        self.stats["steps"] += 1
        if self._local % self.local_steps == 0:
            self.gossip()
        return loss

    def gossip(self) -> None:
        """Run one gossip round now (``step()`` calls this every ``local_steps`` steps). Collective:
        every rank must call it the same number of times."""
        if self.nonblocking:
            self.flush()
            snapshot = {k: self._flat(k).clone() for k in self._keys}
            driver = Driver()
            driver.start("gossip", self._round_gen(self._round, snapshot))
            self._pending = (driver, snapshot)
        else:
            snapshot = {k: self._flat(k) for k in self._keys}  # views: nothing moves until applied
            partner, values = drive({"gossip": self._round_gen(self._round, snapshot)})["gossip"]
            self._apply(partner, values, snapshot)
        self._round += 1

    def flush(self) -> None:
        """Non-blocking mode: complete the exchange in flight (if any) and apply it. Collective."""
        if self._pending is None:
            return
        driver, snapshot = self._pending
        self._pending = None
        partner, values = driver.finish()["gossip"]
        self._apply(partner, values, snapshot)

    def _draw(self, key: str) -> Optional[torch.Generator]:
        if not self.codec.stochastic:
            return None
        g = torch.Generator()
        g.manual_seed(_mix(self.codec.seed, self.comm.rank, self._round, self._key_hash[key], 0x6055))
        return g

    def _estimate(self, key: str, flat: torch.Tensor) -> float:
        """Distance to the next partner, inf-norm: the distance observed last round plus twice this
        worker's drift since its reference point (blocking: the last pair average, where it and its
        partner agreed; non-blocking: the last snapshot it sent, which is what the partner's
        snapshot was compared with)."""
        drift = float((flat - self._synced[key]).abs().max()) if flat.numel() else 0.0
        return self._distance[key] + 2.0 * drift

    def _encode(self, key: str, flat: torch.Tensor) -> Tuple[torch.Tensor, bool]:
        """This worker's message for one tensor, and whether the tensor is finite."""
        kind = self._kind[key]
        if kind == "lattice":
            f32 = flat.to(torch.float32)
            eps = self.codec.choose_eps(self._estimate(key, f32), f32)
            payload = self.codec.encode(f32, self._draw(key), eps)
            if self.nonblocking:  # drift is measured from the last model sent (see _estimate)
                self._synced[key] = f32.clone()
            return payload, self.codec.is_finite_payload(payload, f32.numel())
        finite = bool(torch.isfinite(flat).all())
        if kind == "codec":
            v = flat.to(torch.float32) - self._anchor[key]
            gen = self._draw(key)
            payload = self.codec.worker_encode(v, key, [(0, v.numel())], lambda chunk, phase: gen)[0]
            return payload, finite
        return _raw_bytes(flat), finite

    def _round_gen(self, rnd: int, snapshot: Dict[str, torch.Tensor]):
        """Generator for one gossip round: yields Horovod collectives, returns (partner, values)."""
        comm, codec = self.comm, self.codec
        size, rank = comm.size, comm.rank
        partner = random_matching(size, rnd, self.seed)[rank]
        keys = self._keys
        flags = torch.zeros(len(keys), dtype=torch.uint8)
        layout, parts = [], []
        for i, key in enumerate(keys):
            if partner is not None:
                payload, finite = self._encode(key, snapshot[key])
                parts.append(payload)
                layout.append((key, payload.numel()))
            else:  # an idle worker sends nothing but still reports a broken model
                finite = bool(torch.isfinite(snapshot[key]).all())
            if not finite:
                flags[i] |= _NONFINITE
        send = torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8)
        splits = [0] * size
        if partner is not None:
            splits[partner] = send.numel()
        self.stats["rounds"] += 1
        self.stats["idle_rounds"] += partner is None
        self._count_payload(layout, send.numel())
        received = yield comm.alltoall_async(send, splits, name="hvdc.swarm.gossip")

        values: Dict[str, torch.Tensor] = {}
        if partner is not None:
            if received.numel() != send.numel():
                raise RuntimeError(
                    f"hvd_compress: SwarmSGD round {rnd}: partner {partner} sent "
                    f"{received.numel()} bytes, expected {send.numel()}"
                )
            pos = 0
            for i, (key, nbytes) in enumerate(layout):
                part = received[pos : pos + nbytes]
                pos += nbytes
                kind, ref = self._kind[key], snapshot[key]
                if kind == "lattice":
                    val, ok = codec.decode_relative(part, ref.to(torch.float32))
                    if not ok and codec.is_finite_payload(part, ref.numel()):
                        flags[i] |= _FAILED
                elif kind == "codec":
                    val = codec.decode(part, ref.numel()) + self._anchor[key]
                else:
                    val = _from_raw(part, ref.dtype)
                values[key] = val

        table = yield comm.allgather_async(flags, name="hvdc.swarm.status")
        table = table.view(size, len(keys))
        control = (size - 1) * len(keys)
        self.stats["control_bytes_sent"] += control
        WIRE_STATS.add("swarm.control", 0, len(keys), control, tensors=0)
        bad = (table & _NONFINITE).nonzero().tolist()
        if bad:
            listing = ", ".join(f"rank {r}: '{keys[i]}'" for r, i in bad[:8])
            raise FloatingPointError(
                f"hvd_compress: SwarmSGD round {rnd}: non-finite values in the model "
                f"({listing}). Lower the learning rate or fix the loss."
            )
        failed = (table & _FAILED) != 0
        if bool(failed.any()):  # full-precision exchange of the tensors a pair could not decode
            need: List[int] = []
            if partner is not None:
                need = (failed[rank] | failed[partner]).nonzero().flatten().tolist()
            exact_parts = [_raw_bytes(snapshot[keys[i]]) for i in need]
            send2 = torch.cat(exact_parts) if exact_parts else torch.empty(0, dtype=torch.uint8)
            splits2 = [0] * size
            if partner is not None:
                splits2[partner] = send2.numel()
            got = yield comm.alltoall_async(send2, splits2, name="hvdc.swarm.fallback")
            pos = 0
            for i in need:
                key = keys[i]
                nbytes = exact_parts.pop(0).numel()
                values[key] = _from_raw(got[pos : pos + nbytes], snapshot[key].dtype)
                pos += nbytes
            if need:
                self.stats["fallback_tensors"] += len(need)
                self.stats["fallback_rounds"] += 1
                self.stats["fallback_bytes_sent"] += send2.numel()
                WIRE_STATS.add(
                    "swarm.fallback",
                    sum(snapshot[keys[i]].numel() for i in need),
                    send2.numel(),
                    send2.numel(),
                    tensors=len(need),
                )
        return partner, values

    def _count_payload(self, layout, total: int) -> None:
        self.stats["bytes_sent"] += total
        for key, nbytes in layout:
            n = self._tensors[key].numel()
            if self._kind[key] == "plain":
                WIRE_STATS.add(UNCOMPRESSED, n, nbytes, nbytes)
            else:
                self.stats["compressed_values"] += n
                self.stats["compressed_payload_bytes"] += nbytes
                WIRE_STATS.add(self.codec.describe(), n, nbytes, nbytes)

    def _apply(
        self, partner: Optional[int], values: Dict[str, torch.Tensor], snapshot: Dict[str, torch.Tensor]
    ) -> None:
        if partner is None:
            return
        with torch.no_grad():
            for key, val in values.items():
                t = self._tensors[key]
                snap = snapshot[key]
                work = torch.promote_types(t.dtype, torch.float32)
                if self._kind[key] == "lattice":
                    d = float((val - snap.to(torch.float32)).abs().max()) if val.numel() else 0.0
                    self._distance[key] = d
                    self.stats["distance_sum"] += d
                    self.stats["distance_count"] += 1
                mine = t.detach().reshape(-1).to(work, copy=True)
                if self.nonblocking:  # own progress since the snapshot + the pair's average of snapshots
                    new = mine.add_((val.to(work) - snap.to(work)).mul_(0.5))
                else:  # (a + b) / 2: both partners compute the same value for exact tensors
                    new = mine.add_(val.to(work)).div_(2)
                t.copy_(new.view(t.shape))
                if key in self._synced and not self.nonblocking:
                    self._synced[key] = new.to(torch.float32).clone()

    # ------------------------------------------------------------------ global average
    def average_models(self, buffers: bool = True, inplace: bool = True) -> Dict[str, torch.Tensor]:
        """Exact (fp32 allreduce) average of every worker's parameters and, with ``buffers``, its
        floating buffers; completes a non-blocking exchange in flight first. With ``inplace``
        (default) every replica is set to the average (use it for evaluation and at the end of
        training); otherwise the models are untouched and the averages are only returned, keyed by
        ``model.named_parameters()`` / ``named_buffers()`` names. Collective."""
        self.flush()
        items = {k: t for k, t in self._tensors.items() if k.startswith("param.")}
        if buffers:
            items.update(self._all_buffers)
        driver = Driver()
        for key, t in items.items():
            send = t.detach().reshape(-1)
            if send.dtype not in (torch.float32, torch.float64, torch.float16):
                send = send.to(torch.float32)
            driver.start(
                key, _single(self.comm.allreduce_async(send.contiguous(), name=f"hvdc.swarm.avg.{key}", op="average"))
            )
            nbytes = send.numel() * send.element_size()
            sent = _ring_allreduce_bytes(nbytes, self.comm.size)
            self.stats["average_bytes_sent"] += sent
            WIRE_STATS.add("swarm.average", send.numel(), nbytes, sent)
        results = driver.finish()
        out = {}
        with torch.no_grad():
            for key, t in items.items():
                avg = results[key].view_as(t).to(t.dtype)
                out[key.split(".", 1)[1]] = avg
                if inplace:
                    t.copy_(avg)
        if inplace:  # every replica now holds the same parameters: distances are zero
            self._distance = {k: 0.0 for k in self._distance}
            self._reset_references()
        return out

    # ------------------------------------------------------------------ reporting
    def bytes_per_step(self, include_control: bool = True, include_average: bool = False) -> float:
        """Bytes this worker sent per local step: gossip payloads and fallbacks, plus the per-round
        status allgather (``include_control``) and :meth:`average_models` (``include_average``)."""
        total = self.stats["bytes_sent"] + self.stats["fallback_bytes_sent"]
        if include_control:
            total += self.stats["control_bytes_sent"]
        if include_average:
            total += self.stats["average_bytes_sent"]
        return total / max(self.stats["steps"], 1)

    def summary(self) -> Dict[str, float]:
        """``stats`` plus derived rates (bytes per step, fallback rate, mean distance)."""
        s = dict(self.stats)
        s["bytes_per_step"] = self.bytes_per_step()
        lattice_tensors = sum(1 for kind in self._kind.values() if kind == "lattice")
        active = s["rounds"] - s["idle_rounds"]
        s["fallback_rate"] = s["fallback_tensors"] / max(active * max(lattice_tensors, 1), 1)
        s["mean_distance"] = s["distance_sum"] / max(s["distance_count"], 1)
        s["compressed_bits_per_value"] = 8.0 * s["compressed_payload_bytes"] / max(s["compressed_values"], 1)
        return s

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self):
        if self._pending is not None:
            raise RuntimeError(
                "SwarmSGD: a non-blocking exchange is in flight; call flush() (collective) " "before state_dict()"
            )
        sd = self.optimizer.state_dict()
        sd[STATE_KEY] = {
            "fingerprint": self.fingerprint(),
            "local": self._local,
            "round": self._round,
            "distance": dict(self._distance),
            "synced": {k: v.clone() for k, v in self._synced.items()},
            "anchor": {k: v.clone() for k, v in self._anchor.items()},
            "stats": dict(self.stats),
            "codec": self.codec.state_dict(),
        }
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop(STATE_KEY, None)
        self.optimizer.load_state_dict(state_dict)
        if saved is None:
            return
        if saved["fingerprint"] != self.fingerprint():
            raise ValueError(
                f"SwarmSGD state was saved by {saved['fingerprint']}, cannot load it into " f"{self.fingerprint()}"
            )
        self._local, self._round = int(saved["local"]), int(saved["round"])
        self._distance = dict(saved["distance"])
        self._synced = {k: v.clone() for k, v in saved["synced"].items()}
        self._anchor = {k: v.clone() for k, v in saved["anchor"].items()}
        self.stats.update(saved["stats"])
        self.codec.load_state_dict(saved["codec"])


def _single(pending):
    """A generator that issues one collective and returns its result (for :class:`Driver`)."""
    result = yield pending
    return result
