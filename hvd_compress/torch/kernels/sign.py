"""Sign codecs in Triton: ScaledSign/EFSign (sign bits and one mean |p| per chunk, with the fused
error-feedback step) and SignSGD (the same bits; its majority vote is one kernel over all
workers' payloads)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hvd_compress.common import packed_nbytes
from hvd_compress.torch.kernels.common import LAUNCH, blocks, emit, empty_u8, flat_f32, is_finite, load_f32_le, quiet

BYTES_PER_PROGRAM = 256
VALUES_PER_PROGRAM = 2048


@triton.jit
def _sign_bits(
    g_ptr, e_in_ptr, e_out_ptr, out_ptr, part_ptr, n, nb, HAS_E_IN: tl.constexpr, EF: tl.constexpr, BB: tl.constexpr
):
    """Pass 1: ``p = g (+ e)`` (stored to ``e_out``), the sign bits, this block's fp64 sum |p|."""
    pid = tl.program_id(0)
    byte = pid.to(tl.int64) * BB + tl.arange(0, BB)
    lane = tl.arange(0, 8)
    idx = byte[:, None] * 8 + lane[None, :]
    m = idx < n
    p = tl.load(g_ptr + idx, mask=m, other=0.0)
    if HAS_E_IN:
        p = p + tl.load(e_in_ptr + idx, mask=m, other=0.0)
    if EF:
        tl.store(e_out_ptr + idx, p, mask=m)
    bits = tl.sum(tl.where((p >= 0) & m, 1 << lane[None, :], 0), axis=1)
    tl.store(out_ptr + byte, bits.to(tl.uint8), mask=byte < nb)
    part = tl.sum(tl.sum(tl.where(m, tl.abs(p).to(tl.float64), 0.0), axis=1), axis=0)
    tl.store(part_ptr + pid, part)


@triton.jit
def _sign_residual(e_ptr, s_ptr, bad_ptr, n, BLOCK: tl.constexpr):
    """Pass 2: ``e = p - (p >= 0 ? s : -s)`` (a NaN scale is selected as itself)."""
    pid = tl.program_id(0)
    idx = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = idx < n
    s = tl.load(s_ptr)
    lo = tl.where(s != s, s, -s)
    p = tl.load(e_ptr + idx, mask=m, other=0.0)
    r = p - tl.where(p >= 0, s, lo)
    tl.store(e_ptr + idx, r, mask=m)
    tl.store(bad_ptr + pid, tl.max(tl.where(m & ~is_finite(r), 1, 0), axis=0).to(tl.uint8))


@triton.jit
def _sign_decode(p_ptr, out_ptr, n, nb, div, MODE: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = idx < n
    byte = tl.load(p_ptr + idx // 8, mask=m, other=0).to(tl.int32)
    bit = (byte >> (idx % 8).to(tl.int32)) & 1
    s = load_f32_le(p_ptr, tl.zeros([BLOCK], tl.int64) + nb, m)
    hi = tl.where(s != s, quiet(s), s)
    lo = tl.where(s != s, quiet(s), -s)
    emit(out_ptr, idx, tl.where(bit == 1, hi, lo), m, div, MODE)


@triton.jit
def _vote(p_ptr, out_ptr, k, stride, n, nb, BLOCK: tl.constexpr):
    """signSGD's majority vote over ``k`` payloads (rows ``stride`` bytes apart), with the plain
    path's fp32 operations in payload order; ties go to the sign of the scale-weighted sum."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = idx < n
    votes = tl.zeros([BLOCK], dtype=tl.float32)
    weighted = tl.zeros([BLOCK], dtype=tl.float32)
    scale = tl.zeros([BLOCK], dtype=tl.float32)
    for w in range(0, k):
        row = p_ptr + w * stride
        byte = tl.load(row + idx // 8, mask=m, other=0).to(tl.int32)
        sign = (((byte >> (idx % 8).to(tl.int32)) & 1) * 2 - 1).to(tl.float32)
        s = load_f32_le(row, tl.zeros([BLOCK], tl.int64) + nb, m)
        votes += sign
        weighted += sign * s
        scale += s
    direction = tl.where(votes > 0, 1.0, tl.where(votes < 0, -1.0, tl.where(weighted < 0, -1.0, 1.0)))
    tl.store(out_ptr + idx, direction * tl.div_rn(scale, tl.zeros([BLOCK], tl.float32) + k), mask=m)


def encode_with_residual(x: torch.Tensor, e_in, e_out, scale_mode: str = "mean"):
    """``(payload, nonfinite_residual_flag)`` of the scaled sign of ``p = x (+ e_in)``; ``e_out``:
    the fused error-feedback step. ``scale_mode="vote"``: signSGD's unscaled 0/1 scale."""
    x = flat_f32(x)
    n = x.numel()
    nb = packed_nbytes(n, 1)
    out = empty_u8(nb + 4, x)
    bad = torch.zeros(1, dtype=torch.uint8, device=x.device)
    if n == 0:
        out.view(torch.float32).zero_()
        return out, bad
    grid = blocks(nb, BYTES_PER_PROGRAM)
    parts = torch.empty(grid[0], dtype=torch.float64, device=x.device)
    _sign_bits[grid](
        x,
        x if e_in is None else e_in,
        x if e_out is None else e_out,
        out,
        parts,
        n,
        nb,
        HAS_E_IN=e_in is not None,
        EF=e_out is not None,
        BB=BYTES_PER_PROGRAM,
        **LAUNCH,
    )
    nan = torch.full((1,), float("nan"), device=x.device)
    if scale_mode == "mean":  # fp64 sum, divided and rounded once; NaN unless finite in fp32
        total = parts.sum().reshape(1)
        s = (total / n).float()
        s = torch.where(torch.isfinite(total.float()) & torch.isfinite(s), s, nan)
    else:  # a bare vote, but an all-zero chunk stays exactly zero; NaN if anything is non-finite
        a = x.abs().amax().reshape(1)
        s = torch.where(torch.isfinite(a), (a > 0).float(), nan)
    out[nb:].copy_(s.view(torch.uint8))
    if e_out is not None:
        g2 = blocks(n, VALUES_PER_PROGRAM)
        bad = torch.empty(g2[0], dtype=torch.uint8, device=x.device)
        _sign_residual[g2](e_out, s, bad, n, BLOCK=VALUES_PER_PROGRAM, **LAUNCH)
    return out, bad


def encode(x: torch.Tensor, scale_mode: str = "mean") -> torch.Tensor:
    return encode_with_residual(x, None, None, scale_mode)[0]


def decode_into(payload: torch.Tensor, out: torch.Tensor, mode: int = 0, div: float = 1.0) -> None:
    n = out.numel()
    if n == 0:
        return
    _sign_decode[blocks(n, VALUES_PER_PROGRAM)](
        payload, out, n, packed_nbytes(n, 1), float(div), MODE=mode, BLOCK=VALUES_PER_PROGRAM, **LAUNCH
    )


def vote(payloads, numel: int) -> torch.Tensor:
    """signSGD's aggregate: the majority vote of ``payloads`` times the workers' mean scale."""
    device = payloads[0].device
    out = torch.empty(numel, dtype=torch.float32, device=device)
    if numel == 0:
        return out
    stacked = torch.stack([p.reshape(-1) for p in payloads])
    _vote[blocks(numel, VALUES_PER_PROGRAM)](
        stacked,
        out,
        len(payloads),
        stacked.stride(0),
        numel,
        packed_nbytes(numel, 1),
        BLOCK=VALUES_PER_PROGRAM,
        **LAUNCH,
    )
    return out
