"""The Lattice quantizer (:mod:`hvd_compress.torch.codecs.lattice`) in Triton: encode, and decode
relative to the receiver's vector with the checksum comparison.

Same float64 arithmetic as the plain path, operation for operation, so the payload and the decoded
values are byte-identical given the same uniforms:

* the shift ``u_i = frac(i * phi) + s``: ``i * phi`` and ``- floor`` in float64, ``s`` from the
  32-bit shift seed as ``(seed * 0x9E3779B97F4A7C15 mod 2^64) * 2^-64`` (the uint64 product wraps,
  its conversion to float64 rounds to nearest, like Python's ``int / float``);
* ``1 / eps`` is a float64 division (IEEE round-to-nearest: ``div.rn.f64`` on NVIDIA GPUs, numpy
  in the interpreter), as Python computes it; float constants that fp32 cannot hold exactly
  (``phi``) are passed as bit patterns, since Triton types float literals as fp32;
* encode: ``k = floor(((x * (1/eps) - base) - s) + U)``, ``high = floor(k / q)``, residue
  ``k - q * high``; decode: ``high = round_half_even((((y * (1/eps) - base) - s) - c) / q)`` (what
  ``torch.round`` does) and ``x = (((q * high + c) + base) + s) * eps`` rounded once to fp32;
* the checksum: per block of 4096 positions, the sums of ``(high mod 2^16) * w`` (24-bit weights)
  in int64, exact like the plain path's float64 matrix product (every term and partial sum is an
  integer below 2^52), then combined mod ``2^31 - 1`` with the per-block weights; integer sums do
  not depend on the order, so any grid gives the same 64 bits.

Kernels launch with ``enable_fp_fusion=False`` (no FMA contraction of ``x * (1/eps) - base``).

One program per checksum block (4096 values): encode writes the block's packed residues and its two
combined checksum terms, decode its fp32 values, terms and a "coordinate too large" flag; a
one-program kernel then sums the terms, and writes the side channel (encode) or the ok/NaN flags
(decode). A non-finite input (or step) is found by a max-|x| pass first, on the device: the payload
is then all-zero residues with ``eps = NaN`` and checksum 0, as in the plain path.

Without ``noise`` the rounding uniforms are 53-bit (two Philox words of ``tl.randint4x`` per value,
counter = value index mod 2^32) from a seed drawn from the codec's generator: deterministic per
seed, a different stream from the plain path's ``torch.rand``.

Host reads (both ``# host sync (allow-listed)``): encode reads max|x| once, because
:meth:`Lattice.encode` must raise ``ValueError`` on a step too small for the values (coordinates
beyond 2^50) as the plain path does; decode reads the ok flag once, because
:meth:`Lattice.decode_relative` returns it as a Python bool. Everything else stays on the device.
"""

from __future__ import annotations

import struct
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from hvd_compress.common import packed_nbytes
from hvd_compress.torch.kernels.common import (
    LAUNCH,
    QNAN_BITS,
    blocks,
    empty_u8,
    flat_f32,
    kernel_seed,
    load_f32_le,
)

CHECK_BLOCK = 4096  # values per checksum block (the plain path's _CHECK_BLOCK); one program each
SUM_CHUNK = 1024  # blocks per step of the one-program finishing kernels
PHI_BITS = struct.unpack("<q", struct.pack("<d", 0.6180339887498949))[0]  # lattice._PHI
KERNEL_OPTIONS = dict(LAUNCH, num_warps=8)  # float64 temporaries: spread a block over 256 threads


@triton.jit
def _frame(eps, shift_seed):
    """``(eps, 1/eps, shift offset s, eps valid)`` in float64 from the fp32 step and int32 seed."""
    e = eps.to(tl.float64)
    inv = 1.0 / e
    mixed = shift_seed.to(tl.int64).to(tl.uint64, bitcast=True) * 0x9E3779B97F4A7C15  # mod 2^64
    offset = mixed.to(tl.float64) * 5.421010862427522e-20  # * 2^-64, exact
    bits = eps.to(tl.int32, bitcast=True)
    return e, inv, offset, (bits > 0) & (bits < 0x7F800000)


@triton.jit
def _base(idx, phi):
    """``frac(i * phi)`` in float64."""
    t = idx.to(tl.float64) * phi
    return t - tl.floor(t)


@triton.jit
def _weights(j):
    """The two odd 24-bit weights (int64) of in-block position ``j`` (lattice._in_block_weights)."""
    j = j.to(tl.int64)
    return (((j * 0x9E3779B1) >> 8) & 0xFFFFFF) | 1, (((j * 0x85EBCA6B + 0x27D4EB2F) >> 8) & 0xFFFFFF) | 1


@triton.jit
def _store_terms(terms_ptr, blk, s1, s2):
    """Block ``blk``'s two combined checksum terms ``(s mod P) * bw mod P`` from its exact
    weighted sums ``s1``, ``s2`` (int64, below 2^52)."""
    p = 2147483647
    bw1 = (blk * 0x2545F491 + 0x1B873593) % (p - 1) + 1
    bw2 = (blk * 0x61C88647 + 0x5BD1E995) % (p - 1) + 1
    tl.store(terms_ptr + 2 * blk, (s1 % p) * bw1 % p)
    tl.store(terms_ptr + 2 * blk + 1, (s2 % p) * bw2 % p)


@triton.jit
def _sum_terms(terms_ptr, nblocks, CHUNK: tl.constexpr):
    """The two checksum halves: the blocks' terms summed mod P (exact in int64)."""
    i = tl.arange(0, CHUNK)
    a1 = tl.zeros([CHUNK], dtype=tl.int64)
    a2 = tl.zeros([CHUNK], dtype=tl.int64)
    for start in range(0, nblocks, CHUNK):
        b = start + i
        m = b < nblocks
        a1 += tl.load(terms_ptr + 2 * b, mask=m, other=0)
        a2 += tl.load(terms_ptr + 2 * b + 1, mask=m, other=0)
    p = 2147483647
    return ((tl.sum(a1, axis=0) % p) << 32) | (tl.sum(a2, axis=0) % p)


@triton.jit
def _round_half_even(v):
    """``torch.round`` in float64 (exact for every input; NaN and +-Inf pass through)."""
    f = tl.floor(v)
    d = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
    r = tl.where((d > 0.5) | ((d == 0.5) & odd), f + 1.0, f)
    return tl.where(r == 0.0, v * 0.0, r)  # -0.5 rounds to -0.0, as torch.round does


@triton.jit
def _max_abs_bits(x_ptr, top_ptr, n, BLOCK: tl.constexpr):
    """max |x| as fp32 bits (a NaN above Inf) into ``top_ptr[0]`` (int32, zero-initialised)."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + idx, mask=idx < n, other=0.0)
    tl.atomic_max(top_ptr, tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=0))


@triton.jit(do_not_specialize=["eps_bits", "shift_seed", "seed"])
def _encode(
    x_ptr,
    noise_ptr,
    top_ptr,
    out_ptr,
    terms_ptr,
    n,
    nc,
    eps_bits,
    shift_seed,
    phi_bits,
    seed,
    BITS: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    PER: tl.constexpr = 8 // BITS
    Q: tl.constexpr = 1 << BITS
    NB: tl.constexpr = BLOCK // PER
    blk = tl.program_id(0).to(tl.int64)
    row = tl.arange(0, NB)
    lane = tl.arange(0, PER)
    j = row[:, None] * PER + lane[None, :]  # position in the block
    idx = blk * BLOCK + j
    m = idx < n
    e, inv, offset, eps_ok = _frame(eps_bits.to(tl.float32, bitcast=True), shift_seed)
    finite = eps_ok & (tl.load(top_ptr) < 0x7F800000)
    x = tl.load(x_ptr + idx, mask=m, other=0.0).to(tl.float64)
    z = x * inv - _base(idx, phi_bits.to(tl.int64).to(tl.float64, bitcast=True)) - offset
    if HAS_NOISE:
        u = tl.load(noise_ptr + idx, mask=m, other=0.0).to(tl.float64)
    else:  # 53-bit uniforms in [0, 1) from two Philox words, as torch.rand draws float64
        r0, r1, _, _ = tl.randint4x(seed, idx.to(tl.int32))
        u = ((r0 >> 5).to(tl.float64) * 67108864.0 + (r1 >> 6).to(tl.float64)) * 1.1102230246251565e-16
    k = tl.floor(z + u)
    high = tl.floor(k * (1.0 / Q))  # exact: q is a power of two
    keep = m & finite
    code = tl.where(keep, k - high * Q, 0.0).to(tl.int32)  # k mod q, in [0, q); 0 when not finite
    packed = tl.sum(code << (lane[None, :] * BITS), axis=1)
    byte = blk * NB + row
    tl.store(out_ptr + byte, packed.to(tl.uint8), mask=byte < nc)
    h = tl.where(keep, high, 0.0).to(tl.int64) & 0xFFFF  # high mod 2^16 (two's complement)
    w1, w2 = _weights(j)
    _store_terms(terms_ptr, blk, tl.sum(tl.sum(h * w1, axis=1), axis=0), tl.sum(tl.sum(h * w2, axis=1), axis=0))


@triton.jit(do_not_specialize=["eps_bits", "shift_seed"])
def _encode_side(out_ptr, terms_ptr, top_ptr, nblocks, nc, eps_bits, shift_seed, CHUNK: tl.constexpr):
    """The 16 side-channel bytes: eps (fp32; NaN when the input or the step is not finite), the
    shift seed (int32), the checksum (int64; 0 when not finite)."""
    check = _sum_terms(terms_ptr, nblocks, CHUNK)
    finite = (eps_bits > 0) & (eps_bits < 0x7F800000) & (tl.load(top_ptr) < 0x7F800000)
    eps_word = tl.where(finite, eps_bits, QNAN_BITS).to(tl.int64) & 0xFFFFFFFF
    seed_word = shift_seed.to(tl.int64) & 0xFFFFFFFF
    check = tl.where(finite, check, 0)
    lane = tl.arange(0, 16)
    word = tl.where(lane < 4, eps_word, tl.where(lane < 8, seed_word, check))
    shift = tl.where(lane < 8, (lane % 4) * 8, (lane - 8) * 8).to(tl.int64)
    tl.store(out_ptr + nc + lane, ((word >> shift) & 0xFF).to(tl.uint8))


@triton.jit
def _decode(p_ptr, y_ptr, out_ptr, terms_ptr, far_ptr, n, nc, phi_bits, BITS: tl.constexpr, BLOCK: tl.constexpr):
    PER: tl.constexpr = 8 // BITS
    Q: tl.constexpr = 1 << BITS
    blk = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, BLOCK)
    idx = blk * BLOCK + j
    m = idx < n
    one = tl.arange(0, 1)
    eps = load_f32_le(p_ptr, nc + one, one < 1)
    shift_seed = load_f32_le(p_ptr, nc + 4 + one, one < 1).to(tl.int32, bitcast=True)
    e, inv, offset, eps_ok = _frame(eps, shift_seed)
    byte = tl.load(p_ptr + idx // PER, mask=m, other=0).to(tl.int32)
    c = ((byte >> ((idx % PER) * BITS).to(tl.int32)) & (Q - 1)).to(tl.float64)
    y = tl.load(y_ptr + idx, mask=m, other=0.0).to(tl.float64)
    base = _base(idx, phi_bits.to(tl.int64).to(tl.float64, bitcast=True))
    # k = c + q * high: the integer with residue c nearest r = y / eps - u
    high = _round_half_even((((y * inv - base) - offset) - c) * (1.0 / Q))
    far = m & ~(tl.abs(high) * Q < 1125899906842624.0)  # 2^50 (lattice.MAX_COORD); NaN too
    keep = m & ~far & eps_ok
    h = tl.where(keep, high, 0.0).to(tl.int64) & 0xFFFF
    w1, w2 = _weights(j)
    _store_terms(terms_ptr, blk, tl.sum(h * w1, axis=0), tl.sum(h * w2, axis=0))
    tl.store(far_ptr + blk, tl.max(far.to(tl.int32), axis=0).to(tl.uint8))
    v = (((high * Q + c) + base) + offset) * e
    tl.store(out_ptr + idx, v.to(tl.float32), mask=m)


@triton.jit
def _decode_verdict(p_ptr, terms_ptr, far_ptr, flags_ptr, nblocks, nc, EMPTY: tl.constexpr, CHUNK: tl.constexpr):
    """``flags = [ok, all NaN]``: not ok when the step is not finite, a coordinate is too large
    (then every value is NaN) or the checksum differs (n > 0)."""
    check = _sum_terms(terms_ptr, nblocks, CHUNK)
    i = tl.arange(0, CHUNK)
    far = tl.zeros([CHUNK], dtype=tl.int32)
    for start in range(0, nblocks, CHUNK):
        far = tl.maximum(far, tl.load(far_ptr + start + i, mask=start + i < nblocks, other=0).to(tl.int32))
    lane = tl.arange(0, 8)
    sent = tl.sum(tl.load(p_ptr + nc + 8 + lane).to(tl.uint64) << (lane * 8).to(tl.uint64), axis=0)
    eps_bits = load_f32_le(p_ptr, nc + tl.arange(0, 1), tl.arange(0, 1) < 1).to(tl.int32, bitcast=True)
    eps_bits = tl.max(eps_bits, axis=0)
    nan = (eps_bits <= 0) | (eps_bits >= 0x7F800000) | (tl.max(far, axis=0) > 0)
    if EMPTY:  # no values: nothing to check (the plain path's early return)
        ok = ~nan
    else:
        ok = ~nan & (check.to(tl.uint64, bitcast=True) == sent)
    tl.store(flags_ptr + tl.arange(0, 2), tl.where(tl.arange(0, 2) == 0, ok, nan).to(tl.uint8))


def encode(
    x: torch.Tensor, bits: int, eps: float, shift_seed: int, generator=None, noise=None
) -> Tuple[torch.Tensor, Optional[float]]:
    """``(payload, max|x|)`` for ``x`` on the lattice of step ``eps`` (an fp32 value) shifted by
    ``shift_seed``. ``max|x|`` (a Python float) is read only when ``eps`` is a valid step and ``x``
    is not empty (else ``None``): the codec refuses a step too small for the values."""
    x = flat_f32(x)
    n = x.numel()
    nc = packed_nbytes(n, bits)
    out = empty_u8(nc + 16, x)
    nblocks = -(-n // CHECK_BLOCK)
    eps_bits = struct.unpack("<i", struct.pack("<f", eps))[0]
    top_bits = torch.zeros(1, dtype=torch.int32, device=x.device)
    top = None
    if n:
        _max_abs_bits[blocks(n, CHECK_BLOCK)](x, top_bits, n, BLOCK=CHECK_BLOCK, **LAUNCH)
        if eps == eps and 0 < eps < float("inf"):
            # read before the encode launches: the codec raises on a step too small for the values
            top = top_bits.view(torch.float32).item()  # host sync (allow-listed): the step check raises
    terms = torch.empty(2 * nblocks, dtype=torch.int64, device=x.device)
    if n:
        has_noise = noise is not None
        if has_noise:
            noise = noise.detach().reshape(-1).to(x.device).contiguous()
            if noise.numel() != n:
                raise ValueError(f"hvd_compress: noise has {noise.numel()} values, {n} needed")
        _encode[(nblocks,)](
            x,
            noise if has_noise else x,
            top_bits,
            out,
            terms,
            n,
            nc,
            eps_bits,
            shift_seed,
            PHI_BITS,
            0 if has_noise else kernel_seed(generator),
            BITS=bits,
            HAS_NOISE=has_noise,
            BLOCK=CHECK_BLOCK,
            **KERNEL_OPTIONS,
        )
    _encode_side[(1,)](out, terms, top_bits, nblocks, nc, eps_bits, shift_seed, CHUNK=SUM_CHUNK, **LAUNCH)
    return out, top


def decode_relative(payload: torch.Tensor, reference: torch.Tensor, bits: int) -> Tuple[torch.Tensor, bool]:
    """``(values, ok)`` of a payload of the right size, decoded relative to ``reference``."""
    y = flat_f32(reference)
    n = y.numel()
    nc = packed_nbytes(n, bits)
    payload = payload.detach().reshape(-1).to(y.device).contiguous()
    nblocks = -(-n // CHECK_BLOCK)
    out = torch.empty(n, dtype=torch.float32, device=y.device)
    terms = torch.empty(2 * nblocks, dtype=torch.int64, device=y.device)
    far = torch.empty(nblocks, dtype=torch.uint8, device=y.device)
    flags = torch.empty(2, dtype=torch.uint8, device=y.device)
    if n:
        _decode[(nblocks,)](
            payload, y, out, terms, far, n, nc, PHI_BITS, BITS=bits, BLOCK=CHECK_BLOCK, **KERNEL_OPTIONS
        )
    _decode_verdict[(1,)](payload, terms, far, flags, nblocks, nc, EMPTY=n == 0, CHUNK=SUM_CHUNK, **LAUNCH)
    out.masked_fill_(flags[1:].bool(), float("nan"))  # on the device: a step or coordinates out of range
    ok = bool(flags[0].item())  # host sync (allow-listed): decode_relative returns ok as a Python bool
    return out, ok
