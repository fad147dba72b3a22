"""Wire format of the lattice quantizer (Davies et al., ICLR 2021), SwarmSGD's gossip codec.

The algorithm, its numerics and the tuning advice are in ``hvd_compress/torch/codecs/lattice.py``
(the torch codec, which SwarmSGD runs; TensorFlow has none). This is the same format in numpy,
byte for byte: given the same shift seed and the same rounding uniforms, :meth:`Lattice.encode`
returns the torch codec's payload, and :meth:`Lattice.decode_relative` returns its values and its
``ok`` flag for any payload and reference vector (``tests/test_lattice.py``).

Wire format for ``n`` values (little-endian): ``ceil(n * bits / 8)`` bytes of residues
``k mod 2**bits`` (fixed-width packing, low bits first), then ``eps`` (fp32), the shift seed
(int32), the checksum of the lattice coordinates (int64). The coordinates are
``k = floor(x / eps - u + U)``, ``u_i = frac(i * phi) + s`` the lattice shift (``phi`` the golden
ratio - 1, ``s`` in [0, 1) from the seed), ``U`` uniform in [0, 1): float64 throughout, in this
order of operations. A non-finite ``x`` or ``eps`` sends ``eps = NaN``, zero residues and checksum 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from hvd_compress.codecs.packing import bytes_f32, f32_bytes, pack_bits, unpack_bits
from hvd_compress.common import packed_nbytes
from hvd_compress.core.registry import register_codec
from hvd_compress.core.spec import CodecSpec

CHECKSUM_PRIME = 2**31 - 1
SIDE_BYTES = 16  # eps fp32, shift seed int32, checksum int64
MIN_EPS = 1e-30
REL_EPS_FLOOR = 2.0**-40  # eps >= max|x| * this: lattice coordinates stay below 2^40
MAX_COORD = 2.0**50  # |lattice coordinate| bound: float64 holds every such integer exactly
SEED_HIGH = 2**31 - 1  # the shift seed is drawn uniformly from [0, SEED_HIGH)
PHI = 0.6180339887498949  # golden ratio - 1: the shift sequence's step
CHECK_BLOCK = 4096  # positions per checksum block


class LatticeDecodeError(ValueError):
    """A lattice payload that cannot be decoded without a reference vector, or is malformed."""


def _in_block_weights() -> np.ndarray:
    """(4096, 2) float64 odd 24-bit weights, a fixed hash of the position within a block."""
    i = np.arange(CHECK_BLOCK, dtype=np.int64)
    w1 = ((i * 0x9E3779B1) >> 8) & 0xFFFFFF | 1
    w2 = ((i * 0x85EBCA6B + 0x27D4EB2F) >> 8) & 0xFFFFFF | 1
    return np.stack([w1, w2], axis=1).astype(np.float64)


_WEIGHTS = _in_block_weights()


def checksum_of_high(high: np.ndarray) -> int:
    """The payload checksum over ``high = floor(k / q)`` (float64 integers): ``h = high mod 2^16``;
    per block of 4096 positions two weighted sums with the fixed odd 24-bit weights (exact: every
    term and partial sum is an integer below 2^52); the block sums combined mod ``2^31 - 1`` with
    per-block weights; the two results packed in one int64 (first sum in the high 32 bits)."""
    high = np.asarray(high, np.float64).reshape(-1)
    n = high.size
    if n == 0:
        return 0
    h = high - np.floor(high * (1.0 / 65536.0)) * 65536.0
    full = n // CHECK_BLOCK
    parts = []
    if full:
        parts.append(h[: full * CHECK_BLOCK].reshape(full, CHECK_BLOCK) @ _WEIGHTS)
    if n - full * CHECK_BLOCK:
        parts.append((h[full * CHECK_BLOCK :] @ _WEIGHTS[: n - full * CHECK_BLOCK]).reshape(1, 2))
    sums = np.concatenate(parts).astype(np.int64)
    p = CHECKSUM_PRIME
    b = np.arange(sums.shape[0], dtype=np.int64)
    bw = np.stack([(b * 0x2545F491 + 0x1B873593) % (p - 1) + 1, (b * 0x61C88647 + 0x5BD1E995) % (p - 1) + 1], axis=1)
    total = ((sums % p) * bw % p).sum(axis=0) % p
    return (int(total[0]) << 32) | int(total[1])


def shift_offset(seed: int) -> float:
    """``s`` in [0, 1) of a 32-bit shift seed (a multiplicative hash)."""
    return (int(seed) * 0x9E3779B97F4A7C15 % (1 << 64)) / float(1 << 64)


def shift_base(numel: int) -> np.ndarray:
    """``frac(i * phi)`` for ``i < numel`` (float64)."""
    base = np.arange(numel, dtype=np.float64) * PHI
    return base - np.floor(base)


def _finite_step(eps: float) -> bool:
    return eps == eps and 0 < eps < float("inf")


@register_codec("lattice", builtin=True)
@dataclass(frozen=True)
class Lattice(CodecSpec):
    """Randomized rounding onto a shifted cubic lattice, residues mod ``2**bits`` on the wire,
    decoded relative to the receiver's own nearby vector (:meth:`decode_relative`).

    Not a self-contained payload: :meth:`decode` raises. The step ``eps`` travels in each payload;
    :meth:`choose_eps` is the sender's rule for it. ``encode(x, rng, eps=..., seed=..., noise=...)``
    draws the shift seed and the rounding uniforms from ``rng`` unless given.

    Args:
        bits: bits per value on the wire, 2, 4 or 8 (``q = 2**bits`` residues).
        safety: how many times the estimated distance the code must decode (:meth:`choose_eps`).
        eps: a fixed lattice step instead of the adaptive one (``None``: adaptive).
    """

    bits: int = 8
    safety: float = 2.0
    eps: Optional[float] = None

    stochastic = True

    def __post_init__(self):
        if self.bits not in (2, 4, 8) or isinstance(self.bits, bool):
            raise ValueError(f"lattice bits must be 2, 4 or 8 (fixed-width packing; q = 2**bits), got {self.bits}")
        if not self.safety > 0:
            raise ValueError(f"lattice safety must be positive, got {self.safety}")
        if self.eps is not None and not (float(self.eps) > 0 and float(self.eps) < float("inf")):
            raise ValueError(f"lattice eps must be a positive finite number or None, got {self.eps}")
        # the knobs as the torch codec holds them, so both describe the format alike
        object.__setattr__(self, "safety", float(self.safety))
        object.__setattr__(self, "eps", None if self.eps is None else float(self.eps))

    @property
    def q(self) -> int:
        return 2**self.bits

    @property
    def radius(self) -> int:
        """Decodable distance ``||x - y||_inf``, in units of eps."""
        return self.q // 2 - 1

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, self.bits) + SIDE_BYTES

    def max_distance(self, eps: float) -> float:
        """Largest ``||x - y||_inf`` that a payload with step ``eps`` is guaranteed to decode at."""
        return eps * self.radius

    def choose_eps(self, distance: float, x: Optional[np.ndarray] = None) -> float:
        """``safety * distance / (q/2 - 1)`` (or the fixed ``eps``), floored at 1e-30 and at
        ``max|x| * 2^-40``, rounded to fp32; NaN for a non-finite estimate."""
        eps = self.eps if self.eps is not None else self.safety * float(distance) / self.radius
        floor = MIN_EPS
        if x is not None and np.size(x):
            floor = max(floor, float(np.max(np.abs(np.asarray(x, np.float32)))) * REL_EPS_FLOOR)
        if not eps == eps or eps == float("inf"):
            eps = float("nan")
        else:
            eps = max(eps, floor)
        with np.errstate(over="ignore"):
            return float(np.float32(eps))

    def checksum(self, k: np.ndarray) -> int:
        """64-bit check of integer lattice coordinates ``k``."""
        return checksum_of_high(np.floor(np.asarray(k, np.float64) / self.q))

    @staticmethod
    def draw_seed(rng: np.random.Generator) -> int:
        return int(rng.integers(0, SEED_HIGH))

    def encode(
        self,
        x: np.ndarray,
        rng: Optional[np.random.Generator] = None,
        *,
        noise: Optional[np.ndarray] = None,
        eps: Optional[float] = None,
        seed: Optional[int] = None,
    ) -> np.ndarray:
        """Payload of ``x`` on the lattice of step ``eps`` (default: the fixed ``eps`` knob).
        ``seed`` (the shift seed, in [0, 2^31 - 1)) and ``noise`` (one uniform in [0, 1) per
        value, used as float64) are drawn from ``rng`` when not given, the seed first."""
        x = np.asarray(x, np.float32).reshape(-1)
        n = x.size
        eps = eps if eps is not None else self.eps
        if eps is None:
            raise ValueError("Lattice.encode needs the lattice step: pass eps= (see choose_eps) or set the eps knob")
        with np.errstate(over="ignore"):
            eps = float(np.float32(eps))
        if seed is None:
            if rng is None:
                raise ValueError("Lattice.encode needs rng or seed= (the shift seed)")
            seed = self.draw_seed(rng)
        seed = int(seed)
        top = max(abs(float(x.min())), abs(float(x.max()))) if n else 0.0  # NaN propagates
        finite = _finite_step(eps) and top < float("inf")
        if finite and top / eps >= MAX_COORD:
            raise ValueError(
                f"lattice step eps={eps:g} is too small for values up to {top:g} "
                f"(coordinates must stay below 2^50); use choose_eps()"
            )
        k_sum = 0
        if not finite or n == 0:
            codes = np.zeros(n, np.uint8)
            if not finite:
                eps = float("nan")
        else:
            if noise is None:
                if rng is None:
                    raise ValueError("Lattice.encode needs rng or noise= (the rounding uniforms)")
                noise = rng.random(n)
            z = x.astype(np.float64) * (1.0 / eps) - shift_base(n) - shift_offset(seed)
            k = np.floor(z + np.asarray(noise, np.float64).reshape(-1))
            high = np.floor(k * (1.0 / self.q))
            codes = (k - high * self.q).astype(np.uint8)
            k_sum = checksum_of_high(high)
        side = np.concatenate(
            [f32_bytes([eps]), np.array([seed], "<i4").view(np.uint8), np.array([k_sum], "<i8").view(np.uint8)]
        )
        return np.concatenate([pack_bits(codes, self.bits), side])

    def side_channel(self, payload: np.ndarray, numel: int) -> Tuple[float, int, int]:
        """``(eps, shift seed, checksum)`` of a payload for ``numel`` values."""
        payload = np.asarray(payload, np.uint8).reshape(-1)
        nc = packed_nbytes(numel, self.bits)
        if payload.size != nc + SIDE_BYTES:
            raise LatticeDecodeError(
                f"lattice payload has {payload.size} bytes, expected "
                f"{nc + SIDE_BYTES} for {numel} values at {self.bits} bits"
            )
        side = payload[nc:].tobytes()
        eps = float(bytes_f32(payload[nc : nc + 4])[0])
        seed = int(np.frombuffer(side[4:8], "<i4")[0])
        k_sum = int(np.frombuffer(side[8:16], "<i8")[0])
        return eps, seed, k_sum

    def decode_relative(self, payload: np.ndarray, reference: np.ndarray) -> Tuple[np.ndarray, bool]:
        """Decode relative to the receiver's own ``reference`` (as many values as the sender's
        tensor): the lattice point with the payload's residues nearest ``reference``,
        ``k = c + q * round((y / eps - u - c) / q)`` (round half to even). ``ok`` is False when the
        checksum disagrees (the vectors were too far apart), when the reference puts coordinates
        beyond 2^50 or is non-finite, or when the sender's tensor was non-finite (``eps`` NaN);
        the values are then all NaN, except after a checksum mismatch (wrong values: never use
        them when ``ok`` is False)."""
        ref = np.asarray(reference, np.float32).reshape(-1)
        n = ref.size
        eps, seed, k_sum = self.side_channel(payload, n)
        if not _finite_step(eps):
            return np.full(n, np.nan, np.float32), False
        if n == 0:
            return np.zeros(0, np.float32), True
        c = unpack_bits(np.asarray(payload, np.uint8)[: packed_nbytes(n, self.bits)], self.bits, n).astype(np.float64)
        base, offset = shift_base(n), shift_offset(seed)
        with np.errstate(invalid="ignore", over="ignore"):
            high = np.round((ref.astype(np.float64) * (1.0 / eps) - base - offset - c) * (1.0 / self.q))
            if not max(-float(high.min()), float(high.max())) * self.q < MAX_COORD:  # also catches NaN
                return np.full(n, np.nan, np.float32), False
        out = ((high * self.q + c + base + offset) * eps).astype(np.float32)
        return out, checksum_of_high(high) == k_sum

    def is_finite_payload(self, payload: np.ndarray, numel: int) -> bool:
        return _finite_step(self.side_channel(payload, numel)[0])

    def decode(self, payload, numel):
        raise LatticeDecodeError(
            "a lattice payload holds coordinates modulo q: it decodes only relative to the "
            "receiver's own nearby vector. Use decode_relative(payload, reference)."
        )
