"""The cheap non-finite checks (:mod:`hvd_compress.torch.finite`) are exact: a finite sum proves
every value finite, and a sum that overflows on finite values is never taken for a NaN."""

from __future__ import annotations

import pytest
import torch

import hvd_compress.torch as hc
from hvd_compress.torch.exchange import Exchange, WireStats, drive
from hvd_compress.torch.finite import all_finite, finite_flag, sum_is_finite

from local_comm import run_workers

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
BIG = {torch.float16: 6e4, torch.bfloat16: 3e38, torch.float32: 3e38, torch.float64: 1e308}


def cases(dtype):
    """(tensor, every value finite?) pairs, the overflowing sum among them."""
    n = 1000
    ok = torch.randn(n).to(dtype)
    huge = torch.full((n,), BIG[dtype], dtype=dtype)  # finite, but its sum overflows
    out = [(ok, True), (huge, True), (ok[:0], True), (ok[:1], True)]
    for bad in (float("nan"), float("inf"), float("-inf")):
        for where in (0, n // 2, n - 1):
            t = ok.clone()
            t[where] = bad
            out.append((t, False))
            h = huge.clone()
            h[where] = bad
            out.append((h, False))
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_finite_and_finite_flag_are_exact(dtype):
    for t, finite in cases(dtype):
        assert all_finite(t) is finite
        assert bool(finite_flag(t)) is finite
        assert bool(finite_flag(t)) is bool(torch.isfinite(t).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_finite_sum_proves_every_value_finite(dtype):
    for t, finite in cases(dtype):
        if bool(sum_is_finite(t)):
            assert finite


def test_integer_tensors_are_finite():
    assert all_finite(torch.arange(10)) and bool(finite_flag(torch.arange(10, dtype=torch.int32)))


@pytest.mark.parametrize("spec", ["onebit", "qsgd:bits=4", "none"])
def test_huge_but_finite_gradients_do_not_raise_and_a_nan_still_does(spec):
    """The exchange flags each averaged tensor with a finite *sum* and confirms a false flag
    exactly: an average whose sum overflows fp32 passes; a NaN on one rank raises on every rank."""

    def work(comm):
        ex = Exchange(hc.from_spec(spec), comm, stats=WireStats())
        huge = torch.full((64, 64), 1e35)  # each bucket's sum fits fp32, the whole tensor's does not
        out = drive({"w": ex.average("w", huge)})["w"]
        assert torch.isfinite(out).all() and not torch.isfinite(out.sum())
        bad = torch.randn(64, 64)
        if comm.rank == 1:
            bad[5, 5] = float("nan")
        try:
            drive({"w": ex.average("w", bad)})
        except FloatingPointError as exc:
            return "'w'" in str(exc)
        return False

    assert run_workers(2, work) == [True, True]


def test_16_bit_floats_are_summed_in_fp32():
    """1000 x 100 overflows an fp16 sum (65504 at most), not the fp32 one: no slow re-check for
    ordinary fp16 gradients."""
    assert bool(sum_is_finite(torch.full((1000,), 100.0, dtype=torch.float16)))
    assert not bool(sum_is_finite(torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)))
