"""QSGD (2/4/8 bits, max-abs or L2 norm per bucket) encode and decode in Triton.

Two launches per encode: one program per bucket writes the bucket's fp32 scale into the payload's
tail; then one program per block of payload bytes quantizes and packs the values of those bytes
(any bucket size: a byte may straddle two buckets). Decoding is one elementwise launch.
"""

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
    kernel_seed,
    load_f32_le,
    nan_if_nonfinite,
    quiet,
    store_f32_le,
)

BYTES_PER_PROGRAM = 1024
VALUES_PER_PROGRAM = 2048


@triton.jit
def _bucket_scales(
    x_ptr, out_ptr, n, nbuckets, bucket, ncode, L2: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr
):
    """``ROWS`` buckets per program (small buckets share a program), ``BLOCK`` values per step."""
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    col = tl.arange(0, BLOCK)
    if L2:
        acc = tl.zeros([ROWS, BLOCK], dtype=tl.float64)
    else:
        acc = tl.zeros([ROWS, BLOCK], dtype=tl.uint32)
    for off in range(0, bucket, BLOCK):
        idx = row[:, None] * bucket + off + col[None, :]
        m = (idx < n) & (off + col[None, :] < bucket) & (row[:, None] < nbuckets)
        x = tl.load(x_ptr + idx, mask=m, other=0.0)
        if L2:
            xd = x.to(tl.float64)
            acc += xd * xd
        else:  # max |x| on the bit patterns: monotonic for non-negative floats, NaN above Inf
            acc = tl.maximum(acc, x.to(tl.uint32, bitcast=True) & 0x7FFFFFFF)
    if L2:
        s = tl.sum(acc, axis=1)
        scale = nan_if_nonfinite(tl.sqrt(s).to(tl.float32))
        # an fp32 overflow of the sum of squares is NaN, as in the plain path
        scale = tl.where(
            s.to(tl.float32) < float("inf"), scale, tl.full([ROWS], QNAN_BITS, tl.uint32).to(tl.float32, bitcast=True)
        )
    else:
        m_bits = tl.max(acc, axis=1)
        m_bits = tl.where(m_bits >= 0x7F800000, QNAN_BITS, m_bits)
        scale = m_bits.to(tl.float32, bitcast=True)
    store_f32_le(out_ptr, ncode + 4 * row, scale, row < nbuckets)


@triton.jit(do_not_specialize=["seed"])
def _quantize_pack(
    x_ptr, noise_ptr, out_ptr, n, ncode, bucket, seed, BITS: tl.constexpr, HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr
):
    PER: tl.constexpr = 8 // BITS
    LEVELS: tl.constexpr = (1 << (BITS - 1)) - 1
    byte = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    lane = tl.arange(0, PER)
    idx = byte[:, None] * PER + lane[None, :]
    m = idx < n
    x = tl.load(x_ptr + idx, mask=m, other=0.0)
    scale = load_f32_le(out_ptr, ncode + 4 * (idx // bucket), m)
    # torch evaluates `levels / scales` as reciprocal(scales) * levels: two roundings
    inv = tl.where(scale > 0, tl.div_rn(tl.full(scale.shape, 1.0, tl.float32), scale) * LEVELS, 0.0)
    y = tl.abs(x) * inv
    if HAS_NOISE:
        u = tl.load(noise_ptr + idx, mask=m, other=0.0)
    else:
        u = tl.rand(seed, idx.to(tl.int32))
    small = y < 256.0  # false for NaN and Inf
    yc = tl.where(small, y, 0.0)
    fl = yc.to(tl.int32)
    frac = yc - fl.to(tl.float32)
    lvl = fl + (u < frac).to(tl.int32)
    lvl = tl.minimum(lvl, LEVELS)
    lvl = tl.where((~small) & (y == y), LEVELS, lvl)
    code = tl.where(x < 0, LEVELS - lvl, LEVELS + lvl)
    code = tl.where(m, code, 0).to(tl.uint32) << (lane[None, :] * BITS).to(tl.uint32)
    packed = tl.sum(code, axis=1)
    tl.store(out_ptr + byte, packed.to(tl.uint8), mask=byte < ncode)


@triton.jit
def _dequantize(p_ptr, out_ptr, n, ncode, bucket, div, BITS: tl.constexpr, MODE: tl.constexpr, BLOCK: tl.constexpr):
    PER: tl.constexpr = 8 // BITS
    LEVELS: tl.constexpr = (1 << (BITS - 1)) - 1
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = idx < n
    byte = tl.load(p_ptr + idx // PER, mask=m, other=0).to(tl.int32)
    code = (byte >> ((idx % PER) * BITS).to(tl.int32)) & ((1 << BITS) - 1)
    scale = load_f32_le(p_ptr, ncode + 4 * (idx // bucket), m)
    step = tl.div_rn(scale, tl.full(scale.shape, LEVELS, tl.float32))
    step = tl.where(scale == scale, step, quiet(scale))
    v = (code - LEVELS).to(tl.float32) * step
    v = tl.where(step == step, v, step)
    emit(out_ptr, idx, v, m, div, MODE)


def scale_buckets(x, out, n, bucket, ncode, l2):
    """Write each bucket's scale (fp32, little-endian) at ``out[ncode + 4 * b]``."""
    nbuckets = -(-n // bucket)
    block = min(1024, triton.next_power_of_2(bucket))
    rows = max(1, 1024 // block)
    _bucket_scales[blocks(nbuckets, rows)](x, out, n, nbuckets, bucket, ncode, L2=l2, ROWS=rows, BLOCK=block, **LAUNCH)


def encode(x: torch.Tensor, bits: int, bucket: int, norm: str, generator=None, noise=None) -> torch.Tensor:
    x = flat_f32(x)
    n = x.numel()
    ncode = packed_nbytes(n, bits)
    out = empty_u8(ncode + 4 * (-(-n // bucket)), x)
    if n == 0:
        return out
    scale_buckets(x, out, n, bucket, ncode, l2=norm == "l2")
    has_noise = noise is not None
    if has_noise:
        noise = flat_f32(noise.to(x.device))
        if noise.numel() != n:
            raise ValueError(f"hvd_compress: noise has {noise.numel()} values, {n} needed")
    seed = 0 if has_noise else kernel_seed(generator)
    _quantize_pack[blocks(ncode, BYTES_PER_PROGRAM)](
        x,
        noise if has_noise else x,
        out,
        n,
        ncode,
        bucket,
        seed,
        BITS=bits,
        HAS_NOISE=has_noise,
        BLOCK=BYTES_PER_PROGRAM,
        **LAUNCH,
    )
    return out


def decode_into(
    payload: torch.Tensor, out: torch.Tensor, bits: int, bucket: int, mode: int = 0, div: float = 1.0
) -> None:
    n = out.numel()
    if n == 0:
        return
    _dequantize[blocks(n, VALUES_PER_PROGRAM)](
        payload,
        out,
        n,
        packed_nbytes(n, bits),
        bucket,
        float(div),
        BITS=bits,
        MODE=mode,
        BLOCK=VALUES_PER_PROGRAM,
        **LAUNCH,
    )
