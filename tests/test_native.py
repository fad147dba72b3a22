"""Spec: the native kernels (hvd_compress/_native) are the plain torch codecs, only faster.

* Same bytes: for the same input and the same uniforms (``noise=``), every payload, decoded value
  (NaN bit patterns included) and aggregate equals the plain path's, for every option, at ragged
  sizes, for non-contiguous and fp16/bf16/fp64 inputs and with NaN/Inf. The only allowed
  difference: scales that are sums (OneBit's means, EFSign's mean |x|, QSGD's L2 norm) on inputs
  whose fp32 sums round -- the kernels sum in double and round once, torch sums in fp32; they
  stay within a few ulp and the codes are unaffected.
* Same results on 1 or 2 threads, with the AVX2 loops or the scalar reference loops.
* The error-feedback step fused into one kernel equals the unfused one bit for bit.
* Without ``noise=`` the kernels draw 24-bit uniforms from their own counter-based stream seeded
  by one draw from the codec's generator: uniform, unbiased, deterministic per seed.
* ``HVD_COMPRESS_NATIVE=0`` and a missing compiler fall back to the plain path (warned once).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hvd_compress.torch as hc
from hvd_compress import _native
from hvd_compress._native import ops
from hvd_compress.common import chunk_bounds, packed_nbytes

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    _native.load() is None, reason=f"native kernels unavailable: {_native.unavailable_reason()}"
)

SPECS = [
    "qsgd:bits=2,bucket_size=128",
    "qsgd:bits=4",
    "qsgd:bits=8",
    "qsgd:bits=4,bucket_size=100",
    "qsgd:bits=4,bucket_size=7",
    "qsgd:bits=2,bucket_size=9",
    "qsgd:bits=4,norm=l2",
    "qsgd:bits=8,norm=l2,bucket_size=1000",
    "terngrad",
    "terngrad:packing=2bit",
    "terngrad:clip=none",
    "onebit",
    "onebit:bucket_size=64",
    "onebit:bucket_size=8",
    "efsign",
]
SIZES = [0, 1, 7, 100, 1001, 40_001, 1 << 20]
TORCH_ULPS = {
    "efsign": 1,
    "onebit": 3,
    "onebit:bucket_size=64": 7,
    "qsgd:bits=4,norm=l2": 2,
    "qsgd:bits=8,norm=l2,bucket_size=1000": 2,
}
SUM_SCALED = {
    "qsgd:bits=4,norm=l2",
    "qsgd:bits=8,norm=l2,bucket_size=1000",
    "onebit",
    "onebit:bucket_size=64",
    "onebit:bucket_size=8",
    "efsign",
}


def quantizer(spec):
    q = hc.from_spec(spec)
    while hasattr(q, "inner"):
        q = q.inner
    return q


def grid(n, seed):
    """Multiples of 1/16 with zeros, -0.0 and an all-zero run: every fp32 sum is exact."""
    x = torch.randint(-16, 17, (n,), generator=torch.Generator().manual_seed(seed)).float() / 16
    x[5:9] = 0.0
    x[9:10] = -0.0
    x[1024:2048] = 0.0
    return x


def randn(n, seed):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 1e-3


def encode(q, x, native, seed=0, noise=True, scale=None):
    """Payload of ``x`` on one path; stochastic codecs get explicit uniforms (the same on both)."""
    kw = {}
    if q.stochastic and noise:
        kw["noise"] = torch.rand(x.numel(), generator=torch.Generator().manual_seed(seed + 99))
    with _native.forced(native):
        if q.shared_scale and scale is None:
            scale = q.local_scale(x)
        return q.encode(x, torch.Generator().manual_seed(seed), scale, **kw)


def decode(q, payload, n, native):
    with _native.forced(native):
        return q.decode(payload, n)


def bits_equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def scales_of(q, payload, n):
    ncode = q._code_nbytes(n) if q.name == "terngrad" else packed_nbytes(n, getattr(q, "bits", 1))
    return payload[:ncode], payload[ncode:].clone().view(torch.float32)


def ulps(a, b):
    return (a.view(torch.int32).long() - b.view(torch.int32).long()).abs()


# --------------------------------------------------------------------------- same bytes as plain
@pytest.mark.parametrize("spec", SPECS)
def test_payload_decode_and_aggregate_equal_the_plain_path(spec):
    q = quantizer(spec)
    for n in SIZES:
        xs = [grid(n, n + i) for i in range(3)]
        native = [encode(q, x, True, seed=i) for i, x in enumerate(xs)]
        plain = [encode(q, x, False, seed=i) for i, x in enumerate(xs)]
        for a, b in zip(native, plain):
            assert torch.equal(a, b), f"{spec} n={n}: payload"
        assert bits_equal(decode(q, native[0], n, True), decode(q, native[0], n, False)), f"{spec} n={n}"
        with _native.forced(True):
            agg_native = q.aggregate(native, n)
            one_native = q.aggregate(native[:1], n)
        with _native.forced(False):
            agg_plain = q.aggregate(native, n)
            one_plain = q.aggregate(native[:1], n)
        assert bits_equal(agg_native, agg_plain), f"{spec} n={n}: aggregate"
        assert bits_equal(one_native, one_plain), f"{spec} n={n}: aggregate of one"


def true_scales(q, x):
    """The sum-based scales computed in fp64 and rounded once to fp32."""
    n = x.numel()
    if q.name == "scaled_sign":
        return x.double().abs().mean().float().reshape(1)
    size = q.bucket_size
    b = torch.cat([x, x.new_zeros((-n) % size)]).double().view(-1, size)
    if q.name == "qsgd":
        return b.norm(dim=1).float()
    valid = torch.arange(b.numel()).view_as(b) < n
    pos, neg = (b >= 0) & valid, (b < 0) & valid
    pm = torch.where(pos.sum(1) > 0, (b * pos).sum(1) / pos.sum(1).clamp(min=1), 0.0)
    nm = torch.where(neg.sum(1) > 0, (b * neg).sum(1) / neg.sum(1).clamp(min=1), 0.0)
    return torch.stack([pm, nm], 1).view(-1).float()


@pytest.mark.parametrize("spec", SPECS)
def test_generic_inputs_codes_equal_sum_scales_correctly_rounded(spec):
    """randn inputs: max-norm QSGD and TernGrad stay byte-identical. For sum-based scales the codes
    are identical and the kernels' scales are the fp64 value rounded once to fp32, where torch's
    fp32 sums are off by up to 3 ulp (default buckets; more in 8-value OneBit buckets, whose
    negative mean torch takes as sum - pos_sum)."""
    q = quantizer(spec)
    for n in (1001, 1 << 20):
        x = randn(n, 5)
        a, b = encode(q, x, True), encode(q, x, False)
        if spec not in SUM_SCALED:
            assert torch.equal(a, b), f"{spec} n={n}"
            continue
        (ca, sa), (cb, sb) = scales_of(q, a, n), scales_of(q, b, n)
        assert torch.equal(ca, cb), f"{spec} n={n}: codes"
        assert torch.equal(sa, true_scales(q, x)), f"{spec} n={n}: not correctly rounded"
        # how far torch's fp32 sums are from it, measured on these inputs (deterministic): 1-3 ulp
        # at default buckets, 7 in 64-value OneBit buckets, thousands in 8-value ones, where torch
        # takes the negative mean as (sum - pos_sum) and cancels
        bound = TORCH_ULPS.get(spec)
        if bound is not None:
            assert int(ulps(sa, sb).max()) <= bound, f"{spec} n={n}"
        # decoding the same payload is bit-identical on both paths
        assert bits_equal(decode(q, a, n, True), decode(q, a, n, False))


@pytest.mark.parametrize("spec", ["qsgd:bits=4", "qsgd:bits=4,norm=l2", "terngrad", "onebit", "efsign"])
def test_other_dtypes_shapes_and_strides_are_converted_first(spec):
    """fp16/bf16/fp64, 2-D and non-contiguous inputs: both paths encode ``x.reshape(-1).float()``."""
    q = quantizer(spec)
    base = grid(8192, 3)
    for x in (
        base.half(),
        base.bfloat16(),
        base.double(),
        base.view(64, 128),
        base.view(128, 64).t(),
        base[::2],
        grid(3001, 4)[1:],
    ):
        flat = x.reshape(-1).float().contiguous()
        scale = q.local_scale(flat) if q.shared_scale else None
        a = encode(q, x, True, scale=scale)
        assert torch.equal(a, encode(q, x, False, scale=scale)), f"{spec} {x.dtype} {tuple(x.stride())}"
        assert torch.equal(a, encode(q, flat, True, scale=scale))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_inputs_behave_as_on_the_plain_path(spec, bad):
    q = quantizer(spec)
    for n, where in ((3000, [1234]), (5000, [0, 4999]), (1, [0])):
        x = grid(n, 1)
        x[where] = bad
        scale = None
        if q.shared_scale:  # the exchange agrees a finite scale from the other ranks
            scale = torch.tensor([0.75])
        a, b = encode(q, x, True, scale=scale), encode(q, x, False, scale=scale)
        assert torch.equal(a, b), f"{spec} {bad} n={n}"
        da = decode(q, a, n, True)
        assert bits_equal(da, decode(q, a, n, False))
        assert not torch.isfinite(da).all()
        if q.name == "terngrad":  # the local scale of a non-finite tensor is NaN on both paths
            with _native.forced(True):
                sa = q.local_scale(x)
            with _native.forced(False):
                sb = q.local_scale(x)
            assert bits_equal(sa, sb)


def test_subnormal_and_zero_scales():
    for spec in ("qsgd:bits=4", "qsgd:bits=2,bucket_size=128", "terngrad", "onebit", "efsign"):
        q = quantizer(spec)
        for x in (grid(3001, 2) * 2.0**-140, torch.zeros(3001), -torch.zeros(3001)):
            scale = q.local_scale(x) if q.shared_scale else None
            a = encode(q, x, True, scale=scale)
            assert torch.equal(a, encode(q, x, False, scale=scale)), spec
            assert bits_equal(decode(q, a, 3001, True), decode(q, a, 3001, False))


def test_terngrad_local_scale_equals_torch():
    """min(max|x|, clip * std): the kernels reproduce torch's std (fp32 mean, squared deviations in
    double) exactly, here on shifted data where the mean matters."""
    for n, shift in ((2, 0.0), (1001, 0.0), (300_007, 1e-3), (1 << 20, -2e-3)):
        x = randn(n, n) + shift
        for clip in (2.5, 0.5, None):
            q = hc.TernGrad(clip=clip)
            with _native.forced(True):
                a = q.local_scale(x)
            with _native.forced(False):
                b = q.local_scale(x)
            assert bits_equal(a, b), (n, clip)


# --------------------------------------------------------------------------- determinism
def _all_outputs(spec, x, steps=2):
    """Payloads (generator-drawn noise), decodes and EF residuals of a few worker steps."""
    codec = hc.from_spec(spec)
    q = quantizer(spec)
    out = [encode(q, x, True, seed=3, noise=False)]
    out.append(q.decode(out[0], x.numel()))
    out.append(q.aggregate([out[0], encode(q, -x, True, seed=4, noise=False)], x.numel()))
    if q.shared_scale:
        out.append(q.local_scale(x))
    bounds = chunk_bounds(x.numel(), 3, codec.alignment())
    draw = lambda i, p: torch.Generator().manual_seed(10 * i + p)  # noqa: E731
    for step in range(steps):
        out += codec.worker_encode(x * (step + 1), "w", bounds, draw, q.local_scale(x) if q.shared_scale else None)
        res = codec.state.get("residual", {}).get("w")
        if res is not None:
            out.append(res.clone())
    return out


@pytest.mark.parametrize("spec", SPECS)
def test_results_do_not_depend_on_the_thread_count(spec, monkeypatch):
    x = randn((1 << 20) + 13, 6)
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("HVD_COMPRESS_THREADS", threads)
        results.append(_all_outputs(spec, x))
    for a, b in zip(*results):
        assert bits_equal(a, b) if a.dtype == torch.float32 else torch.equal(a, b)


@pytest.mark.parametrize("spec", SPECS)
def test_avx2_loops_equal_the_scalar_reference_loops(spec):
    lib = _native.load()
    if lib.hvdc_set_simd(1) != 1:
        pytest.skip("no AVX2 on this CPU: only the scalar loops run")
    x = randn(200_003, 7)
    x[::97] = torch.round(x[::97] * 1e3) / 1e3  # exact zeros, ties
    try:
        fast = _all_outputs(spec, x)
        lib.hvdc_set_simd(0)
        scalar = _all_outputs(spec, x)
    finally:
        lib.hvdc_set_simd(1)
    for a, b in zip(fast, scalar):
        assert bits_equal(a, b) if a.dtype == torch.float32 else torch.equal(a, b)


@pytest.mark.parametrize("spec", ["onebit", "onebit:bucket_size=64", "efsign"])
def test_fused_error_feedback_equals_the_unfused_step(spec, monkeypatch):
    """The fused kernel (p = g + e; C(p); e = p - decode(C(p)) in one pass) vs the generic wrapper
    calling the same native encode and decode: payloads and residuals bit for bit, over steps,
    chunks, a non-finite gradient (residual reset to zero) and a tensor whose size changes."""
    fused, unfused = hc.from_spec(spec), hc.from_spec(spec)
    monkeypatch.setattr(unfused.inner, "encode_with_residual", None)  # this instance only
    draw = lambda i, p: None  # noqa: E731
    gradients = [randn(50_001, s) for s in range(3)]
    gradients.insert(2, gradients[0].clone().index_fill_(0, torch.tensor([777]), float("nan")))
    gradients.append(randn(4099, 9))  # another size: starts from a zero residual
    residual_before = None
    for step, g in enumerate(gradients):
        bounds = chunk_bounds(g.numel(), 3, fused.alignment())
        pf = fused.worker_encode(g, "w", bounds, draw)
        pu = unfused.worker_encode(g, "w", bounds, draw)
        for a, b in zip(pf, pu):
            assert torch.equal(a, b), f"step {step}"
        rf, ru = fused.state["residual"]["w"], unfused.state["residual"]["w"]
        assert bits_equal(rf, ru), f"step {step}"
        if step == 2:
            assert torch.equal(rf, torch.zeros_like(rf))  # a non-finite residual is never carried
        if residual_before is not None and residual_before.numel() == rf.numel():
            assert rf is residual_before  # updated in place: no tensor-sized temporaries
        residual_before = rf


def test_error_feedback_identity_holds_on_the_native_path():
    codec = hc.OneBit()
    bounds = [(0, 30_000), (30_000, 50_000)]
    old = torch.zeros(50_000)
    for step in range(3):
        g = randn(50_000, step)
        payloads = codec.worker_encode(g, "w", bounds, lambda i, p: None)
        decoded = torch.cat([codec.decode(p, b - a) for p, (a, b) in zip(payloads, bounds)])
        new = codec.state["residual"]["w"]
        assert torch.equal(new, (g + old) - decoded)
        old = new.clone()


@pytest.mark.parametrize("spec", SPECS)
def test_decode_into_a_slice_equals_decode(spec):
    """The exchange decodes each chunk straight into its slice of the output tensor."""
    q = quantizer(spec)
    x = randn(10_007, 3)
    payload = encode(q, x, True)
    out = torch.full((10_007 + 20,), 7.0)
    q.decode_into(payload, out[10:10_017])
    assert bits_equal(out[10:10_017], decode(q, payload, 10_007, False))
    assert torch.equal(out[:10], torch.full((10,), 7.0)) and torch.equal(out[-10:], torch.full((10,), 7.0))


@pytest.mark.parametrize("spec", ["onebit", "efsign", "doublesqueeze:codec=onebit", "qsgd:bits=4"])
def test_three_worker_reduce_scatter_exchange(spec):
    """The whole exchange (alltoall of chunk payloads, owner's aggregate and re-encode, allgather,
    decode into the output) over 3 simulated workers: replicas identical; for the deterministic
    codecs the plain path's result up to the last bits of the owner's re-encoded scales (it
    re-encodes a mean of three payloads, whose sums round)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from local_comm import run_workers
    from hvd_compress.torch.exchange import Exchange, WireStats, drive

    def run(native):
        def work(comm):
            codec = hc.from_spec(spec)
            ex = Exchange(codec, comm, stats=WireStats())
            return [
                drive({"w": ex.average("w", grid(6400, 10 * comm.rank + step).view(64, 100))})["w"] for step in range(2)
            ]

        with _native.forced(native):
            return run_workers(3, work)

    native, plain = run(True), run(False)
    for step in range(2):
        assert all(torch.equal(native[0][step], r[step]) for r in native)  # replicas
        mean = sum(grid(6400, 10 * r + step) for r in range(3)).view(64, 100) / 3
        assert float((native[0][step] - mean).abs().mean()) < float(mean.abs().mean())
    if not quantizer(spec).stochastic:
        for step in range(2):  # a few ulp of a scale, relative 1e-6 (see the module docstring)
            torch.testing.assert_close(native[0][step], plain[0][step], rtol=1e-6, atol=0)


# --------------------------------------------------------------------------- the kernels' RNG
def test_kernel_uniforms_are_uniform_on_the_24_bit_grid():
    n = 1 << 21
    u = ops.noise_for_test(12345, 0, n).double()
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert torch.equal(u * 2**24, torch.floor(u * 2**24))  # k / 2**24, as torch.rand's float32
    se = math.sqrt(1 / 12 / n)
    # 5 standard errors: a false alarm has probability below 1e-6 per statistic
    assert abs(float(u.mean()) - 0.5) < 5 * se
    assert abs(float(u.var()) - 1 / 12) < 5 * math.sqrt(1 / 180 / n)  # var of (U - 1/2)^2 is 1/180
    for p in (1e-3, 0.3, 0.5, 0.999):
        frac = float((u < p).double().mean())
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)
    for lag in (1, 2, 8):  # neighbours (same and different 64-bit hashes) are uncorrelated
        c = u - 0.5
        r = float((c[:-lag] * c[lag:]).mean() / c.var())
        assert abs(r) < 5 / math.sqrt(n)
    counts = torch.bincount((u * 64).long(), minlength=64).double()  # chi-square, 63 dof
    chi2 = float(((counts - n / 64) ** 2 / (n / 64)).sum())
    assert chi2 < 63 + 5 * math.sqrt(2 * 63)


def test_kernel_uniforms_are_counter_based_and_keyed_by_seed():
    a = ops.noise_for_test(7, 0, 1000)
    assert torch.equal(ops.noise_for_test(7, 333, 500), a[333:833])  # any slice, any start parity
    b = ops.noise_for_test(8, 0, 1000)
    assert float(((a - 0.5) * (b - 0.5)).mean().abs()) < 5 / math.sqrt(1000) / 12


def test_generator_seeds_the_kernel_stream_deterministically():
    """encode(x, g) == encode(x, noise=<the kernel stream seeded by one draw from g>)."""
    x = randn(100_003, 1)
    for spec in ("qsgd:bits=4", "terngrad"):
        q = quantizer(spec)
        s = q.local_scale(x) if q.shared_scale else None
        a = q.encode(x, torch.Generator().manual_seed(5), s)
        seed = ops.draw_seed(torch.Generator().manual_seed(5))
        b = q.encode(x, None, s, noise=ops.noise_for_test(seed, 0, x.numel()))
        assert torch.equal(a, b)
        assert torch.equal(a, q.encode(x, torch.Generator().manual_seed(5), s))
        assert not torch.equal(a, q.encode(x, torch.Generator().manual_seed(6), s))


@pytest.mark.parametrize("spec", ["qsgd:bits=2,bucket_size=128", "qsgd:bits=4", "terngrad:clip=none"])
def test_native_stochastic_rounding_is_unbiased(spec):
    q = quantizer(spec)
    x = torch.randn(2000, generator=torch.Generator().manual_seed(1)) * torch.linspace(0.01, 3, 2000)
    trials = 2000
    scale = q.local_scale(x) if q.shared_scale else None
    total = torch.zeros(2000, dtype=torch.float64)
    with _native.forced(True):
        for t in range(trials):
            total += q.decode(q.encode(x, torch.Generator().manual_seed(t), scale), 2000).double()
    step = x.abs().max() / getattr(q, "levels", 1)  # the largest level step of any bucket
    # one draw's deviation is at most a step (sd <= step/2); 6 SE bounds the max over 2000 values
    assert float(((total / trials).float() - x).abs().max()) <= 6 * float(step) / 2 / math.sqrt(trials)


# --------------------------------------------------------------------------- fallback and build
def test_switching_off_gives_the_torch_rand_stream(monkeypatch):
    """HVD_COMPRESS_NATIVE=0: the plain path draws torch.rand from the generator (what the kernels
    reproduce byte for byte when handed the same uniforms)."""
    x = randn(30_001, 2)
    monkeypatch.setenv("HVD_COMPRESS_NATIVE", "0")
    q = quantizer("qsgd:bits=4")  # the setting is read when a codec is built
    assert not _native.enabled() and q.plan.path(x) == "plain"
    plain = q.encode(x, torch.Generator().manual_seed(4))
    monkeypatch.delenv("HVD_COMPRESS_NATIVE")
    assert _native.enabled() and q.plan.path(x) == "plain"
    q = quantizer("qsgd:bits=4")
    assert q.plan.path(x) == "native"
    noise = torch.rand(x.numel(), generator=torch.Generator().manual_seed(4))
    assert torch.equal(plain, q.encode(x, None, noise=noise))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_run_the_kernels_single_threaded():
    """After the parent ran a 2-thread kernel, a forked child still encodes (GNU OpenMP's pool does
    not survive fork; a 2-thread region in the child would hang) and gets the same bytes."""
    code = (
        "import os, torch, hvd_compress.torch as hc\n"
        "os.environ['HVD_COMPRESS_THREADS'] = '2'\n"
        "c = hc.QSGD(bits=4)\n"
        "x = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0))\n"
        "p = c.encode(x, torch.Generator().manual_seed(0))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    q = c.encode(x, torch.Generator().manual_seed(0))\n"
        "    os._exit(0 if bytes(q.numpy()) == bytes(p.numpy()) else 3)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    proc = _python(code, {})
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr[-2000:]


# ------------------------------------------------------------- TopK selection and signSGD's vote
def _topk_inputs(n):
    """Inputs that stress the sampled threshold: generic values, heavy ties, a constant chunk, and
    a chunk whose large values sit exactly on the sample's positions (the sample then overestimates
    the k-th magnitude and the kernel must fall back to taking every value)."""
    g = torch.Generator().manual_seed(n)
    yield "randn", torch.randn(n, generator=g)
    yield "ties", torch.randint(-3, 4, (n,), generator=g).float()
    yield "constant", torch.full((n,), -0.5)
    x = torch.randn(n, generator=g) * 1e-3
    stride = max(1, n // 16384)
    x[stride // 2 :: stride] = 1e3  # 16384 huge values, fewer than k for ratio 0.3
    yield "sample-trap", x
    x = torch.randn(n, generator=g)
    x[n // 3], x[n // 2], x[-1] = float("nan"), float("inf"), -float("inf")
    x[:7] = -0.0
    yield "non-finite", x


@pytest.mark.parametrize("ratio", [0.001, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("n", [1, 7, 1001, 65_536, 1 << 20])
def test_topk_selection_equals_torch_topk_bytes(n, ratio):
    """The sampled-threshold selection is exact: the payload is the plain path's byte for byte."""
    q = quantizer(f"topk:ratio={ratio}")
    for label, x in _topk_inputs(n):
        native, plain = encode(q, x, True), encode(q, x, False)
        assert torch.equal(native, plain), f"n={n} ratio={ratio} {label}"


def test_topk_threads_do_not_change_the_bytes(monkeypatch):
    q = quantizer("topk:ratio=0.01")
    x = randn(1 << 20, 3)
    monkeypatch.setenv("HVD_COMPRESS_THREADS", "1")
    one = encode(q, x, True)
    monkeypatch.setenv("HVD_COMPRESS_THREADS", "2")
    assert torch.equal(one, encode(q, x, True))


@pytest.mark.parametrize("spec", ["signsgd", "signsgd:scaled=false"])
@pytest.mark.parametrize("n", [1, 7, 1001, 40_001, 1 << 20])
def test_signsgd_encode_equals_the_plain_path(spec, n):
    q = quantizer(spec)
    cases = [grid(n, n), torch.zeros(n), torch.full((n,), 1e-45)]  # 1e-45: a subnormal mean
    x = grid(n, 1)
    x[n // 2] = float("nan")
    cases.append(x)
    x = grid(n, 2)
    x[0] = float("-inf")
    cases.append(x)
    for i, x in enumerate(cases):
        assert torch.equal(encode(q, x, True), encode(q, x, False)), f"{spec} n={n} case {i}"
    if spec == "signsgd":  # generic inputs: same signs, the mean |x| within a few ulp
        x = randn(n, 5)
        a, b = encode(q, x, True), encode(q, x, False)
        assert torch.equal(a[:-4], b[:-4])
        assert ulps(a[-4:].clone().view(torch.float32), b[-4:].clone().view(torch.float32)).max() <= 2


@pytest.mark.parametrize("spec", ["signsgd", "signsgd:scaled=false"])
@pytest.mark.parametrize("workers", [1, 2, 3, 4, 257])
def test_signsgd_vote_equals_the_plain_path(spec, workers):
    """Odd and even worker counts (ties, broken by the signed scales), and more workers than the
    kernel's one-byte counters hold."""
    q = quantizer(spec)
    n = 1001 if workers > 4 else 40_001
    xs = [grid(n, 10 + r) * (r % 3 + 1) for r in range(workers)]
    payloads = [encode(q, x, False) for x in xs]
    with _native.forced(True):
        got = q.aggregate(payloads, n)
    with _native.forced(False):
        want = q.aggregate(payloads, n)
    assert bits_equal(got, want)
    nan_payloads = [encode(q, x, False) for x in (torch.full((n,), float("nan")), xs[0])]
    with _native.forced(True):
        got = q.aggregate(nan_payloads, n)
    with _native.forced(False):
        want = q.aggregate(nan_payloads, n)
    assert bits_equal(got, want)


def test_non_cpu_tensors_take_the_torch_path():
    assert ops.lib_for(torch.empty(3, device="meta")) is None
    assert ops.lib_for(torch.empty(3)) is not None


def test_bad_payloads_are_clear_errors():
    q = quantizer("qsgd:bits=4")
    p = q.encode(randn(1000, 1))
    with pytest.raises(ValueError, match="bytes"):
        q.decode(p[:-1], 1000)
    t = hc.TernGrad()
    p = t.encode(randn(1000, 1), scale=torch.tensor([1e-3]))
    p[3] = 250  # not a base-3 byte
    with pytest.raises(ValueError, match="corrupt"):
        t.decode(p, 1000)


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, cwd=str(REPO), timeout=300
    )


def test_no_compiler_warns_once_and_uses_the_plain_path(tmp_path):
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "import hvd_compress.torch as hc\n"
        "from hvd_compress import _native\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    x = torch.randn(5000)\n"
        "    for spec in ('onebit', 'qsgd', 'efsign', 'terngrad'):\n"
        "        c = hc.from_spec(spec)\n"
        "        s = c.local_scale(x) if c.shared_scale else None\n"
        "        p = c.encode(x, torch.Generator().manual_seed(1), s)\n"
        "        c.decode(p, 5000)\n"
        "    msgs = [str(m.message) for m in w if 'native codec kernels' in str(m.message)]\n"
        "print(len(msgs), _native.enabled())\n"
        "print(msgs[0] if msgs else '')\n"
    )
    proc = _python(code, {"CC": str(tmp_path / "no-such-cc"), "HVD_COMPRESS_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, message = proc.stdout.split("\n", 1)
    assert first == "1 False"
    assert "unavailable" in message and "no-such-cc" in message and "HVD_COMPRESS_NATIVE=0" in message


def test_build_command_is_safe_to_run_concurrently(tmp_path):
    """Several ranks starting at once: one build under the lock, the others wait and reuse it."""
    env = dict(
        os.environ,
        HVD_COMPRESS_CACHE=str(tmp_path),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hvd_compress._native", "--build"],
            env=env,
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    lib = Path(paths.pop())
    assert lib.is_file() and lib.parent.parent == tmp_path / "native"
    assert [f.name for f in lib.parent.iterdir() if f.name.startswith(".build-")] == []
