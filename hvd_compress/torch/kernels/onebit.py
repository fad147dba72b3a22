"""OneBit's quantizer (sign bit per value, per-bucket means of the non-negative and negative
values) with the fused error-feedback step, in Triton. One program per bucket: pass 1 forms
``p = g + e``, the bits and the bucket's fp64 sums; pass 2 writes ``e = p - decode(p)``."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hvd_compress.common import packed_nbytes
from hvd_compress.torch.kernels.common import (
    LAUNCH,
    QNAN_BITS,
    blocks,
    emit,
    empty_u8,
    flat_f32,
    is_finite,
    load_f32_le,
    nan_if_nonfinite,
    store_f32_le,
)

VALUES_PER_PROGRAM = 2048


@triton.jit
def _onebit_encode(
    g_ptr,
    e_in_ptr,
    e_out_ptr,
    out_ptr,
    bad_ptr,
    n,
    nb,
    nbuckets,
    bucket,
    HAS_E_IN: tl.constexpr,
    EF: tl.constexpr,
    ROWS: tl.constexpr,
    BB: tl.constexpr,
):
    """``ROWS`` buckets per program (small buckets share one), ``BB`` bytes of each per step."""
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    start = row * bucket
    length = tl.where(row < nbuckets, tl.minimum(bucket, n - start), 0)
    byte = tl.arange(0, BB)
    lane = tl.arange(0, 8)
    cnt = tl.zeros([ROWS, BB, 8], dtype=tl.int32)
    ps = tl.zeros([ROWS, BB, 8], dtype=tl.float64)
    ns = tl.zeros([ROWS, BB, 8], dtype=tl.float64)
    badv = tl.zeros([ROWS, BB, 8], dtype=tl.int32)
    for off in range(0, bucket, BB * 8):
        rel = off + byte[None, :, None] * 8 + lane[None, None, :]
        idx = start[:, None, None] + rel
        m = rel < length[:, None, None]
        p = tl.load(g_ptr + idx, mask=m, other=0.0)
        if HAS_E_IN:
            p = p + tl.load(e_in_ptr + idx, mask=m, other=0.0)
        if EF:
            tl.store(e_out_ptr + idx, p, mask=m)
        pos = (p >= 0) & m
        neg = (p < 0) & m
        cnt += pos.to(tl.int32)
        ps += tl.where(pos, p.to(tl.float64), 0.0)
        ns += tl.where(neg, p.to(tl.float64), 0.0)
        badv = tl.maximum(badv, (m & ~is_finite(p)).to(tl.int32))
        bits = tl.sum(tl.where(pos, 1 << lane[None, None, :], 0), axis=2)
        tl.store(
            out_ptr + (start[:, None] + off) // 8 + byte[None, :],
            bits.to(tl.uint8),
            mask=off + byte[None, :] * 8 < length[:, None],
        )
    nan = tl.full([ROWS], QNAN_BITS, tl.uint32).to(tl.float32, bitcast=True)
    pcount = tl.sum(tl.sum(cnt, axis=2), axis=1)
    ncount = length - pcount
    psum = tl.sum(tl.sum(ps, axis=2), axis=1)
    nsum = tl.sum(tl.sum(ns, axis=2), axis=1)
    bad = tl.max(tl.max(badv, axis=2), axis=1)
    # the quotient in fp64, rounded once (the C kernels' arithmetic)
    pm = tl.where(is_finite(psum.to(tl.float32)), (psum / tl.maximum(pcount, 1).to(tl.float64)).to(tl.float32), nan)
    pm = nan_if_nonfinite(tl.where(pcount > 0, pm, 0.0))
    nm = tl.where(bad > 0, nan, (nsum / tl.maximum(ncount, 1).to(tl.float64)).to(tl.float32))
    nm = nan_if_nonfinite(tl.where(ncount > 0, nm, 0.0))
    valid = row < nbuckets
    store_f32_le(out_ptr, nb + 8 * row, pm, valid)
    store_f32_le(out_ptr, nb + 8 * row + 4, nm, valid)
    if EF:
        tl.debug_barrier()  # pass 2 reads what pass 1 stored
        rbad = tl.zeros([ROWS, BB, 8], dtype=tl.int32)
        for off in range(0, bucket, BB * 8):
            rel = off + byte[None, :, None] * 8 + lane[None, None, :]
            idx = start[:, None, None] + rel
            m = rel < length[:, None, None]
            p = tl.load(e_out_ptr + idx, mask=m, other=0.0)
            r = p - tl.where(p >= 0, pm[:, None, None], nm[:, None, None])
            tl.store(e_out_ptr + idx, r, mask=m)
            rbad = tl.maximum(rbad, (m & ~is_finite(r)).to(tl.int32))
        tl.store(bad_ptr + tl.program_id(0), tl.max(tl.max(tl.max(rbad, axis=2), axis=1), axis=0).to(tl.uint8))


@triton.jit
def _onebit_decode(p_ptr, out_ptr, n, nb, bucket, div, MODE: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = idx < n
    byte = tl.load(p_ptr + idx // 8, mask=m, other=0).to(tl.int32)
    bit = (byte >> (idx % 8).to(tl.int32)) & 1
    off = nb + 8 * (idx // bucket)
    v = tl.where(bit == 1, load_f32_le(p_ptr, off, m), load_f32_le(p_ptr, off + 4, m))
    emit(out_ptr, idx, v, m, div, MODE)


def encode_with_residual(x: torch.Tensor, e_in, e_out, bucket: int):
    """``(payload, nonfinite_residual_flag)``; with ``e_out``, ``p = x + e_in`` and the residual."""
    x = flat_f32(x)
    n = x.numel()
    nb = packed_nbytes(n, 1)
    out = empty_u8(nb + 8 * (-(-n // bucket)), x)
    nbuckets = -(-n // bucket)
    bb = max(1, min(128, triton.next_power_of_2(bucket) // 8))
    rows = max(1, 128 // triton.next_power_of_2(-(-bucket // 8)))
    grid = blocks(nbuckets, rows)
    bad = torch.zeros(grid[0], dtype=torch.uint8, device=x.device)
    if n:
        _onebit_encode[grid](
            x,
            x if e_in is None else e_in,
            x if e_out is None else e_out,
            out,
            bad,
            n,
            nb,
            nbuckets,
            bucket,
            HAS_E_IN=e_in is not None,
            EF=e_out is not None,
            ROWS=rows,
            BB=bb,
            **LAUNCH,
        )
    return out, bad


def encode(x: torch.Tensor, bucket: int) -> torch.Tensor:
    return encode_with_residual(x, None, None, bucket)[0]


def decode_into(payload: torch.Tensor, out: torch.Tensor, bucket: int, mode: int = 0, div: float = 1.0) -> None:
    n = out.numel()
    if n == 0:
        return
    _onebit_decode[blocks(n, VALUES_PER_PROGRAM)](
        payload, out, n, packed_nbytes(n, 1), bucket, float(div), MODE=mode, BLOCK=VALUES_PER_PROGRAM, **LAUNCH
    )
