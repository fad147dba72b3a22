"""TopK packing in Triton: selection by ``torch.topk`` on the device (canonical: ties at the k-th
magnitude go to the lower indices), then one kernel scatters the kept indices (int32, ascending)
and values into the payload. No host round trip: the tie count stays a device tensor."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hvd_compress.torch.kernels.common import LAUNCH, blocks, flat_f32

VALUES_PER_PROGRAM = 2048


@triton.jit
def _scatter_kept(x_ptr, keep_ptr, pos_ptr, idx_out, val_out, n, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    keep = tl.load(keep_ptr + i, mask=m, other=0) != 0
    pos = tl.load(pos_ptr + i, mask=m, other=0)
    w = m & keep
    tl.store(idx_out + pos, i.to(tl.int32), mask=w)
    tl.store(val_out + pos, tl.load(x_ptr + i, mask=w, other=0.0), mask=w)


@triton.jit
def _scatter_add(p_ptr, out_ptr, bad_ptr, k, n, BLOCK: tl.constexpr):
    j = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = j < k
    idx = tl.load(p_ptr.to(tl.pointer_type(tl.int32)) + j, mask=m, other=0)
    val = tl.load(p_ptr.to(tl.pointer_type(tl.float32)) + k + j, mask=m, other=0.0)
    ok = m & (idx >= 0) & (idx < n)
    tl.store(bad_ptr + tl.program_id(0), tl.max(tl.where(m & ~ok, 1, 0), axis=0).to(tl.uint8))
    tl.store(out_ptr + idx, tl.load(out_ptr + idx, mask=ok, other=0.0) + val, mask=ok)


def encode(x: torch.Tensor, k: int) -> torch.Tensor:
    x = flat_f32(x)
    n = x.numel()
    out = torch.empty(8 * k, dtype=torch.uint8, device=x.device)
    if k == 0:
        return out
    mag = torch.nan_to_num(x.abs(), nan=float("inf"))
    kth = torch.topk(mag, k, sorted=False).values.min()
    above = mag > kth
    ties = mag == kth
    ties &= torch.cumsum(ties, 0) <= k - above.sum()
    keep = above | ties
    pos = torch.cumsum(keep, 0) - 1
    idx_out, val_out = out[: 4 * k].view(torch.int32), out[4 * k :].view(torch.float32)
    _scatter_kept[blocks(n, VALUES_PER_PROGRAM)](
        x, keep.view(torch.uint8), pos, idx_out, val_out, n, BLOCK=VALUES_PER_PROGRAM, **LAUNCH
    )
    # a non-finite gradient must not pass as a finite one
    val_out[:1] = torch.where(torch.isfinite(x).all(), val_out[:1], torch.full_like(val_out[:1], float("nan")))
    return out


def add_into(payload: torch.Tensor, out: torch.Tensor, k: int) -> None:
    """``out[idx] += values`` for one payload (indices are distinct within a payload)."""
    if k == 0:
        return
    if payload.data_ptr() % 4:  # a slice of a receive buffer: realign for the int32/fp32 loads
        payload = payload.clone()
    grid = blocks(k, VALUES_PER_PROGRAM)
    bad = torch.empty(grid[0], dtype=torch.uint8, device=out.device)
    _scatter_add[grid](payload, out, bad, k, out.numel(), BLOCK=VALUES_PER_PROGRAM, **LAUNCH)
    if bool(bad.ne(0).any()):  # host sync (allow-listed): out-of-range indices must raise, not write elsewhere
        raise ValueError(
            f"hvd_compress: malformed topk payload for {out.numel()} values: " f"indices outside [0, {out.numel()})"
        )


def decode(payload: torch.Tensor, numel: int, k: int) -> torch.Tensor:
    out = torch.zeros(numel, dtype=torch.float32, device=payload.device)
    if numel:
        add_into(payload, out, k)
    return out


def aggregate(payloads, numel: int, k: int) -> torch.Tensor:
    out = torch.zeros(numel, dtype=torch.float32, device=payloads[0].device)
    for p in payloads:
        add_into(p, out, k)
    return out.div_(len(payloads))
