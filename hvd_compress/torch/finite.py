"""Exact "is every value finite?" checks that cost one reduction, not ``torch.isfinite(t).all()``.

Why: on the CPU ``torch.isfinite`` is not vectorized and allocates a bool tensor; on 138K fp32
values it takes about 200 us on one thread, a plain ``sum()`` about 8 us. The exchange checks every
averaged gradient each step, so on a 100-tensor, 7M-value model the check alone was about 34 ms of
a 140 ms step (profiled under ``horovodrun -np 2``).

Why a sum is enough: a NaN or an Inf among the values makes the sum NaN or Inf, so a finite sum
proves every value finite. The converse fails only when finite values overflow the sum; then the
slow exact check decides. Summing 16- and 32-bit floats in float64 cannot overflow (at most
2^31 values of at most 3.4e38), so :func:`finite_flag` is exact without a second pass.
"""

from __future__ import annotations

import torch

_WIDE = (torch.float16, torch.bfloat16, torch.float32)


def sum_is_finite(t: torch.Tensor) -> torch.Tensor:
    """0-d bool on ``t``'s device, no host sync. True proves every value finite; False means a value
    is NaN/Inf *or* the sum overflowed: confirm with :func:`all_finite` before acting on it.
    16-bit floats are summed in fp32, where their sum rarely overflows (fp16 tops out at 65504)."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return torch.isfinite(t.sum(dtype=torch.float32))
    return torch.isfinite(t.sum())


def finite_flag(t: torch.Tensor) -> torch.Tensor:
    """0-d bool on ``t``'s device, no host sync, exact: every value of ``t`` is finite."""
    if not t.dtype.is_floating_point:
        return torch.ones((), dtype=torch.bool, device=t.device)
    if t.dtype in _WIDE:
        return torch.isfinite(t.sum(dtype=torch.float64))
    return torch.isfinite(t).all()


def all_finite(t: torch.Tensor) -> bool:
    """Exact, with one host read: every value of ``t`` is finite."""
    if not t.dtype.is_floating_point or t.numel() == 0:
        return True
    if bool(sum_is_finite(t)):  # host sync (allow-listed): the caller asked for a Python bool
        return True
    return bool(torch.isfinite(t).all())  # host sync (allow-listed): rare path, sum overflowed or non-finite
