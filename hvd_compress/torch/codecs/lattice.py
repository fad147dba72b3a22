"""Lattice quantizer (Davies, Gurunathan, Moshrefi, Ashkboos, Alistarh, ICLR 2021).

Quantize a vector ``x`` for a receiver that holds a *nearby* vector ``y`` (in gossip: its own
model). The error depends on the distance ``||x - y||``, not on the norm of ``x``, so it stays
small while gossip keeps the models close, however large the weights are.

The rule, per tensor:

1. The lattice is the shifted cubic lattice ``eps * (Z^d + u)``. The shift ``u_i = frac(s + i*phi)``
   (``phi`` the golden ratio, ``s`` uniform from a 32-bit seed that travels in the payload) puts
   each coordinate's lattice at a uniformly random offset, the same for sender and receiver, at
   the cost of a few vector ops instead of a random draw per value.
2. The sender rounds ``z = x / eps - u`` *randomly* to an integer neighbour ``k`` (``ceil`` with
   probability ``z - floor(z)``), so ``eps * (k + u)`` is an unbiased estimate of ``x``, with at
   most ``eps`` error per coordinate and variance at most ``eps^2 / 4``.
3. It sends ``k mod q`` (``q = 2**bits``, bit-packed: ``bits`` bits per value).
4. The receiver decodes to the lattice point nearest its own ``y`` that has those residues:
   ``k' = c + q * round((r - c) / q)`` with ``c = k mod q`` and ``r = y / eps - u``.

Decoding is exact (``k' == k``) whenever ``||x - y||_inf <= eps * (q/2 - 1)`` (the *radius*).
Beyond it some coordinates land ``q * eps`` (or a multiple) away from the truth: silently wrong
values. So the payload also carries a 64-bit checksum of the full lattice coordinates ``k`` (two weighted
sums of ``floor(k_i / q) mod 2^16`` with fixed pseudo-random weights, see ``_check_high``),
and :meth:`Lattice.decode_relative` reports whether the decoded ``k'`` matches it. One wrong
coordinate is always caught; several go unnoticed only if their errors cancel in both sums
(about ``2^-48``). The caller (:class:`hvd_compress.torch.SwarmSGD`) then
falls back to a full-precision exchange of that tensor for that round and counts it.

Choosing ``eps``: the sender must pick it without knowing the receiver's model. ``eps`` is not a
wire constant: it travels in the payload, so each message can choose its own.
:meth:`Lattice.choose_eps` maps an estimate of the distance to ``safety * distance / (q/2 - 1)``,
so the code decodes up to ``safety`` times the estimated distance. SwarmSGD estimates the
distance per tensor as (last round's observed distance to the partner) + 2 x (this worker's own
drift since its last averaging), see ``docs/swarmsgd.md``. A fixed ``eps=...`` overrides this.

Wire format per tensor of ``n`` values (little-endian): ``ceil(n * bits / 8)`` bytes of packed
residues (low bits first, :func:`hvd_compress.torch.packing.pack_bits`), then ``eps`` (fp32), the
shift seed (int32), the checksum (int64): 16 bytes of side channel. 8 bits on 85k values costs
8.0015 bits per value.

Numerics: coordinates are computed in float64 (exact integers up to 2^53); ``choose_eps`` floors
``eps`` at ``max|x| * 2^-40`` (and 1e-30) so ``|k|`` stays far inside that range, and ``encode``
refuses a step that would put coordinates beyond 2^50. A non-finite ``x`` is sent
with ``eps = NaN``, which every receiver reports as non-finite. On CUDA tensors ``encode`` and
``decode_relative`` run Triton kernels (:mod:`hvd_compress.torch.kernels.lattice`) with the same
float64 arithmetic: byte-identical payloads, values and ok flags given the same uniforms.

Example::

    import torch, hvd_compress.torch as hc
    codec = hc.from_spec("lattice:bits=8")
    x = torch.randn(1000)
    y = x + 0.01 * torch.randn(1000)                        # the receiver's nearby vector
    eps = codec.choose_eps(distance=(x - y).abs().max().item(), x=x)
    payload = codec.encode(x, torch.Generator().manual_seed(0), eps)
    x_hat, ok = codec.decode_relative(payload, y)           # ok: decoding was unambiguous
    assert ok and (x_hat - x).abs().max() <= eps

How to tune: ``bits=8`` (radius 127 eps) is robust; ``bits=4`` (radius 7 eps) quarters the
bytes again but needs a tight distance estimate, so expect more fallbacks and raise ``safety``
(error grows linearly with ``safety``, fallbacks drop sharply). ``bits=2`` (radius 1 eps) only
suits nearly identical models.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from hvd_compress.torch import kernels
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.packing import f32_bytes, pack_bits, packed_nbytes, unpack_bits

CHECKSUM_PRIME = 2**31 - 1
SIDE_BYTES = 16  # eps fp32, shift seed int32, checksum int64
MIN_EPS = 1e-30
REL_EPS_FLOOR = 2.0**-40  # eps >= max|x| * this: lattice coordinates stay below 2^40
_PHI = 0.6180339887498949  # golden ratio - 1: the shift sequence's step
_CHECK_BLOCK = 4096  # 16-bit parts x 24-bit weights x 4096 terms < 2^52: exact float64 block sums
_CHUNK = 16 * _CHECK_BLOCK  # values per processing chunk (float64 temporaries of 512 KiB)
_SHIFT_CACHE: dict = {}
_SHIFT_CACHE_LIMIT = 1 << 22  # values; longer tensors compute their shift sequence on the fly
_WEIGHTS: list = []
MAX_COORD = 2.0**50  # |lattice coordinate| bound: float64 holds every such integer exactly


def _in_block_weights() -> torch.Tensor:
    """(4096, 2) float64 odd 24-bit weights, a fixed hash of the position within a block."""
    if not _WEIGHTS:
        i = torch.arange(_CHECK_BLOCK, dtype=torch.int64)
        w1 = torch.bitwise_right_shift(i * 0x9E3779B1, 8).bitwise_and_(0xFFFFFF).bitwise_or_(1)
        w2 = torch.bitwise_right_shift(i * 0x85EBCA6B + 0x27D4EB2F, 8).bitwise_and_(0xFFFFFF).bitwise_or_(1)
        _WEIGHTS.append(torch.stack([w1, w2], dim=1).to(torch.float64))
    return _WEIGHTS[0]


def _check_high(high: torch.Tensor) -> int:
    """The payload checksum over ``high = floor(k / q)`` (float64 integers), the part of each
    lattice coordinate the wire does not carry.

    ``h_i = high_i mod 2^16``; per block of 4096 positions, two weighted sums with fixed odd
    24-bit weights (a float64 matrix-vector product: every term and partial sum is an integer
    below 2^52, so it is exact in any summation order); the block sums are combined mod
    ``P = 2^31 - 1`` with per-block weights, and the two results packed in one int64.
    A decode that gets one coordinate wrong changes ``h_i`` (unless it is off by a multiple of
    ``2^16 q`` steps), hence both sums, since P is a prime above every weight: always detected.
    Several wrong coordinates pass only if their changes cancel in both sums (about ``2^-48``).
    """
    if high.numel() == 0:
        return 0
    return _combine(_block_sums(high))


def _block_sums(high: torch.Tensor) -> torch.Tensor:
    """Exact per-block weighted sums of ``high mod 2^16`` ((blocks, 2) int64); chunks whose length
    is a multiple of the block give the same blocks as the whole tensor."""
    # h = high mod 2^16 in [0, 2^16): exact in float64 (scaling by powers of two, floor, and a
    # subtraction of integers below 2^53); 3x faster than torch.remainder's per-element fmod
    h = high.add(torch.mul(high, 1.0 / 65536.0).floor_(), alpha=-65536.0)
    w = _in_block_weights()
    n = h.numel()
    full = n // _CHECK_BLOCK
    parts = []
    if full:
        parts.append(h[: full * _CHECK_BLOCK].view(full, _CHECK_BLOCK) @ w)
    tail = n - full * _CHECK_BLOCK
    if tail:
        parts.append((h[full * _CHECK_BLOCK :] @ w[:tail]).view(1, 2))
    return torch.cat(parts).to(torch.int64)


def _combine(sums: torch.Tensor) -> int:
    p = CHECKSUM_PRIME
    b = torch.arange(sums.shape[0], dtype=torch.int64)
    bw = torch.stack([(b * 0x2545F491 + 0x1B873593) % (p - 1) + 1, (b * 0x61C88647 + 0x5BD1E995) % (p - 1) + 1], dim=1)
    total = ((sums % p) * bw % p).sum(0) % p
    return (int(total[0]) << 32) | int(total[1])


def _refuse_tiny_step(top: float, eps: float) -> None:
    """``encode``'s guard: coordinates ``max|x| / eps`` must stay below 2^50 (exact in float64)."""
    if top / eps >= MAX_COORD:
        raise ValueError(
            f"lattice step eps={eps:g} is too small for values up to {top:g} "
            f"(coordinates must stay below 2^50); use choose_eps()"
        )


class LatticeDecodeError(ValueError):
    """A lattice payload that cannot be decoded without a reference vector, or is malformed."""


class Lattice(Codec):
    """Randomized rounding onto a shifted cubic lattice, residues mod ``2**bits`` on the wire,
    decoded relative to the receiver's own vector (see the module docstring for the algorithm).

    Args:
        bits: bits per value on the wire, 2, 4 or 8 (``q = 2**bits`` residues).
        safety: how many times the estimated distance the code must be able to decode.
        eps: a fixed lattice step instead of the adaptive one (``None``: adaptive).

    Not an allreduce codec: a payload means nothing without the receiver's reference, so it serves
    gossip (:class:`hvd_compress.torch.SwarmSGD`, spec ``"lattice:bits=8"``), not
    ``hvd.DistributedOptimizer``.
    """

    name = "lattice"
    stochastic = True
    needs_reference = True  # decode_relative(payload, reference) instead of decode(payload, n)

    def __init__(self, bits: int = 8, safety: float = 2.0, eps: Optional[float] = None, **options):
        super().__init__(**options)
        if bits not in (2, 4, 8):
            raise ValueError(f"lattice bits must be 2, 4 or 8 (fixed-width packing; q = 2**bits), got {bits}")
        if not safety > 0:
            raise ValueError(f"lattice safety must be positive, got {safety}")
        if eps is not None and not (float(eps) > 0 and float(eps) < float("inf")):
            raise ValueError(f"lattice eps must be a positive finite number or None, got {eps}")
        self.bits, self.safety = int(bits), float(safety)
        self.eps = None if eps is None else float(eps)
        self.q = 2**self.bits
        self.radius = self.q // 2 - 1  # decodable distance, in units of eps

    def params(self):
        return {"bits": self.bits, "safety": self.safety, "eps": self.eps}

    def payload_nbytes(self, numel):
        return packed_nbytes(numel, self.bits) + SIDE_BYTES

    def max_distance(self, eps: float) -> float:
        """Largest ``||x - y||_inf`` that a payload with step ``eps`` is guaranteed to decode at."""
        return eps * self.radius

    def choose_eps(self, distance: float, x: Optional[torch.Tensor] = None) -> float:
        """Lattice step for a receiver believed to be within ``distance`` (inf-norm) of ``x``:
        ``safety * distance / (q/2 - 1)``, floored for numerical safety; rounded to fp32 (what the
        wire carries), so sender and receiver use the very same step."""
        if self.eps is not None:
            eps = self.eps
        else:
            eps = self.safety * float(distance) / self.radius
        floor = MIN_EPS
        if x is not None and x.numel():
            floor = max(floor, float(x.detach().abs().max()) * REL_EPS_FLOOR)
        if not eps == eps or eps == float("inf"):
            eps = float("nan")
        else:
            eps = max(eps, floor)
        return float(torch.tensor(eps, dtype=torch.float32))

    # ---------------------------------------------------------------- math
    @staticmethod
    def _base(numel: int) -> torch.Tensor:
        """``frac(i * phi)`` for ``i < numel`` (float64, cached for moderate sizes)."""
        base = _SHIFT_CACHE.get(numel)
        if base is None:
            base = torch.arange(numel, dtype=torch.float64).mul_(_PHI)
            base.sub_(torch.floor(base))
            if sum(_SHIFT_CACHE) + numel <= _SHIFT_CACHE_LIMIT:
                _SHIFT_CACHE[numel] = base
        return base

    @staticmethod
    def _offset(seed: int) -> float:
        return (int(seed) * 0x9E3779B97F4A7C15 % (1 << 64)) / float(1 << 64)

    @classmethod
    def _shift(cls, numel: int, seed: int) -> torch.Tensor:
        """The lattice shift ``u_i = frac(i * phi) + s`` (float64), ``s`` uniform in [0, 1) from
        the 32-bit ``seed``, ``phi`` the golden ratio: each coordinate's lattice sits at a uniformly
        random offset (an integer part of ``u`` only relabels lattice points), for one vector add
        instead of a random draw per value."""
        return cls._base(numel) + cls._offset(seed)

    def checksum(self, k: torch.Tensor) -> int:
        """64-bit check of integer lattice coordinates ``k`` (any dtype holding them exactly)."""
        return _check_high(torch.floor(k.detach().cpu().to(torch.float64) / self.q))

    def encode(self, x, generator=None, scale=None, noise=None):
        """Payload for ``x`` on the lattice of step ``scale`` (= eps; default: the fixed ``eps``).
        ``noise`` (uniform in [0, 1), one per value) replaces the rounding draws, for tests."""
        eps = scale if scale is not None else self.eps
        if eps is None:
            raise ValueError(
                "Lattice.encode needs the lattice step: pass scale=eps "
                "(see choose_eps) or construct Lattice(eps=...)"
            )
        eps = float(torch.as_tensor(eps, dtype=torch.float32).reshape(-1)[0])
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        x = x.detach().reshape(-1)
        fast = (
            kernels.lattice_encode(x, self.bits, eps, seed, generator, noise) if self.plan.path(x) == "triton" else None
        )
        if fast is not None:
            payload, top = fast  # top: max|x|, read only for a valid step and a non-empty x
            if top is not None and top < float("inf"):
                _refuse_tiny_step(top, eps)
            return payload
        if x.device.type != "cpu":  # the plain path (the definition) runs on the host: CUDA without Triton
            cpu_noise = noise.cpu() if noise is not None else None
            return self._encode_plain(x.cpu(), eps, seed, generator, cpu_noise).to(x.device)
        return self._encode_plain(x, eps, seed, generator, noise)

    def _encode_plain(self, x, eps, seed, generator, noise):
        n = x.numel()
        top = max(abs(float(v)) for v in torch.aminmax(x)) if n else 0.0  # NaN propagates
        finite = eps == eps and 0 < eps < float("inf") and top < float("inf")  # NaN fails too
        if finite:
            _refuse_tiny_step(top, eps)
        if not finite or n == 0:
            codes = torch.zeros(n, dtype=torch.uint8)
            k_sum = 0
            if not finite:
                eps = float("nan")
        else:
            codes = torch.empty(n, dtype=torch.uint8)
            base, offset, sums = self._base(n), self._offset(seed), []
            for a in range(0, n, _CHUNK):  # cache-sized chunks: the float64 temporaries stay in L2
                b = min(n, a + _CHUNK)
                # z = x / eps - u; randomized rounding k = floor(z + U), U ~ [0, 1): P(ceil z) = frac z
                z = x[a:b].to(torch.float64).mul_(1.0 / eps).sub_(base[a:b]).sub_(offset)
                k = z.add_(
                    noise[a:b] if noise is not None else torch.rand(b - a, generator=generator, dtype=torch.float64)
                ).floor_()
                high = torch.mul(k, 1.0 / self.q).floor_()  # exact: q is a power of two
                codes[a:b] = k.add_(high, alpha=-self.q)  # k mod q, in [0, q)
                sums.append(_block_sums(high))
            k_sum = _combine(torch.cat(sums))
        side = torch.cat(
            [
                f32_bytes(torch.tensor([eps])),
                torch.tensor([seed], dtype=torch.int32).view(torch.uint8),
                torch.tensor([k_sum], dtype=torch.int64).view(torch.uint8),
            ]
        )
        return torch.cat([pack_bits(codes, self.bits), side])

    def _check_size(self, payload: torch.Tensor, numel: int) -> int:
        """The residues' byte count, after checking the payload's size (a malformed one raises)."""
        nc = packed_nbytes(numel, self.bits)
        if payload.numel() != nc + SIDE_BYTES:
            raise LatticeDecodeError(
                f"lattice payload has {payload.numel()} bytes, expected "
                f"{nc + SIDE_BYTES} for {numel} values at {self.bits} bits"
            )
        return nc

    def side_channel(self, payload: torch.Tensor, numel: int) -> Tuple[float, int, int]:
        """``(eps, shift seed, checksum)`` of a payload for ``numel`` values."""
        nc = self._check_size(payload, numel)
        side = payload[nc:].clone()
        eps = float(side[:4].view(torch.float32)[0])
        seed = int(side[4:8].view(torch.int32)[0])
        k_sum = int(side[8:16].view(torch.int64)[0])
        return eps, seed, k_sum

    def decode_relative(self, payload: torch.Tensor, reference: torch.Tensor) -> Tuple[torch.Tensor, bool]:
        """Decode relative to the receiver's own ``reference`` (same number of values as the
        sender's tensor). Returns ``(values, ok)``: ``ok`` is False when the checksum shows that
        the two vectors were too far apart to decode unambiguously, or the sender's tensor was not
        finite (then ``values`` is all NaN). Never trust ``values`` when ``ok`` is False."""
        ref = reference.detach().reshape(-1)
        n = ref.numel()
        self._check_size(payload, n)
        fast = kernels.lattice_decode(payload, ref, self.bits) if self.plan.path(ref) == "triton" else None
        if fast is not None:
            return fast
        if ref.device.type != "cpu" or payload.device.type != "cpu":  # plain path on the host, as in encode
            values, ok = self._decode_plain(payload.cpu(), ref.cpu())
            return values.to(ref.device), ok
        return self._decode_plain(payload, ref)

    def _decode_plain(self, payload, ref):
        n = ref.numel()
        eps, seed, k_sum = self.side_channel(payload, n)
        if not (eps == eps and 0 < eps < float("inf")):
            return torch.full((n,), float("nan")), False
        if n == 0:
            return torch.empty(0), True
        codes = unpack_bits(payload[: packed_nbytes(n, self.bits)], self.bits, n)  # uint8 residues
        base, offset, sums = self._base(n), self._offset(seed), []
        out = torch.empty(n, dtype=torch.float32)
        for a in range(0, n, _CHUNK):  # cache-sized chunks, as in encode
            b = min(n, a + _CHUNK)
            c = codes[a:b]
            # k = c + q * high, the integer with residue c nearest r = y / eps - u (exact in float64)
            high = ref[a:b].to(torch.float64).mul_(1.0 / eps).sub_(base[a:b]).sub_(offset)
            high.sub_(c).mul_(1.0 / self.q).round_()
            lo, hi = torch.aminmax(high)
            if not max(-float(lo), float(hi)) * self.q < MAX_COORD:  # also catches NaN
                return torch.full((n,), float("nan")), False  # the reference is absurdly far: no decode
            sums.append(_block_sums(high))
            out[a:b] = high.mul_(self.q).add_(c).add_(base[a:b]).add_(offset).mul_(eps)
        return out, _combine(torch.cat(sums)) == k_sum

    def is_finite_payload(self, payload: torch.Tensor, numel: int) -> bool:
        eps = self.side_channel(payload, numel)[0]
        return eps == eps and 0 < eps < float("inf")

    def decode(self, payload, numel):
        raise LatticeDecodeError(
            "a lattice payload holds coordinates modulo q: it decodes only relative to the "
            "receiver's own nearby vector. Use decode_relative(payload, reference) (SwarmSGD does); "
            "the lattice codec cannot serve allreduce-style averaging of gradients."
        )

    def aggregate(self, payloads, numel):
        return self.decode(payloads[0], numel)

    def worker_encode(self, x, key, bounds, draw, scale=None):
        raise LatticeDecodeError(
            "the lattice codec is for gossip (hvd_compress.torch.SwarmSGD), not for "
            "gradient averaging: its payloads decode only relative to the receiver's own "
            "model"
        )

    def compress(self, tensor):
        raise LatticeDecodeError(
            "the lattice codec is for gossip (hvd_compress.torch.SwarmSGD), not for "
            "hvd.DistributedOptimizer: its payloads decode only relative to the "
            "receiver's own model"
        )
