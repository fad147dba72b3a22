"""TernGrad encode (base-3 or 2-bit packing, shared scale from a device tensor) and decode in Triton.

The scale never leaves the device: ``local_scale`` is torch ops (fp64 sums, the C kernels'
arithmetic) and ``encode`` reads the agreed scale through a pointer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hvd_compress.common import base3_nbytes, packed_nbytes
from hvd_compress.torch.kernels.common import (
    LAUNCH,
    blocks,
    emit,
    empty_u8,
    flat_f32,
    is_finite,
    kernel_seed,
    load_f32_le,
    quiet,
)

BYTES_PER_PROGRAM = 512
VALUES_PER_PROGRAM = 2048


@triton.jit(do_not_specialize=["seed"])
def _ternarize_pack(
    x_ptr,
    s_ptr,
    noise_ptr,
    out_ptr,
    bad_ptr,
    n,
    ncode,
    seed,
    BASE3: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    PER: tl.constexpr = 5 if BASE3 else 4
    pid = tl.program_id(0)
    byte = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    lane = tl.arange(0, 8)
    idx = byte[:, None] * PER + lane[None, :]
    m = (idx < n) & (lane[None, :] < PER)
    x = tl.load(x_ptr + idx, mask=m, other=0.0)
    s = tl.load(s_ptr)
    valid = (s > 0) & is_finite(s)
    p = tl.div_rn(tl.abs(x), tl.where(valid, s, 1.0))
    p = tl.where(p > 1.0, 1.0, p)
    p = tl.where(valid, p, 0.0)  # no valid scale: every code is 1 (u < 0 never holds)
    if HAS_NOISE:
        u = tl.load(noise_ptr + idx, mask=m, other=0.0)
    else:
        u = tl.rand(seed, idx.to(tl.int32))
    hit = u < p
    code = tl.where(hit, tl.where(x < 0, 0, 2), 1)
    code = tl.where(m, code, 0)
    if BASE3:
        weight = tl.where(lane == 0, 1, tl.where(lane == 1, 3, tl.where(lane == 2, 9, tl.where(lane == 3, 27, 81))))
        packed = tl.sum(code * weight[None, :], axis=1)
    else:
        packed = tl.sum(code << (2 * lane[None, :]), axis=1)
    tl.store(out_ptr + byte, packed.to(tl.uint8), mask=byte < ncode)
    bad = tl.max(tl.max(tl.where(m & ~is_finite(x), 1, 0), axis=1), axis=0)
    tl.store(bad_ptr + pid, bad.to(tl.uint8))


@triton.jit
def _detern(p_ptr, out_ptr, bad_ptr, n, ncode, div, BASE3: tl.constexpr, MODE: tl.constexpr, BLOCK: tl.constexpr):
    PER: tl.constexpr = 5 if BASE3 else 4
    pid = tl.program_id(0)
    idx = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = idx < n
    byte = tl.load(p_ptr + idx // PER, mask=m, other=0).to(tl.int32)
    k = (idx % PER).to(tl.int32)
    if BASE3:
        div3 = tl.where(k == 0, 1, tl.where(k == 1, 3, tl.where(k == 2, 9, tl.where(k == 3, 27, 81))))
        code = (byte // div3) % 3
        tl.store(bad_ptr + pid, tl.max(tl.where(m & (byte >= 243), 1, 0), axis=0).to(tl.uint8))
    else:
        code = (byte >> (2 * k)) & 3
    s = load_f32_le(p_ptr, tl.zeros([BLOCK], tl.int64) + ncode, m)
    v = (code - 1).to(tl.float32) * s
    v = tl.where(s == s, v, quiet(s))  # a NaN scale decodes to itself (quieted), as on the CPU
    emit(out_ptr, idx, v, m, div, MODE)


def local_scale(x: torch.Tensor, clip) -> torch.Tensor:
    """``min(max|x|, clip * std(x))`` as a 1-value device tensor, with the C kernels' arithmetic
    (std in fp64 around the fp32 mean, rounded once); NaN if any value is non-finite."""
    x = flat_f32(x)
    n = x.numel()
    if n == 0:
        return torch.zeros(1, device=x.device)
    s = x.abs().max().reshape(1)
    if clip is not None and n > 1:
        xd = x.double()
        mean = (xd.sum().float() / float(n)).double()
        sd = (((xd - mean) ** 2).sum() / (n - 1)).sqrt().float().reshape(1)
        cs = sd * torch.tensor(float(clip), dtype=torch.float32, device=x.device)
        s = torch.where((cs < s) | (cs != cs), cs, s)
    return torch.where(torch.isfinite(s), s, torch.full_like(s, float("nan")))


def encode(x: torch.Tensor, scale: torch.Tensor, base3: bool, generator=None, noise=None) -> torch.Tensor:
    x = flat_f32(x)
    n = x.numel()
    ncode = base3_nbytes(n) if base3 else packed_nbytes(n, 2)
    s = scale.reshape(1).to(device=x.device, dtype=torch.float32)
    out = empty_u8(ncode + 4, x)
    if n == 0:
        out.view(torch.float32).copy_(s)
        return out
    has_noise = noise is not None
    if has_noise:
        noise = flat_f32(noise.to(x.device))
        if noise.numel() != n:
            raise ValueError(f"hvd_compress: noise has {noise.numel()} values, {n} needed")
    grid = blocks(ncode, BYTES_PER_PROGRAM)
    bad = torch.empty(grid[0], dtype=torch.uint8, device=x.device)
    seed = 0 if has_noise else kernel_seed(generator)
    _ternarize_pack[grid](
        x,
        s,
        noise if has_noise else x,
        out,
        bad,
        n,
        ncode,
        seed,
        BASE3=base3,
        HAS_NOISE=has_noise,
        BLOCK=BYTES_PER_PROGRAM,
        **LAUNCH,
    )
    # a non-finite input makes the scale NaN (on the device: no host round trip)
    s = torch.where(bad.ne(0).any(), torch.full_like(s, float("nan")), s)
    out[ncode:].copy_(s.view(torch.uint8))
    return out


def decode_into(payload: torch.Tensor, out: torch.Tensor, base3: bool, mode: int = 0, div: float = 1.0) -> None:
    n = out.numel()
    if n == 0:
        return
    ncode = base3_nbytes(n) if base3 else packed_nbytes(n, 2)
    grid = blocks(n, VALUES_PER_PROGRAM)
    bad = torch.zeros(grid[0], dtype=torch.uint8, device=out.device)
    _detern[grid](payload, out, bad, n, ncode, float(div), BASE3=base3, MODE=mode, BLOCK=VALUES_PER_PROGRAM, **LAUNCH)
    if base3 and bool(bad.ne(0).any()):  # host sync (allow-listed): a corrupt payload must raise, not decode
        raise ValueError(f"hvd_compress: corrupt terngrad payload for {n} values (a base-3 byte above 242)")
