"""Shared pieces of the Triton kernels: little-endian fp32 in byte payloads, launch options, seeds.

Imported only when the Triton backend runs (it imports triton; see ``backend.py``).

Exactness rules every kernel follows, so payloads are byte-identical to the native C kernels and
the plain torch path given the same uniforms:

* fp32 division and square roots are IEEE round-to-nearest (``tl.div_rn``, fp64 ``sqrt``), never
  the approximate defaults; kernels launch with ``enable_fp_fusion=False`` (no FMA contraction,
  as the C kernels build with ``-ffp-contract=off``);
* sums (L2 norms, OneBit's means, mean |x|) are accumulated in fp64 and rounded to fp32 once, as
  the C kernels do: equal to the plain path whenever its fp32 sum is exact, and to the C kernels
  except on a double-rounding tie (probability about 2**-29 per sum);
* NaN bit patterns are selected, never produced by arithmetic (GPUs canonicalise NaNs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hvd_compress._native.ops import draw_seed, flat_f32

QNAN_BITS = 0x7FC00000
LAUNCH = {"enable_fp_fusion": False}


def kernel_seed(generator) -> int:
    """The in-kernel stream's seed: one 63-bit draw from the codec's (CPU) generator, so it is a
    pure function of (seed, rank, step, tensor name, chunk) like the native stream. The draw runs
    on the host generator: no device synchronisation. Bit 62 is set so Triton always types it
    int64 (one compiled variant)."""
    return (draw_seed(generator) & ((1 << 62) - 1)) | (1 << 62)


@triton.jit
def load_f32_le(base, offs, mask):
    """fp32 values stored little-endian at byte offsets ``offs`` (any alignment) of ``base``."""
    b0 = tl.load(base + offs, mask=mask, other=0).to(tl.uint32)
    b1 = tl.load(base + offs + 1, mask=mask, other=0).to(tl.uint32)
    b2 = tl.load(base + offs + 2, mask=mask, other=0).to(tl.uint32)
    b3 = tl.load(base + offs + 3, mask=mask, other=0).to(tl.uint32)
    return (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)).to(tl.float32, bitcast=True)


@triton.jit
def store_f32_le(base, offs, value, mask):
    bits = value.to(tl.uint32, bitcast=True)
    tl.store(base + offs, (bits & 0xFF).to(tl.uint8), mask=mask)
    tl.store(base + offs + 1, ((bits >> 8) & 0xFF).to(tl.uint8), mask=mask)
    tl.store(base + offs + 2, ((bits >> 16) & 0xFF).to(tl.uint8), mask=mask)
    tl.store(base + offs + 3, ((bits >> 24) & 0xFF).to(tl.uint8), mask=mask)


@triton.jit
def is_finite(x):
    return (x.to(tl.uint32, bitcast=True) & 0x7FFFFFFF) < 0x7F800000


@triton.jit
def nan_if_nonfinite(x):
    return tl.where(is_finite(x), x, tl.full(x.shape, QNAN_BITS, tl.uint32).to(tl.float32, bitcast=True))


@triton.jit
def quiet(x):
    """``x`` with the quiet bit set (what x86 arithmetic does to a NaN operand)."""
    return (x.to(tl.uint32, bitcast=True) | 0x00400000).to(tl.float32, bitcast=True)


@triton.jit
def emit(out_ptr, offs, v, mask, div, MODE: tl.constexpr):
    """Decoded values into ``out``: 0: ``out = v``; 1: ``out += v``; 2: ``out = (out + v) / div``
    (the aggregate's ``d0 + d1 + ...``, then ``/ k``, as the plain path computes it)."""
    if MODE == 0:
        tl.store(out_ptr + offs, v, mask=mask)
    else:
        acc = tl.load(out_ptr + offs, mask=mask, other=0.0) + v
        if MODE == 2:
            acc = tl.div_rn(acc, div)
        tl.store(out_ptr + offs, acc, mask=mask)


def empty_u8(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(n, dtype=torch.uint8, device=like.device)


def blocks(n: int, block: int) -> tuple:
    return (max(1, triton.cdiv(n, block)),)


def aggregate(decode_into, payloads, numel: int, device, *args) -> torch.Tensor:
    """Mean of decoded payloads, fused: each payload's values are added in place (no temporaries)."""
    out = torch.empty(numel, dtype=torch.float32, device=device)
    k = len(payloads)
    if numel == 0:
        return out
    for i, p in enumerate(payloads):
        mode = 0 if i == 0 else (2 if i == k - 1 else 1)
        decode_into(p, out, *args, mode=mode, div=float(k))
    return out


def fused_feedback(encode, x: torch.Tensor, residual, bounds, *args):
    """One error-feedback step through a fused Triton encoder, as
    :func:`hvd_compress._native.ops.fused_feedback` does on the CPU: per chunk ``(a, b)``,
    ``p = x + residual``, the payload of ``p`` and ``residual = p - decode(payload)`` written in
    place; a residual holding a non-finite value is zeroed (on the device, without a host round
    trip). ``encode(x, e_in, e_out, *args)`` returns ``(payload, nonfinite_flag_tensor)``.
    Returns ``(payloads, residual)``, or ``None`` for a residual the kernels do not take."""
    x = flat_f32(x)
    n = x.numel()
    if residual is None or residual.numel() != n:
        e_in, e_out = None, torch.empty(n, dtype=torch.float32, device=x.device)
    elif residual.dtype != torch.float32 or residual.device != x.device or not residual.is_contiguous():
        return None
    else:
        e_in = e_out = residual.view(-1)
    payloads, flags = [], []
    for a, b in bounds:
        payload, bad = encode(x[a:b], None if e_in is None else e_in[a:b], e_out[a:b], *args)
        payloads.append(payload)
        flags.append(bad)
    if flags:
        e_out.masked_fill_(torch.cat(flags).ne(0).any().reshape(1), 0.0)
    return payloads, e_out
