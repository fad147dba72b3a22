"""Spec: the Triton kernels (hvd_compress/torch/kernels) are the CPU codecs, on the GPU.

* Same bytes: with the same uniforms (``noise=``), every payload, decoded value, aggregate and
  error-feedback residual equals the native C kernels' and the plain torch path's, for every codec
  and option, at ragged sizes (0, 1, 7, 513, 4099). Sum-based scales (OneBit's means, EFSign's
  mean |x|, QSGD's L2 norm) are summed in fp64 like the C kernels: equal to them on any input,
  equal to the plain path where its fp32 sums are exact (the "grid" inputs).
* The pinned payload digests (tests/test_payload_pinning.py) hold on the Triton path.
* Without ``noise`` the stochastic codecs draw in-kernel counter-based uniforms (``tl.rand``) from
  a seed drawn from the codec's generator: deterministic per (seed, step, tensor name), a
  different stream from the CPU kernels' one, unbiased.
* Lattice (SwarmSGD's gossip quantizer) likewise: with the same uniforms its payload, its values
  decoded relative to a reference and its ok flag equal the plain path's (float64 coordinates, the
  exact 64-bit checksum), near, at and beyond the decode radius, for non-finite inputs and steps.
* ``HVD_COMPRESS_BACKEND`` picks the path in one place (hvd_compress/torch/kernels/backend.py);
  misuse is a clear error.
* No host round trip in the CUDA hot path: a static scan of the kernels and the DDP hook (with an
  allow-list of commented exceptions), and, on a GPU, torch's sync detector.

In CI (no GPU) the kernels run under Triton's interpreter on CPU tensors (slow: about 1 s per 131k
values, hence the small sizes). Tests marked ``gpu`` repeat the checks on CUDA tensors.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET when a kernel is decorated; the kernel modules are imported
# lazily (first use), so setting it here, before any kernel runs, is enough. On a GPU machine the
# real compiler is used instead and the interpreter tests skip.
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import hvd_compress.torch as hc
from hvd_compress import _native
from hvd_compress.common import chunk_bounds
from hvd_compress.torch.kernels import backend

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(
        backend.triton_unavailable() is not None, reason=f"triton is not installed: {backend.triton_unavailable()}"
    ),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # numpy's 1/0 inside masked interpreter lanes
]
interpreted = pytest.mark.skipif(
    not backend.interpreting(), reason="TRITON_INTERPRET is not 1 (a GPU machine: see the gpu tests)"
)

SPECS = [
    "qsgd:bits=2,bucket_size=128",
    "qsgd:bits=4",
    "qsgd:bits=8",
    "qsgd:bits=4,bucket_size=7",
    "qsgd:bits=2,bucket_size=9",
    "qsgd:bits=4,norm=l2",
    "qsgd:bits=8,norm=l2,bucket_size=100",
    "terngrad",
    "terngrad:packing=2bit",
    "terngrad:clip=none",
    "onebit",
    "onebit:bucket_size=8",
    "onebit:bucket_size=64",
    "efsign",
    "signsgd",
    "signsgd:scaled=false",
    "topk:ratio=0.01",
    "topk:ratio=0.3",
]
SUM_SCALED = {
    "qsgd:bits=4,norm=l2",
    "qsgd:bits=8,norm=l2,bucket_size=100",
    "onebit",
    "onebit:bucket_size=8",
    "onebit:bucket_size=64",
    "efsign",
    "signsgd",
}
NATIVE = {"qsgd", "terngrad", "onebit", "efsign"}  # codec families the C kernels implement
SIZES = [0, 1, 7, 513, 4099]


def quantizer(codec):
    while hasattr(codec, "inner"):
        codec = codec.inner
    return codec


def grid(n, seed=1, device="cpu"):
    """Multiples of 1/16 with zeros and -0.0: every fp32 sum is exact, in any order."""
    x = torch.randint(-16, 17, (n,), generator=torch.Generator().manual_seed(seed)).float() / 16
    x[5:9] = 0.0
    x[9:10] = -0.0
    return x.to(device)


def randn(n, seed=1, device="cpu"):
    return (torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 1e-3).to(device)


def run_case(spec, x, backend_name):
    """Everything a codec puts on the wire or keeps for ``x`` on one backend (CPU results)."""
    codec = hc.from_spec(spec)
    q = quantizer(codec)
    n = x.numel()
    kw = {}
    if q.stochastic:
        kw["noise"] = torch.rand(n, generator=torch.Generator().manual_seed(99)).to(x.device)
    scale = q.local_scale(x) if q.shared_scale else None
    out = {}
    with backend.forced(backend_name):
        if q.shared_scale:
            out["scale"] = q.local_scale(x)
        payload = q.encode(x, None, scale, **kw)
        out["encode"] = payload
        out["decode"] = q.decode(payload, n)
        into = torch.full((n,), 7.0, device=x.device)
        q.decode_into(payload, into)
        out["decode_into"] = into
        others = [payload, q.encode(-0.5 * x, None, scale, **kw), q.encode(0.25 * x.flip(0), None, scale, **kw)]
        out["aggregate"] = q.aggregate(others, n)
        if hasattr(codec, "inner") and not q.stochastic:  # error feedback: two steps, three chunks
            bounds = chunk_bounds(n, 3, codec.alignment())
            for step, v in enumerate((x, 0.5 * x.flip(0))):
                out[f"worker{step}"] = torch.cat(
                    codec.worker_encode(v, "w", bounds, lambda c, p: None)
                    or [torch.empty(0, dtype=torch.uint8, device=x.device)]
                )
                out[f"residual{step}"] = codec.state["residual"]["w"].clone()
    return {k: v.cpu() for k, v in out.items()}


def assert_same(got, want, what):
    assert got.keys() == want.keys(), what
    for key in got:
        a, b = got[key], want[key]
        assert (
            a.dtype == b.dtype and a.shape == b.shape
        ), f"{what} {key}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.numel() else True, f"{what} {key} differs"


LATER_STEPS = ("worker1", "residual1")


def without(results, keys):
    return {k: v for k, v in results.items() if k not in keys}


def references(spec, x):
    refs = {"plain": run_case(spec, x, "plain")}
    if spec.split(":")[0] in NATIVE and _native.load() is not None:
        refs["native"] = run_case(spec, x, "native")
    return refs


@interpreted
@pytest.mark.parametrize("spec", SPECS)
def test_payloads_equal_native_and_plain_byte_for_byte(spec):
    for n in SIZES:
        x = grid(n) if spec in SUM_SCALED else randn(n)
        got = run_case(spec, x, "triton")
        for name, want in references(spec, x).items():
            skip = LATER_STEPS if name == "plain" and spec in SUM_SCALED else ()  # from rounded means
            assert_same(without(got, skip), without(want, skip), f"{spec} n={n} triton vs {name}")


@interpreted
@pytest.mark.parametrize("spec", sorted(s for s in SUM_SCALED if s.split(":")[0] in NATIVE))
def test_sum_scales_on_generic_floats_equal_the_c_kernels(spec):
    """fp64 sums rounded once, as in the C kernels (the plain path's fp32 sums may round apart)."""
    if _native.load() is None:
        pytest.skip(f"native kernels unavailable: {_native.unavailable_reason()}")
    x = randn(4099, seed=3)
    assert_same(run_case(spec, x, "triton"), run_case(spec, x, "native"), f"{spec} randn")


@interpreted
@pytest.mark.parametrize(
    "spec", ["qsgd:bits=4", "qsgd:bits=4,norm=l2", "terngrad", "onebit", "efsign", "signsgd", "topk:ratio=0.05"]
)
def test_non_finite_inputs_behave_as_on_the_cpu(spec):
    x = grid(513)
    x[17], x[300] = float("nan"), float("inf")
    got = run_case(spec, x, "triton")
    want = references(spec, x)["native" if spec.split(":")[0] in NATIVE and _native.load() else "plain"]
    for key in ("encode", "decode", "aggregate"):
        assert torch.equal(got[key].view(torch.uint8), want[key].view(torch.uint8)), f"{spec} {key}"


# --------------------------------------------------------------------------- pinned digests
PINNED_SPECS = [
    "qsgd:bits=2,bucket_size=128",
    "qsgd:bits=4",
    "qsgd:bits=8",
    "qsgd:bits=4,norm=l2",
    "qsgd:bits=4,bucket_size=100",
    "terngrad",
    "terngrad:packing=2bit",
    "terngrad:clip=none",
    "onebit",
    "onebit:bucket_size=64",
    "efsign",
    "signsgd",
    "signsgd:scaled=false",
    "topk:ratio=0.01",
]


@interpreted
@pytest.mark.parametrize("spec", PINNED_SPECS)
def test_pinned_digests_hold_on_the_triton_path(spec):
    """Every digest of the grid case that does not depend on the uniforms' stream: the explicit-noise
    payload of the stochastic codecs, everything for the deterministic ones."""
    import test_payload_pinning as pinning

    case = f"{spec}|grid|3001"
    with backend.forced("triton"):
        got = pinning.case_digests(spec, "grid", 3001)
    stochastic = quantizer(hc.from_spec(spec)).stochastic
    checked = 0
    for key, digest in got.items():
        if stochastic and key != "encode_noise":
            continue  # the in-kernel stream, not torch.rand: see test_kernel_stream_*
        table = pinning.NATIVE_PINNED if pinning.native_may_differ(case, key) else pinning.PINNED
        if key in table.get(case, {}):
            assert digest == table[case][key], f"{case} {key}"
            checked += 1
    assert checked


# ----------------------------------------------------------------------- in-kernel uniforms
@interpreted
@pytest.mark.parametrize("spec", ["qsgd:bits=4", "terngrad"])
def test_kernel_stream_is_deterministic_per_seed_and_unbiased(spec):
    q = hc.from_spec(spec)
    x = randn(4099)
    scale = q.local_scale(x) if q.shared_scale else None
    with backend.forced("triton"):
        first = q.encode(x, torch.Generator().manual_seed(5), scale)
        again = q.encode(x, torch.Generator().manual_seed(5), scale)
        other = q.encode(x, torch.Generator().manual_seed(6), scale)
        mean = sum(q.decode(q.encode(x, torch.Generator().manual_seed(s), scale), x.numel()) for s in range(8)) / 8
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    err = (mean - x).abs().mean() / x.abs().mean()
    assert err < 0.5, f"8-draw mean far from the input: relative error {err:.3f}"
    assert abs(float((mean - x).mean())) < 3 * float(x.abs().mean()) / (8 * x.numel()) ** 0.5


@interpreted
def test_exchange_seeding_makes_triton_training_steps_reproducible():
    """The exchange seeds each call by (seed, rank, step, name, chunk): the same codec state gives
    the same payloads, so a checkpoint/restore resumes bit-exactly."""
    codec = hc.QSGD(bits=4, seed=3)
    x = randn(513)
    bounds = chunk_bounds(513, 2, codec.alignment())

    def draw(step):
        return lambda c, p: torch.Generator().manual_seed(1000 * step + 10 * c + p)

    with backend.forced("triton"):
        a = [codec.worker_encode(x, "w", bounds, draw(s)) for s in range(2)]
        b = [codec.worker_encode(x, "w", bounds, draw(s)) for s in range(2)]
    assert all(torch.equal(u, v) for pa, pb in zip(a, b) for u, v in zip(pa, pb))


# ------------------------------------------------------------------------------------ lattice
LATTICE_SIZES = [0, 1, 7, 9, 1001, 3001]


def lattice_case(bits, x, eps, noise, refs, backend_name, seed=5):
    """Payload, then (values, ok) relative to each reference, on one backend (CPU results)."""
    from hvd_compress.torch.codecs.lattice import Lattice

    c = Lattice(bits=bits)
    with backend.forced(backend_name):
        payload = c.encode(x, torch.Generator().manual_seed(seed), eps, noise=noise)
        decoded = [c.decode_relative(payload, r) for r in refs]
    return payload.cpu(), [(v.cpu(), ok) for v, ok in decoded]


def assert_lattice_same(got, want, what):
    assert torch.equal(got[0], want[0]), f"{what}: payload differs"
    for i, ((gv, gok), (wv, wok)) in enumerate(zip(got[1], want[1])):
        assert gok is wok, f"{what} ref {i}: ok {gok} vs {wok}"
        assert gv.dtype == wv.dtype and torch.equal(gv.view(torch.uint8), wv.view(torch.uint8)), f"{what} ref {i}"


def lattice_inputs(n, bits, seed=1):
    """x, its step, and references near, at the radius, beyond it and absurdly far."""
    from hvd_compress.torch.codecs.lattice import Lattice

    c = Lattice(bits=bits)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 3
    eps = c.choose_eps(1e-3, x)
    near = x + (torch.rand(n, generator=g) * 2 - 1) * 1e-3
    at = x + eps * c.radius  # largest distance guaranteed to decode (up to fp32 rounding of y)
    beyond = x.clone()
    beyond[n // 2 :] += eps * (c.radius + 1.5)  # some coordinates past the radius: wrong, flagged
    absurd = x + 1e30  # coordinates beyond 2^50: all NaN
    return x, eps, [near, at, beyond, absurd]


@interpreted
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lattice_equals_the_plain_path_byte_for_byte(bits):
    for n in LATTICE_SIZES:
        x, eps, refs = lattice_inputs(n, bits)
        for dtype in (torch.float64, torch.float32):  # the plain path adds either to float64 coordinates
            noise = torch.rand(n, generator=torch.Generator().manual_seed(99), dtype=dtype)
            want = lattice_case(bits, x, eps, noise, refs, "plain")
            assert_lattice_same(lattice_case(bits, x, eps, noise, refs, "triton"), want, f"bits={bits} n={n} {dtype}")
        if n > 3:
            oks = [ok for _, ok in want[1]]
            assert oks[0] and not oks[2] and not oks[3], oks  # near decodes, beyond/absurd are flagged
            assert not want[1][2][0].isnan().any() and want[1][3][0].isnan().all()


@interpreted
def test_lattice_multi_block_checksum_equals_the_plain_path():
    """Several checksum blocks (4096 values each), combined with their per-block weights."""
    x, eps, refs = lattice_inputs(3 * 4096 + 5, 8, seed=2)
    noise = torch.rand(x.numel(), generator=torch.Generator().manual_seed(98), dtype=torch.float64)
    want = lattice_case(8, x, eps, noise, refs[:3], "plain")
    assert_lattice_same(lattice_case(8, x, eps, noise, refs[:3], "triton"), want, "n=12293")
    assert [ok for _, ok in want[1]] == [True, True, False]


@interpreted
@pytest.mark.parametrize("bits", [2, 8])
def test_lattice_non_finite_inputs_steps_and_payloads_behave_as_the_plain_path(bits):
    from hvd_compress.torch.codecs.lattice import Lattice

    n = 1001
    x, eps, refs = lattice_inputs(n, bits, seed=3)
    noise = torch.rand(n, generator=torch.Generator().manual_seed(97), dtype=torch.float64)
    cases = {}
    for name, bad in (("nan", float("nan")), ("inf", float("inf")), ("-inf", -float("inf"))):
        v = x.clone()
        v[500] = bad
        cases[name] = (v, eps)
    cases["eps=nan"] = (x, float("nan"))
    for name, (v, step) in cases.items():
        want = lattice_case(bits, v, step, noise, refs[:1], "plain")
        assert_lattice_same(lattice_case(bits, v, step, noise, refs[:1], "triton"), want, f"bits={bits} {name}")
        assert want[1][0][1] is False and want[1][0][0].isnan().all()  # eps = NaN on the wire
    # malformed side channels from the wire: a wrong checksum, a zero / negative / infinite step
    c = Lattice(bits=bits)
    payload = lattice_case(bits, x, eps, noise, [], "plain")[0]
    nc = payload.numel() - 16
    tampered = {}
    for name, pos, value in (
        ("checksum", nc + 8, None),
        ("eps=0", nc, 0.0),
        ("eps<0", nc, -eps),
        ("eps=inf", nc, 1e39),
    ):
        p = payload.clone()
        if value is None:
            p[pos] ^= 1
        else:
            p[pos : pos + 4] = torch.tensor([value], dtype=torch.float32).view(torch.uint8)
        tampered[name] = p
    for name, p in tampered.items():
        results = {}
        for be in ("plain", "triton"):
            with backend.forced(be):
                results[be] = c.decode_relative(p, refs[0])
        (wv, wok), (gv, gok) = results["plain"], results["triton"]
        assert gok is wok is False, name
        assert torch.equal(gv.view(torch.uint8), wv.view(torch.uint8)), name


@interpreted
def test_lattice_kernel_stream_is_deterministic_per_seed_and_decodes():
    """Without ``noise`` the uniforms are drawn in the kernel (Philox, from a seed drawn from the
    generator): the same generator seed gives the same payload, another seed another one; every
    payload decodes within one step, and the mean over draws is near the input (unbiased)."""
    from hvd_compress.torch.codecs.lattice import Lattice

    c = Lattice(bits=8)
    x, eps, refs = lattice_inputs(4099, 8, seed=4)
    with backend.forced("triton"):
        first = c.encode(x, torch.Generator().manual_seed(5), eps)
        again = c.encode(x, torch.Generator().manual_seed(5), eps)
        other = c.encode(x, torch.Generator().manual_seed(6), eps)
        draws = []
        for s in range(8):
            xh, ok = c.decode_relative(c.encode(x, torch.Generator().manual_seed(100 + s), eps), refs[0])
            assert ok
            assert float((xh - x).abs().max()) <= eps * 1.001 + 1e-6
            draws.append(xh.double())
    assert torch.equal(first, again)
    assert not torch.equal(first[:-8], other[:-8])  # residues and shift seed differ
    err = torch.stack(draws).mean(0) - x.double()
    # per value the error is zero-mean with variance <= eps^2 / 4: the mean of 8 x 4099 of them
    assert abs(float(err.mean())) < 5 * eps / 2 / (8 * x.numel()) ** 0.5


if backend.triton_unavailable() is None:  # a kernel around the decoder's rounding helper
    import triton
    import triton.language as tl

    from hvd_compress.torch.kernels.lattice import _round_half_even

    @triton.jit
    def _round_probe(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(out_ptr + i, _round_half_even(tl.load(x_ptr + i, mask=i < n, other=0.0)), mask=i < n)


@interpreted
def test_lattice_rounding_is_torch_round():
    """The decoder's nearest lattice point: half to even, signed zeros, huge values, NaN and Inf
    exactly as ``torch.round`` (ties are rare in real decodes, so they are checked here)."""
    special = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999999999999994, -0.49999999999999994, -0.0, 0.0]
    special += [2.0**52 + 1, -(2.0**52) - 1, 2.0**52 - 0.5, -(2.0**52) + 0.5, 1e300, float("inf"), -float("inf")]
    special += [float("nan")]
    g = torch.Generator().manual_seed(0)
    v = torch.cat(
        [
            torch.tensor(special, dtype=torch.float64),
            torch.randn(1000, generator=g, dtype=torch.float64) * 1000,
            torch.randint(-(10**6), 10**6, (1000,), generator=g).double() + 0.5,
        ]
    )
    out = torch.empty_like(v)
    _round_probe[(1,)](v, out, v.numel(), BLOCK=4096)
    assert torch.equal(out.view(torch.int64), torch.round(v).view(torch.int64))


@interpreted
def test_lattice_triton_path_refuses_a_step_too_small_for_the_values():
    from hvd_compress.torch.codecs.lattice import Lattice

    c = Lattice(bits=8)
    x = torch.full((100,), 1e6)
    for be in ("plain", "triton"):
        with backend.forced(be), pytest.raises(ValueError, match="lattice step eps=.* too small"):
            c.encode(x, torch.Generator().manual_seed(0), 1e-12)


def test_lattice_is_a_triton_codec():
    """Lattice is listed with the codecs whose encode and decode run on Triton, so the CUDA bench
    reports it as such; its kernel file is under the host-round-trip scan."""
    from hvd_compress.torch import kernels
    from hvd_compress.torch.codecs.lattice import Lattice

    assert "lattice" in kernels.TRITON_CODECS
    with backend.forced("triton"):
        assert kernels.runs_on_device(Lattice(), torch.device("cuda"))
    assert REPO / "hvd_compress/torch/kernels/lattice.py" in HOT_PATHS


# ---------------------------------------------------------------------------- backend choice
def test_backend_default_is_triton_on_cuda_and_native_on_cpu(monkeypatch):
    monkeypatch.delenv("HVD_COMPRESS_BACKEND", raising=False)
    assert backend.choose(torch.device("cpu")) == "native"
    assert backend.choose(torch.device("cuda")) == "triton"
    assert backend.choose(torch.device("meta")) == "plain"
    monkeypatch.setattr(backend, "_triton_error", "ImportError: no triton")
    monkeypatch.setattr(backend, "_triton_checked", True)
    assert backend.choose(torch.device("cuda")) == "plain"


def test_backend_env_forces_one_and_misuse_is_a_clear_error(monkeypatch):
    for name in ("native", "plain"):
        monkeypatch.setenv("HVD_COMPRESS_BACKEND", name)
        assert backend.choose(torch.device("cpu")) == name
    monkeypatch.setenv("HVD_COMPRESS_BACKEND", "cuda")
    with pytest.raises(ValueError, match="HVD_COMPRESS_BACKEND must be one of"):
        backend.choose(torch.device("cpu"))
    monkeypatch.setenv("HVD_COMPRESS_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        hc.QSGD(bits=4).encode(torch.ones(10))
    monkeypatch.setattr(backend, "_triton_error", "ImportError: No module named 'triton'")
    monkeypatch.setattr(backend, "_triton_checked", True)
    with pytest.raises(RuntimeError, match="Triton does not import"):
        backend.choose(torch.device("cuda"))


def test_plain_backend_keeps_the_c_kernels_out(monkeypatch):
    monkeypatch.setenv("HVD_COMPRESS_BACKEND", "plain")
    assert hc.QSGD(bits=4).plan.path(torch.ones(1)) == "plain"
    assert hc.OneBit().inner.plan.for_device("cuda") == "plain"


def test_the_backend_is_chosen_when_the_codec_is_built(monkeypatch):
    """The environment is read by the constructor; the step only looks its plan up. A pickled
    codec is planned again where it lands; a forced() block overrides every plan while it lasts."""
    import pickle

    from hvd_compress import _native

    x = torch.ones(1000)
    monkeypatch.setenv("HVD_COMPRESS_BACKEND", "plain")
    codec = hc.QSGD(bits=4)
    monkeypatch.delenv("HVD_COMPRESS_BACKEND")
    native = "native" if _native.load() is not None else "plain"
    assert codec.plan.path(x) == "plain"  # the setting it was built with
    assert hc.QSGD(bits=4).plan.path(x) == native
    assert pickle.loads(pickle.dumps(codec)).plan.path(x) == native  # this process's setting
    with backend.forced("plain"):
        assert hc.QSGD(bits=4).plan.path(x) == "plain"
    with _native.forced(False):
        assert hc.QSGD(bits=4).plan.path(x) == "plain"
    assert codec.plan.path(x) == "plain" and "cpu: plain" in repr(codec.plan)
    monkeypatch.setenv("HVD_COMPRESS_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    refused = hc.QSGD(bits=4)  # a forced backend that cannot run here is an error on use, not a fall-back
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        refused.encode(x)


# ------------------------------------------------------------------- no host round trips
HOT_PATHS = (
    sorted((REPO / "hvd_compress/torch/kernels").glob("*.py"))
    + [REPO / "hvd_compress/torch" / name for name in ("exchange.py", "dist.py", "fusion.py", "hierarchical.py")]
    + [REPO / "hvd_compress/torch/frontends" / name for name in ("ddp.py", "optimizer.py", "stock.py")]
)
ROUND_TRIP = re.compile(r"\.(item|tolist|cpu|numpy)\(|\bbool\(\s*\w+\.(any|all)\(|\.to\(\s*['\"]cpu['\"]")
ALLOW = "host sync (allow-listed)"


def test_no_host_round_trip_in_the_cuda_hot_path():
    """A ``.item()``/``.tolist()``/``.cpu()``/``.numpy()`` or a ``bool(t.any())`` in the kernels,
    the exchange, the collectives or the frontends stalls the GPU, often once per tensor; each one
    there must say why, on its line (the non-finite check is read once per step by the Driver)."""
    offenders = []
    for path in HOT_PATHS:
        for no, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if ROUND_TRIP.search(code) and ALLOW not in line:
                offenders.append(f"{path.relative_to(REPO)}:{no}: {line.strip()}")
    assert not offenders, (
        "host round trips in the CUDA hot path (add '# host sync (allow-listed): why' "
        "if one is unavoidable):\n" + "\n".join(offenders)
    )


# ------------------------------------------------------------------------------ on a GPU
GPU_SPECS = [s for s in SPECS if s not in ("topk:ratio=0.3",)]
SYNC_FREE = GPU_SPECS


@pytest.mark.gpu
@pytest.mark.parametrize("spec", GPU_SPECS)
def test_gpu_payloads_equal_the_cpu_paths(spec):
    if backend.interpreting():
        pytest.skip("TRITON_INTERPRET=1: the GPU tests check the compiled kernels")
    for n in SIZES + [1 << 20]:
        x = grid(n) if spec in SUM_SCALED else randn(n)
        got = run_case(spec, x.cuda(), "triton")
        for name, want in references(spec, x).items():
            skip = LATER_STEPS if name == "plain" and spec in SUM_SCALED else ()
            assert_same(without(got, skip), without(want, skip), f"{spec} n={n} cuda vs {name}")


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_gpu_lattice_equals_the_plain_path(bits):
    if backend.interpreting():
        pytest.skip("TRITON_INTERPRET=1: the GPU tests check the compiled kernels")
    for n in LATTICE_SIZES + [3 * 4096 + 5, 1 << 20]:
        x, eps, refs = lattice_inputs(n, bits)
        noise = torch.rand(n, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
        want = lattice_case(bits, x, eps, noise, refs, "plain")
        got = lattice_case(bits, x.cuda(), eps, noise.cuda(), [r.cuda() for r in refs], "triton")
        assert_lattice_same(got, want, f"bits={bits} n={n} cuda vs plain")


@pytest.mark.gpu
def test_gpu_lattice_syncs_only_where_allow_listed():
    """One host read per encode (max|x|, for the too-small-step ValueError) and one per decode
    (the ok flag, a Python bool): torch's sync detector counts them."""
    import warnings

    from hvd_compress.torch.codecs.lattice import Lattice

    if backend.interpreting():
        pytest.skip("TRITON_INTERPRET=1: the GPU tests check the compiled kernels")
    c = Lattice(bits=8)
    x, eps, refs = lattice_inputs(1 << 16, 8)
    x, y = x.cuda(), refs[0].cuda()
    c.decode_relative(c.encode(x, torch.Generator().manual_seed(1), eps), y)  # compile first
    torch.cuda.synchronize()
    for step in ("encode", "decode"):
        payload = c.encode(x, torch.Generator().manual_seed(2), eps) if step == "decode" else None
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                if step == "encode":
                    c.encode(x, torch.Generator().manual_seed(2), eps)
                else:
                    c.decode_relative(payload, y)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = [w for w in seen if "synchroniz" in str(w.message)]
        assert len(syncs) == 1, f"{step}: {[str(w.message) for w in syncs]}"


@pytest.mark.gpu
@pytest.mark.parametrize("spec", SYNC_FREE)
def test_gpu_hot_path_never_synchronises_with_the_host(spec):
    """torch's sync detector raises on any device-to-host wait during encode, decode_into,
    aggregate and the error-feedback step (TernGrad's base-3 decode check and TopK's index check
    are the allow-listed exceptions, so those decoders are left out here)."""
    if backend.interpreting():
        pytest.skip("TRITON_INTERPRET=1: the GPU tests check the compiled kernels")
    codec = hc.from_spec(spec)
    q = quantizer(codec)
    x = randn(1 << 16, device="cuda")
    bounds = chunk_bounds(x.numel(), 2, codec.alignment())
    scale = q.local_scale(x) if q.shared_scale else None
    gen = lambda c, p: torch.Generator().manual_seed(c + p)  # noqa: E731
    codec.worker_encode(x, "w", bounds, gen, scale)  # compile outside the check
    payloads = [q.encode(x, torch.Generator().manual_seed(1), scale)]
    out = torch.empty_like(x)
    check_decode = not (spec.startswith("topk") or (spec.startswith("terngrad") and "2bit" not in spec))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        codec.worker_encode(x, "w", bounds, gen, scale)
        q.encode(x, torch.Generator().manual_seed(2), scale)
        if check_decode:
            q.decode_into(payloads[0], out)
            q.aggregate(payloads * 2, x.numel())
    finally:
        torch.cuda.set_sync_debug_mode(0)
