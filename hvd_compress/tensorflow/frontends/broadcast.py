"""Parameter-quantizing broadcast for TensorFlow / Keras: ``broadcast_variables`` at b bits.

The TensorFlow twin of :func:`hvd_compress.torch.broadcast_parameters`, with the same wire format
(per variable: packed QSGD codes then fp32 bucket scales; integer and boolean variables as raw
bytes; all in ONE uint8 ``hvd.broadcast``) and the same guarantees:

* the root quantizes its values with the unbiased b-bit max-norm quantizer of
  :mod:`hvd_compress.lowprec` (the AsyLPG grid), and every rank, **the root included**, assigns the
  decoded values, so all replicas end identical;
* integer and boolean variables (optimizer ``iterations``, counters, masks) are sent exactly;
* ``delta=True`` with a :class:`BroadcastState` sends the difference from the last synchronized
  copy (periodic re-synchronization);
* a tiny header broadcast and a tiny allreduce first check that all ranks passed the same
  variables (shapes, dtypes) and settings and that the root's values are finite; otherwise every
  rank raises the same clear error instead of hanging.

It runs eagerly (call it outside ``tf.function``, e.g. after building the model or from a Keras
callback's ``on_train_begin``), like Horovod's own eager ``broadcast_variables``.

Example::

    import horovod.tensorflow as hvd
    from hvd_compress.tensorflow.frontends.broadcast import broadcast_variables
    hvd.init()
    model = build_model(); model.build((None, 64))
    broadcast_variables(model.variables, root_rank=0, bits=8)

How to tune: as for the torch version, 8 bits for initial weights, 4 bits for ``delta``
re-synchronization; ``bucket_size=128`` for layers with a few large values.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from hvd_compress import lowprec

SUPPORTED_BITS = (2, 4, 8)


class BroadcastState:
    """Every rank's copy of the last synchronized values (numpy), for ``delta=True``.

    Keyed by the variable's position in the list passed (and checked against its shape/dtype).
    """

    def __init__(self):
        self.synced: Dict[int, np.ndarray] = {}
        self.calls = 0

    def state_dict(self) -> Dict[str, Any]:
        return {"calls": self.calls, "synced": {k: v.copy() for k, v in self.synced.items()}}

    def load_state_dict(self, sd: Dict[str, Any]) -> None:
        self.calls = int(sd["calls"])
        self.synced = {int(k): np.array(v) for k, v in sd["synced"].items()}


def _is_float(dtype) -> bool:
    import tensorflow as tf

    return tf.as_dtype(dtype).is_floating


def _var_name(v, i: int) -> str:
    return str(getattr(v, "path", None) or getattr(v, "name", None) or f"variable_{i}")


def broadcast_variables(
    variables: Sequence,
    root_rank: int = 0,
    bits: int = 8,
    delta: bool = False,
    state: Optional[BroadcastState] = None,
    bucket_size: int = 512,
    seed: int = 0,
    process_set=None,
    name: str = "hvdc.qbroadcast_tf",
) -> Dict[str, float]:
    """Broadcast ``variables`` (``tf.Variable`` or Keras variables) from ``root_rank`` at ``bits``
    bits per value; every rank assigns the decoded values. Returns the same wire statistics as
    :func:`hvd_compress.torch.broadcast_parameters` (``bytes``, ``fp32_bytes``, ...).

    Raises ``ValueError`` (different variables or settings across ranks, ``delta`` without
    ``state``) or ``FloatingPointError`` (NaN/Inf on the root) on every rank.
    """
    import horovod.tensorflow as hvd
    import tensorflow as tf

    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS} (fixed-width packing), got {bits}")
    if int(bucket_size) < 1:
        raise ValueError(f"bucket_size must be positive, got {bucket_size}")
    if delta and state is None:
        raise ValueError(
            "broadcast_variables(delta=True) needs state=BroadcastState(), kept across "
            "calls on every rank (it holds the last synchronized copy)"
        )
    variables = list(variables)
    kw = {} if process_set is None else {"process_set": process_set}
    rank = hvd.rank() if process_set is None else process_set.rank()
    size = hvd.size() if process_set is None else process_set.size()
    if not 0 <= int(root_rank) < size:
        raise ValueError(f"root_rank must be in [0, {size}), got {root_rank}")
    is_root = rank == root_rank

    plan: List[tuple] = []  # (index, var, value, mode, nbytes)
    lines = [
        f"bits={bits} bucket={bucket_size} delta={delta} root={root_rank} "
        f"calls={state.calls if state is not None else -1}"
    ]
    for i, v in enumerate(variables):
        if not hasattr(v, "assign"):
            raise ValueError(f"broadcast_variables: item {i} is a {type(v).__name__}, not a variable")
        value = np.asarray(v.numpy())
        if _is_float(v.dtype):
            mode = "d" if delta and i in state.synced else "q"
            if mode == "d" and state.synced[i].shape != value.shape:
                raise ValueError(
                    f"broadcast_variables: BroadcastState holds variable {i} "
                    f"({_var_name(v, i)}) with shape {state.synced[i].shape}, "
                    f"the variable has {value.shape}"
                )
            nbytes = lowprec.payload_nbytes(value.size, bits, bucket_size)
        else:
            mode, nbytes = "x", value.nbytes
        plan.append((i, v, value, mode, nbytes))
        lines.append(f"{i}:{value.shape}:{tf.as_dtype(v.dtype).name}:{mode}")
    fp = int.from_bytes(hashlib.blake2b("\n".join(lines).encode(), digest_size=8).digest(), "little", signed=True)
    total = int(sum(p[4] for p in plan))

    status = 0
    if is_root:
        for k, (i, v, value, mode, _) in enumerate(plan):
            if mode != "x" and value.size and not np.isfinite(value.astype(np.float64)).all():
                status = k + 1
                break
    header = hvd.broadcast(
        tf.constant([fp, status, total], dtype=tf.int64), root_rank, name=f"{name}.header", **kw
    ).numpy()
    bad = np.array([int(int(header[0]) != fp or int(header[2]) != total)], np.int32)
    bad = int(hvd.allreduce(tf.constant(bad), op=hvd.Sum, name=f"{name}.check", **kw).numpy()[0])
    if bad:
        raise ValueError(
            f"hvd_compress.broadcast_variables: {bad} rank(s) passed different variables (count, "
            f"shapes, dtypes), settings (bits, bucket_size, delta, root_rank) or delta state than "
            f"root rank {root_rank}; pass the same model and arguments on every rank. This rank "
            f"(rank {rank}) has: " + "; ".join(lines[:6]) + (" ..." if len(lines) > 6 else "")
        )
    if int(header[1]):
        i, v = plan[int(header[1]) - 1][:2]
        raise FloatingPointError(
            f"hvd_compress.broadcast_variables: variable {i} ({_var_name(v, i)}) "
            f"holds NaN or Inf on root rank {root_rank}; nothing was changed"
        )

    calls = state.calls if state is not None else 0
    if is_root:
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, calls])
        parts = []
        for i, v, value, mode, nbytes in plan:
            if mode == "x":
                parts.append(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
                continue
            x = value.astype(np.float32).reshape(-1)
            if mode == "d":
                x = x - state.synced[i].astype(np.float32).reshape(-1)
            parts.append(lowprec.encode(x, bits, bucket_size, rng=rng))
        buf = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
        assert buf.size == total, (buf.size, total)
    else:
        buf = np.zeros(total, np.uint8)
    if total:
        buf = hvd.broadcast(tf.constant(buf), root_rank, name=f"{name}.payload", **kw).numpy()

    pos, nq, nx, fp32_bytes, qbytes = 0, 0, 0, 0, 0
    for i, v, value, mode, nbytes in plan:
        chunk = buf[pos : pos + nbytes]
        pos += nbytes
        fp32_bytes += value.nbytes
        if mode == "x":
            nx += value.size
            new = chunk.copy().view(value.dtype).reshape(value.shape)
            v.assign(new)
        else:
            nq += value.size
            qbytes += nbytes
            x = lowprec.decode(chunk, value.size, bits, bucket_size)
            if mode == "d":
                x = state.synced[i].astype(np.float32).reshape(-1) + x
            v.assign(tf.cast(tf.constant(x.reshape(value.shape)), v.dtype))
        if state is not None:
            state.synced[i] = np.asarray(v.numpy()).copy()
    if state is not None:
        state.calls += 1
    from hvd_compress.tensorflow.stats import WIRE_STATS

    # as the torch twin: the root sends the buffer to every other rank (star count); others send none
    WIRE_STATS.add(
        f"broadcast(qsgd(bits={bits},bucket_size={bucket_size},norm=max))",
        nq + nx,
        total,
        total * (size - 1) if is_root else 0,
    )
    return {
        "bytes": float(total),
        "fp32_bytes": float(fp32_bytes),
        "quantized_values": float(nq),
        "exact_values": float(nx),
        "bits_per_value": 8.0 * qbytes / max(nq, 1),
    }
