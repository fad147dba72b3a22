"""Messages between parameter-server shards and workers: bit-packed payloads, counted bits, checks.

Every message is a :class:`Message`: a fixed header (:data:`HEADER_BITS`) and a uint8 payload.
Its cost, :meth:`Message.nbits`, is the header plus 8 bits per payload byte: the bits are those of
the real packed payload, not an estimate.

Payload encodings (``Message.encoding``):

* ``"none"``: no payload (requests, acknowledgements, "epoch closed").
* ``"same"``: "the model equals the snapshot you hold" (no payload; AsyLPG's first pull of an
  epoch, where the precision rule ``E||Q(x)-x||^2 <= mu ||x - x_snapshot||^2`` admits only x itself).
* ``"fp32"``: ``n`` little-endian fp32 values.
* ``"quant"``: ``bits``-bit codes of :func:`hvd_compress.lowprec.encode` (one bucket: one fp32
  scale ``max|v|``), ``ceil(n * bits / 8) + 4`` bytes.
* ``"sparse"``: unbiased sparsification then quantization: ``nnz`` (uint32), an index-format byte
  (0: a bitmap of ``n`` bits; 1: ``nnz`` indices of ``ceil(log2 n)`` bits each, whichever is
  smaller), the index section, ``nnz`` ``bits``-bit codes, one fp32 scale.

:func:`decode` checks every field against what the receiver expects and raises
:class:`MalformedMessage` (a ``ValueError``) with the reason; nothing is applied from a malformed
message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from hvd_compress import lowprec

# kind u8, encoding u8, bits u8, sender u16, chunk u16, epoch u32, version u32, n u32, + 1 pad byte
HEADER_BITS = 160

REQUESTS = ("pull_model", "pull_snapshot", "pull_full_grad")
PUSHES = ("gradient", "partial")
REPLIES = ("model", "snapshot", "full_grad", "ack", "closed")
KINDS = REQUESTS + PUSHES + REPLIES
ENCODINGS = ("none", "same", "fp32", "quant", "sparse")


class MalformedMessage(ValueError):
    """A message a shard or worker refuses: wrong type, kind, sizes, codes or non-finite values."""


@dataclass(frozen=True)
class Message:
    kind: str
    sender: int
    epoch: int
    version: int = 0
    encoding: str = "none"
    bits: int = 0
    n: int = 0
    payload: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    chunk: int = -1

    def nbits(self) -> int:
        """Bits this message costs on the wire: header plus packed payload."""
        return HEADER_BITS + 8 * int(np.asarray(self.payload).nbytes)


# ------------------------------------------------------------------------------------- encoders
def fp32(v: np.ndarray) -> Tuple[str, int, np.ndarray]:
    return "fp32", 32, np.ascontiguousarray(v, dtype="<f4").reshape(-1).view(np.uint8)


def quant(v: np.ndarray, bits: int, rng: np.random.Generator) -> Tuple[str, int, np.ndarray]:
    return "quant", int(bits), lowprec.encode(np.asarray(v, np.float32), bits, None, rng=rng)


def index_bits(n: int) -> int:
    return max(1, math.ceil(math.log2(max(n, 2))))


def sparse(v: np.ndarray, bits: int, budget: float, rng: np.random.Generator) -> Tuple[str, int, np.ndarray]:
    """Sparsify ``v`` (expected ``budget`` survivors, unbiased) and quantize the survivors."""
    v = np.asarray(v, np.float32).reshape(-1)
    n = v.size
    idx, vals = lowprec.sparsify(v, budget, rng)
    nnz = idx.size
    head = np.array([nnz], "<u4").view(np.uint8)
    if nnz == 0:
        return "sparse", int(bits), np.concatenate([head, np.array([0], np.uint8)])
    w = index_bits(n)
    if nnz * w < n:
        fmt, index = 1, lowprec.pack_codes(idx.astype(np.uint64), w)
    else:
        mask = np.zeros(n, np.uint8)
        mask[idx] = 1
        fmt, index = 0, np.packbits(mask, bitorder="little")
    body = lowprec.encode(vals, bits, None, rng=rng)
    return "sparse", int(bits), np.concatenate([head, np.array([fmt], np.uint8), index, body])


def encode(
    kind: str, sender: int, epoch: int, enc: Tuple[str, int, np.ndarray], n: int, version: int = 0, chunk: int = -1
) -> Message:
    encoding, bits, payload = enc
    return Message(
        kind=kind,
        sender=int(sender),
        epoch=int(epoch),
        version=int(version),
        encoding=encoding,
        bits=int(bits),
        n=int(n),
        payload=payload,
        chunk=int(chunk),
    )


# ------------------------------------------------------------------------------------- decoding
def _fail(msg: str, why: str):
    raise MalformedMessage(f"malformed message rejected: {why} ({msg})")


def _describe(m) -> str:
    if not isinstance(m, Message):
        return f"got a {type(m).__name__}"
    size = getattr(m.payload, "size", "?")
    return (
        f"kind={m.kind!r} from worker {m.sender!r}, epoch={m.epoch!r}, encoding={m.encoding!r}, "
        f"bits={m.bits!r}, n={m.n!r}, {size} payload bytes"
    )


def check_header(m, kinds, n: Optional[int] = None) -> None:
    """Structural checks shared by every receiver; raises :class:`MalformedMessage`."""
    if not isinstance(m, Message):
        _fail(_describe(m), "not an hvd_compress.ps.wire.Message")
    d = _describe(m)
    if m.kind not in kinds:
        _fail(d, f"kind must be one of {tuple(kinds)}")
    for name in ("sender", "epoch", "version", "bits", "n", "chunk"):
        value = getattr(m, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            _fail(d, f"{name} must be an integer, got {type(value).__name__}")
    if m.sender < 0 or m.epoch < 0 or m.version < 0 or m.n < 0:
        _fail(d, "sender, epoch, version and n must be non-negative")
    if m.encoding not in ENCODINGS:
        _fail(d, f"encoding must be one of {ENCODINGS}")
    if not isinstance(m.payload, np.ndarray) or m.payload.dtype != np.uint8 or m.payload.ndim != 1:
        _fail(d, "payload must be a 1-D uint8 numpy array")
    if n is not None and m.encoding not in ("none", "same") and m.n != n:
        _fail(d, f"this receiver holds {n} values, the message carries n={m.n}")


def decode(m: Message) -> Optional[np.ndarray]:
    """The fp32 values a checked message carries (``None`` for ``none`` / ``same``)."""
    d = _describe(m)
    n, p = m.n, m.payload
    if m.encoding in ("none", "same"):
        if p.size:
            _fail(d, f"encoding {m.encoding!r} carries no payload")
        return None
    if m.encoding == "fp32":
        if p.size != 4 * n:
            _fail(d, f"fp32 payload of {n} values must have {4 * n} bytes")
        out = p.view("<f4").astype(np.float32)
    elif m.encoding == "quant":
        if not lowprec.MIN_BITS <= m.bits <= lowprec.MAX_BITS:
            _fail(d, f"bits must be in [{lowprec.MIN_BITS}, {lowprec.MAX_BITS}]")
        try:
            out = lowprec.decode(p, n, m.bits, None)
        except ValueError as exc:
            _fail(d, str(exc))
    else:  # sparse
        if not lowprec.MIN_BITS <= m.bits <= lowprec.MAX_BITS:
            _fail(d, f"bits must be in [{lowprec.MIN_BITS}, {lowprec.MAX_BITS}]")
        if p.size < 5:
            _fail(d, "sparse payload shorter than its 5-byte head")
        nnz = int(p[:4].copy().view("<u4")[0])
        fmt = int(p[4])
        if nnz > n:
            _fail(d, f"sparse payload claims {nnz} survivors out of {n} values")
        out = np.zeros(n, np.float32)
        if nnz == 0:
            if p.size != 5:
                _fail(d, "an empty sparse payload has exactly 5 bytes")
            return out
        if fmt == 0:
            nidx = -(-n // 8)
            idx = np.flatnonzero(np.unpackbits(p[5 : 5 + nidx], count=n, bitorder="little"))
            if idx.size != nnz:
                _fail(d, f"bitmap marks {idx.size} values, head says {nnz}")
        elif fmt == 1:
            w = index_bits(n)
            nidx = lowprec.packed_nbytes(nnz, w)
            if p.size < 5 + nidx:
                _fail(d, "sparse payload shorter than its index section")
            idx = lowprec.unpack_codes(p[5 : 5 + nidx], w, nnz).astype(np.int64)
            if np.any(idx >= n) or np.any(np.diff(idx) <= 0):
                _fail(d, "sparse indices must be strictly increasing and below n")
        else:
            _fail(d, f"unknown sparse index format {fmt}")
        body = p[5 + nidx :]
        try:
            out[idx] = lowprec.decode(body, nnz, m.bits, None)
        except ValueError as exc:
            _fail(d, str(exc))
    if not np.isfinite(out).all():
        _fail(d, "values are NaN or Inf")
    return out
