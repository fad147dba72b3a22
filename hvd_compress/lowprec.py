"""Low-precision numpy primitives of the double-quantization paper (Yu, Wu, Huang, NeurIPS 2019).

Framework-free (numpy only) so that Ray actors, the TensorFlow broadcast and tests can use them
without importing torch. Three pieces:

* **The b-bit stochastic quantizer** ``Q(v, b)``: values land on the grid
  ``delta * {-s, ..., -1, 0, 1, ..., s}`` with ``s = 2**(b-1) - 1`` and
  ``delta = max|v| / s`` (per bucket), rounded stochastically to a neighbouring level, so
  ``E[Q(v)] = v``. This is the paper's grid ``{-2^(b-1) delta, ..., (2^(b-1)-1) delta}`` minus its
  lowest level, which ``delta = ||v||_inf / (2^(b-1)-1)`` never reaches; it is exactly
  :class:`hvd_compress.torch.QSGD` with ``norm="max"``, and for ``bits`` in {2, 4, 8}
  :func:`encode` produces **byte-identical payloads** to ``QSGD(bits, bucket_size).encode`` given
  the same uniform draws (``noise``). Here ``bits`` may be anything from 2 to 24.
* **Bit packing** of b-bit codes for any ``b`` in 1..32: one little-endian bit stream (the first
  code in the lowest bits of the first byte), ``ceil(n * b / 8)`` bytes. For b in {1, 2, 4, 8} it
  equals :func:`hvd_compress.torch.packing.pack_bits`.
* **Unbiased sparsification** with a budget (Wangni et al., 2018, the rule Sparse-AsyLPG uses):
  keep coordinate i with probability ``p_i = min(1, lam * |v_i|)``, ``sum(p) = budget``, and
  rescale kept values by ``1 / p_i``.

Wire format of :func:`encode` (``bucket_size=None`` means one bucket for the whole vector):
``packed_nbytes(n, bits)`` bytes of codes (code = level + s), then ``ceil(n / bucket_size)``
little-endian fp32 scales (the bucket's max-abs).

Example::

    import numpy as np
    from hvd_compress import lowprec
    v = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    payload = lowprec.encode(v, bits=8, rng=np.random.default_rng(1))   # 1004 bytes
    v_hat = lowprec.decode(payload, v.size, bits=8)
    assert np.all(np.abs(v_hat - v) <= np.abs(v).max() / 127 * (1 + 1e-6))
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

MIN_BITS, MAX_BITS = 2, 24


def levels(bits: int) -> int:
    """Levels on each side of zero for a ``bits``-bit code (the sign included): 2**(bits-1) - 1."""
    _check_bits(bits)
    return (1 << (bits - 1)) - 1


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")


# ---------------------------------------------------------------------------------------- packing
def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes used by ``numel`` codes of ``bits`` bits each, packed as one bit stream."""
    return -(-int(numel) * int(bits) // 8)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integer ``codes`` (each < 2**bits) into ``packed_nbytes`` uint8 bytes."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in [1, 32], got {bits}")
    codes = np.ascontiguousarray(codes).reshape(-1)
    n = codes.size
    if bits == 8:
        return codes.astype(np.uint8)
    if bits in (1, 2, 4):  # shift-and-or over the codes of one byte: no per-bit expansion
        per = 8 // bits
        pad = (-n) % per
        c = codes.astype(np.uint8)
        if pad:
            c = np.concatenate([c, np.zeros(pad, np.uint8)])
        lanes = c.reshape(-1, per)
        out = lanes[:, 0].copy()
        for lane in range(1, per):
            out |= lanes[:, lane] << np.uint8(bits * lane)
        return out
    shifts = np.arange(bits, dtype=np.uint64)
    bitmat = ((codes.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bitmat.reshape(-1), bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, numel: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: the first ``numel`` codes as uint32 (uint8 for bits <= 8)."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in [1, 32], got {bits}")
    packed = np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1)
    if packed.size < packed_nbytes(numel, bits):
        raise ValueError(
            f"{packed.size} bytes cannot hold {numel} codes of {bits} bits " f"({packed_nbytes(numel, bits)} needed)"
        )
    if bits == 8:
        return packed[:numel].copy()
    if bits in (1, 2, 4):
        shifts = np.arange(0, 8, bits, dtype=np.uint8)
        codes = (packed[:, None] >> shifts) & np.uint8((1 << bits) - 1)
        return codes.reshape(-1)[:numel]
    bitvec = np.unpackbits(packed, count=numel * bits, bitorder="little")
    weights = np.uint64(1) << np.arange(bits, dtype=np.uint64)
    return (bitvec.reshape(numel, bits).astype(np.uint64) @ weights).astype(np.uint32)


# ------------------------------------------------------------------------------------- quantizer
def payload_nbytes(numel: int, bits: int, bucket_size: Optional[int] = None) -> int:
    """Bytes of an :func:`encode` payload: packed codes plus one fp32 scale per bucket."""
    if numel == 0:
        return 0
    buckets = 1 if bucket_size is None else -(-numel // bucket_size)
    return packed_nbytes(numel, bits) + 4 * buckets


def _buckets(v: np.ndarray, bucket_size: Optional[int]) -> np.ndarray:
    n = v.size
    size = n if bucket_size is None else int(bucket_size)
    if size < 1:
        raise ValueError(f"bucket_size must be positive, got {bucket_size}")
    pad = (-n) % size
    if pad:
        v = np.concatenate([v, np.zeros(pad, v.dtype)])
    return v.reshape(-1, size)


def scales_of(v: np.ndarray, bucket_size: Optional[int] = None) -> np.ndarray:
    """The max-abs of every bucket (fp32); non-finite inputs give a NaN scale."""
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    if v.size == 0:
        return np.zeros(0, np.float32)
    with np.errstate(invalid="ignore"):
        s = np.abs(_buckets(v, bucket_size)).max(axis=1)
    return np.where(np.isfinite(s), s, np.float32(np.nan)).astype(np.float32)


def quantize(
    v: np.ndarray,
    bits: int,
    bucket_size: Optional[int] = None,
    rng: Optional[np.random.Generator] = None,
    noise: Optional[np.ndarray] = None,
    scales: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Stochastic rounding of ``v`` to the ``bits``-bit grid: ``(codes, scales)``.

    ``codes`` are ``level + s`` in ``[0, 2s]`` (uint32), ``scales`` the per-bucket max-abs (fp32),
    or the given ``scales`` (one fp32 per bucket: QSGD's L2 norms, see
    :class:`hvd_compress.codecs.QSGD`). ``noise`` (uniform [0, 1) fp32, one per value) replaces
    ``rng`` to reproduce given draws. The arithmetic mirrors :class:`hvd_compress.torch.QSGD`
    step by step in fp32, so both give the same codes for the same draws.
    """
    _check_bits(bits)
    s = levels(bits)
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = v.size
    scales = scales_of(v, bucket_size) if scales is None else np.asarray(scales, np.float32).reshape(-1)
    if n == 0:
        return np.zeros(0, np.uint32), scales
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # ``reciprocal(scale) * s``, not ``s / scale``: torch evaluates ``levels / scales`` so, and the
        # two differ in the last bit for about a quarter of the scales (which can flip a code).
        recip = (np.float32(1) / np.where(scales > 0, scales, np.float32(1))).astype(np.float32)
        inv = np.where(scales > 0, recip * np.float32(s), np.float32(0)).astype(np.float32)
        y = (np.abs(_buckets(v, bucket_size)) * inv[:, None]).reshape(-1)[:n]
    if noise is None:
        rng = rng if rng is not None else np.random.default_rng()
        noise = rng.random(n, dtype=np.float32)
    noise = np.asarray(noise, dtype=np.float32).reshape(-1)
    if noise.size != n:
        raise ValueError(f"noise has {noise.size} values for {n} inputs")
    low = np.floor(y)
    level = low + (noise < (y - low)).astype(np.float32)
    level = np.clip(np.nan_to_num(level, nan=0.0), 0, s)
    signed = np.where(v < 0, -level, level) + s
    return signed.astype(np.uint32), scales


def dequantize(codes: np.ndarray, scales: np.ndarray, bits: int, bucket_size: Optional[int] = None) -> np.ndarray:
    """Values of ``codes`` (fp32): ``(code - s) * scale / s``."""
    s = levels(bits)
    n = codes.size
    if n == 0:
        return np.zeros(0, np.float32)
    size = n if bucket_size is None else int(bucket_size)
    step = (np.asarray(scales, np.float32) / np.float32(s)).astype(np.float32)
    step = np.repeat(step, size)[:n]
    return ((codes.astype(np.float32) - np.float32(s)) * step).astype(np.float32)


def encode(
    v: np.ndarray,
    bits: int,
    bucket_size: Optional[int] = None,
    rng: Optional[np.random.Generator] = None,
    noise: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Quantize and pack ``v``: codes then fp32 scales, one uint8 array (see the module doc)."""
    codes, scales = quantize(v, bits, bucket_size, rng=rng, noise=noise)
    if codes.size == 0:
        return np.zeros(0, np.uint8)
    return np.concatenate([pack_codes(codes, bits), scales.astype("<f4").view(np.uint8)])


def decode(payload: np.ndarray, numel: int, bits: int, bucket_size: Optional[int] = None) -> np.ndarray:
    """Inverse of :func:`encode` (fp32). Raises ``ValueError`` if the length does not match."""
    payload = np.asarray(payload, dtype=np.uint8).reshape(-1)
    want = payload_nbytes(numel, bits, bucket_size)
    if payload.size != want:
        raise ValueError(
            f"a {bits}-bit payload of {numel} values (bucket_size={bucket_size}) has "
            f"{want} bytes, got {payload.size}"
        )
    if numel == 0:
        return np.zeros(0, np.float32)
    ncode = packed_nbytes(numel, bits)
    codes = unpack_codes(payload[:ncode], bits, numel)
    if codes.max(initial=0) > 2 * levels(bits):
        raise ValueError(f"code {int(codes.max())} is outside the {bits}-bit grid [0, {2 * levels(bits)}]")
    scales = payload[ncode:].copy().view("<f4").astype(np.float32)
    return dequantize(codes, scales, bits, bucket_size)


def expected_sq_error(v: np.ndarray, bits: int, bucket_size: Optional[int] = None) -> float:
    """Exact ``E||Q(v) - v||^2`` of the stochastic rounding: ``sum delta^2 f (1 - f)``, f the
    fractional position of each value between its two grid neighbours."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return 0.0
    s = levels(bits)
    b = _buckets(v, bucket_size)
    delta = np.abs(b).max(axis=1, keepdims=True) / s
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(delta > 0, np.abs(b) / delta, 0.0)
    f = y - np.floor(y)
    return float(np.sum(delta**2 * f * (1.0 - f)))


def fewest_bits(v: np.ndarray, budget: float, candidates=range(MIN_BITS, MAX_BITS + 1)) -> Optional[int]:
    """The fewest ``bits`` with ``expected_sq_error(v, bits) <= budget`` (one bucket: the whole
    vector); ``None`` if no candidate does.

    AsyLPG's model-precision rule calls this with ``budget = mu * ||x - x_snapshot||^2``. All
    candidates are evaluated in one vectorized pass (a bits x n matrix).
    """
    v = np.abs(np.asarray(v, dtype=np.float64).reshape(-1))
    cands = np.array(sorted(int(b) for b in candidates))
    if cands.size == 0:
        return None
    for b in cands:
        _check_bits(int(b))
    m = v.max(initial=0.0)
    if m == 0.0:
        return int(cands[0])
    if not np.isfinite(m):
        return None
    s = (2.0 ** (cands - 1) - 1.0)[:, None]
    delta = m / s
    y = v[None, :] * (s / m)
    f = y - np.floor(y)
    err = (delta[:, 0] ** 2) * np.sum(f * (1.0 - f), axis=1)
    ok = np.flatnonzero(err <= budget)
    return int(cands[ok[0]]) if ok.size else None


# --------------------------------------------------------------------------------- sparsification
def keep_probabilities(v: np.ndarray, budget: float) -> np.ndarray:
    """``p_i = min(1, lam |v_i|)`` with ``sum(p) = min(budget, nnz(v))`` (water-filling).

    The largest coordinates are kept surely (``p = 1``); the rest in proportion to their magnitude.
    Zero coordinates get ``p = 0`` (they are exact without being sent).
    """
    a = np.abs(np.asarray(v, dtype=np.float64).reshape(-1))
    n = a.size
    nnz = int(np.count_nonzero(a))
    if n == 0 or nnz == 0:
        return np.zeros(n)
    budget = float(budget)
    if not budget > 0:
        raise ValueError(f"sparsification budget must be positive, got {budget}")
    if budget >= nnz:
        return (a > 0).astype(np.float64)
    order = np.sort(a)[::-1]  # descending
    tail = np.cumsum(order[::-1])[::-1]  # tail[k] = sum of order[k:]
    # find the smallest k (entries kept surely) with (budget - k) * order[k] / tail[k] <= 1
    ks = np.arange(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (budget - ks > 0) & ((budget - ks) * order <= tail * (1 + 1e-12))
    k = int(np.argmax(ok)) if ok.any() else int(np.floor(budget))
    lam = (budget - k) / tail[k] if tail[k] > 0 else 0.0
    p = np.minimum(1.0, lam * a)
    if k > 0:
        p[a >= order[k - 1]] = 1.0
    return p


def sparsify(v: np.ndarray, budget: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Unbiased random sparsification: ``(indices, values)`` with ``E[scatter] = v``.

    Coordinate i survives with probability ``keep_probabilities(v, budget)[i]`` and is rescaled by
    ``1 / p_i``; the expected number of survivors is ``budget``.
    """
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    p = keep_probabilities(v, budget)
    keep = rng.random(v.size) < p
    idx = np.flatnonzero(keep)
    return idx.astype(np.int64), (v[idx] / p[idx]).astype(np.float32)
