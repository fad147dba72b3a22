"""Parameter-quantizing broadcast: Horovod's ``broadcast_parameters`` at b bits per value.

The server-to-worker half of double quantization (Yu, Wu, Huang, NeurIPS 2019) in synchronous
form: the root rank quantizes its parameters with an unbiased b-bit stochastic quantizer, sends
them bit-packed in ONE fused uint8 ``hvd.broadcast``, and every rank, **the root included**, decodes
and applies the same values, so all replicas end bit-identical (the root does not keep its
full-precision copy, or the replicas would drift apart from the first step).

* Quantizer: :class:`hvd_compress.torch.QSGD` with ``norm="max"`` per bucket of ``bucket_size``
  values (this is the AsyLPG grid ``delta * {-s..s}``, ``s = 2**(bits-1) - 1``,
  ``delta = max|v| / s``): unbiased, and every value moves by at most ``delta`` of its bucket.
  The wire costs ``bits + 32 / bucket_size`` bits per value (8 bits / 512: 8.06, i.e. 0.252 of
  Horovod's fp32 broadcast).
* Integer and boolean tensors (BatchNorm's ``num_batches_tracked``, step counters, masks) are sent
  exactly, as raw bytes in the same buffer.
* ``delta=True`` with a :class:`BroadcastState` sends ``x - x_last`` (``x_last`` = the copy every
  rank holds from the previous synchronization) for periodic re-synchronization: the error then
  scales with how far the root moved since the last sync, not with the size of the weights.
* Safety: one tiny header broadcast and one tiny allreduce before the payload check that every
  rank passed the same names, shapes, dtypes, settings and delta state, and that the root's values
  are finite; any mismatch raises the same clear error on every rank instead of hanging.

Example (like ``hvd.broadcast_parameters``)::

    import horovod.torch as hvd, hvd_compress.torch as hc
    hvd.init()
    model = make_model()
    hc.broadcast_parameters(model.state_dict(), root_rank=0, bits=8)

    # periodic re-synchronization, e.g. every 100 steps of local SGD:
    sync = hc.BroadcastState()
    hc.broadcast_parameters(model.state_dict(), bits=8, state=sync)          # full, remembered
    ...
    hc.broadcast_parameters(model.state_dict(), bits=4, delta=True, state=sync)  # difference only

How to tune: 8 bits is safe for initial weights (relative error ~ 1/127 of each bucket's
max-abs, zero-mean); lower ``bucket_size`` (128) protects layers with a few large values; 4 bits
is enough for ``delta`` re-synchronization, whose differences are small. Keep the
:class:`BroadcastState` with the model checkpoint (``state_dict()``) if you resume delta syncs.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch

from hvd_compress.torch.codecs.qsgd import QSGD
from hvd_compress.torch.exchange import WIRE_STATS

Params = Union[Dict[str, torch.Tensor], Iterable[Tuple[str, torch.Tensor]]]


class BroadcastState:
    """What ``delta=True`` needs: every rank's copy of the last synchronized values.

    Keep one per set of tensors you re-synchronize, on every rank; it is identical on all ranks
    after each call. ``state_dict()`` / ``load_state_dict()`` save it with a checkpoint.
    """

    def __init__(self):
        self.synced: Dict[str, torch.Tensor] = {}
        self.calls = 0

    def state_dict(self) -> Dict[str, Any]:
        return {"calls": self.calls, "synced": {k: v.detach().clone() for k, v in self.synced.items()}}

    def load_state_dict(self, sd: Dict[str, Any]) -> None:
        self.calls = int(sd["calls"])
        self.synced = {k: v.detach().clone() for k, v in sd["synced"].items()}


def _named(params: Params) -> List[Tuple[str, torch.Tensor]]:
    if isinstance(params, dict):
        items = sorted(params.items())
    elif isinstance(params, (list, tuple)) or hasattr(params, "__iter__"):
        items = list(params)
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise ValueError(
                    "broadcast_parameters takes a state_dict() or (name, tensor) pairs "
                    f"such as model.named_parameters(); got an item {type(item).__name__}"
                )
    else:
        raise ValueError(
            f"broadcast_parameters takes a state_dict() or (name, tensor) pairs, " f"got {type(params).__name__}"
        )
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"broadcast_parameters: duplicate tensor names {dup}")
    out = []
    for name, t in items:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"broadcast_parameters: '{name}' is a {type(t).__name__}, not a tensor")
        out.append((name, t.data if isinstance(t, torch.nn.Parameter) else t))
    return out


def _fingerprint(lines: List[str]) -> int:
    digest = hashlib.blake2b("\n".join(lines).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _exact_bytes(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().reshape(-1).contiguous().cpu()
    if flat.dtype == torch.bool:
        return flat.view(torch.uint8)
    return flat.view(torch.uint8) if flat.numel() else torch.zeros(0, dtype=torch.uint8)


def broadcast_parameters(
    params: Params,
    root_rank: int = 0,
    bits: int = 8,
    delta: bool = False,
    state: Optional[BroadcastState] = None,
    bucket_size: int = 512,
    seed: int = 0,
    process_set=None,
    name: str = "hvdc.qbroadcast",
) -> Dict[str, float]:
    """Broadcast ``params`` from ``root_rank`` at ``bits`` bits per value; all ranks apply the result.

    Args:
      params: a ``state_dict()`` or ``(name, tensor)`` pairs (``model.named_parameters()``),
        as for ``hvd.broadcast_parameters``. Updated in place on every rank.
      root_rank: the rank whose values everyone (itself included) ends with, quantized.
      bits: 2, 4 or 8 bits per floating-point value (sign included).
      delta: send the difference from ``state``'s last synchronized copy (needs ``state``;
        tensors without a copy yet are sent in full).
      state: a :class:`BroadcastState`, updated with the synchronized values.
      bucket_size: values sharing one fp32 scale.
      seed: base of the root's stochastic-rounding stream (mixed with ``state.calls``).
      process_set: a Horovod process set (default: all ranks).

    Returns: wire statistics of this call: ``bytes`` (the fused buffer), ``fp32_bytes`` (what
    Horovod's ``broadcast_parameters`` sends for the same tensors: each in its own dtype),
    ``quantized_values``, ``exact_values``, ``bits_per_value`` (of the quantized part).

    Raises ``ValueError`` on every rank when the ranks' tensors or settings differ, and
    ``FloatingPointError`` on every rank when the root holds NaN/Inf (naming the tensor).
    """
    import horovod.torch as hvd

    if delta and state is None:
        raise ValueError(
            "broadcast_parameters(delta=True) needs state=BroadcastState(), kept across "
            "calls on every rank (it holds the last synchronized copy)"
        )
    codec = QSGD(bits=bits, bucket_size=bucket_size, norm="max")
    named = _named(params)
    kw = {} if process_set is None else {"process_set": process_set}
    rank = hvd.rank() if process_set is None else process_set.rank()
    size = hvd.size() if process_set is None else process_set.size()
    if not 0 <= int(root_rank) < size:
        raise ValueError(f"root_rank must be in [0, {size}), got {root_rank}")
    is_root = rank == root_rank

    plan = []  # (name, tensor, mode, nbytes); mode: "q" (full), "d" (delta) or "x" (exact)
    lines = [
        f"bits={bits} bucket={bucket_size} delta={delta} root={root_rank} "
        f"calls={state.calls if state is not None else -1}"
    ]
    for pname, t in named:
        if t.dtype.is_floating_point:
            mode = "d" if delta and pname in state.synced else "q"
            if mode == "d" and (state.synced[pname].shape != t.shape or state.synced[pname].dtype != t.dtype):
                raise ValueError(
                    f"broadcast_parameters: BroadcastState holds '{pname}' as "
                    f"{tuple(state.synced[pname].shape)} {state.synced[pname].dtype}, "
                    f"the tensor is {tuple(t.shape)} {t.dtype}"
                )
            nbytes = codec.payload_nbytes(t.numel())
        elif t.is_complex():
            raise ValueError(f"broadcast_parameters: complex tensor '{pname}' is not supported")
        else:
            mode, nbytes = "x", t.numel() * t.element_size()
        plan.append((pname, t, mode, nbytes))
        lines.append(f"{pname}:{tuple(t.shape)}:{t.dtype}:{mode}")
    fp = _fingerprint(lines)
    total = sum(p[3] for p in plan)

    status = 0
    if is_root:
        for i, (pname, t, mode, _) in enumerate(plan):
            if mode != "x" and t.numel() and not torch.isfinite(t).all():
                status = i + 1
                break
    header = torch.tensor([fp, status, total], dtype=torch.int64)
    header = hvd.broadcast(header, root_rank, name=f"{name}.header", **kw)
    mismatch = torch.tensor([int(int(header[0]) != fp or int(header[2]) != total)], dtype=torch.int32)
    mismatch = hvd.allreduce(mismatch, op=hvd.Sum, name=f"{name}.check", **kw)
    if int(mismatch[0]):
        raise ValueError(
            f"hvd_compress.broadcast_parameters: {int(mismatch[0])} rank(s) passed different tensors "
            f"(names, shapes, dtypes), settings (bits, bucket_size, delta, root_rank) or delta state "
            f"than root rank {root_rank}; pass the same model and arguments on every rank. "
            f"This rank (rank {rank}) has: " + "; ".join(lines[:6]) + (" ..." if len(lines) > 6 else "")
        )
    root_status = int(header[1])
    if root_status:
        raise FloatingPointError(
            f"hvd_compress.broadcast_parameters: tensor '{plan[root_status - 1][0]}' "
            f"holds NaN or Inf on root rank {root_rank}; nothing was changed"
        )

    calls = state.calls if state is not None else 0
    if is_root:
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + calls) & 0x7FFFFFFFFFFFFFFF)
        parts = []
        for pname, t, mode, nbytes in plan:
            if mode == "x":
                parts.append(_exact_bytes(t))
                continue
            v = t.detach().reshape(-1).cpu().to(torch.float32)
            if mode == "d":
                v = v - state.synced[pname].reshape(-1).cpu().to(torch.float32)
            parts.append(codec.encode(v, gen))
        buf = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)
        assert buf.numel() == total, (buf.numel(), total)
    else:
        buf = torch.empty(total, dtype=torch.uint8)
    if total:
        buf = hvd.broadcast(buf, root_rank, name=f"{name}.payload", **kw)

    pos = 0
    nq = nx = fp32_bytes = 0
    with torch.no_grad():
        for pname, t, mode, nbytes in plan:
            chunk = buf[pos : pos + nbytes]
            pos += nbytes
            fp32_bytes += t.numel() * t.element_size()
            if mode == "x":
                nx += t.numel()
                if t.numel():
                    t.copy_(chunk.clone().view(t.dtype).view(t.shape).to(t.device))
            else:
                nq += t.numel()
                values = codec.decode(chunk, t.numel())
                if mode == "d":
                    values = state.synced[pname].reshape(-1).cpu().to(torch.float32) + values
                t.copy_(values.view(t.shape).to(device=t.device, dtype=t.dtype))
            if state is not None:
                state.synced[pname] = t.detach().clone()
    if state is not None:
        state.calls += 1
    qbytes = total - sum(p[3] for p in plan if p[2] == "x")
    label = f"broadcast({codec.describe()})"
    # sent_bytes: the root sends the buffer to every other rank (star count); the others send none
    WIRE_STATS.add(label, nq + nx, total, total * (size - 1) if is_root else 0)
    return {
        "bytes": float(total),
        "fp32_bytes": float(fp32_bytes),
        "quantized_values": float(nq),
        "exact_values": float(nx),
        "bits_per_value": 8.0 * qbytes / max(nq, 1),
    }
