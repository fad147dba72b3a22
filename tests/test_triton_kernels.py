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
    from hvd_compress._native import ops

    monkeypatch.setenv("HVD_COMPRESS_BACKEND", "plain")
    assert ops.lib_for(torch.ones(1)) is None


# ------------------------------------------------------------------- no host round trips
HOT_PATHS = sorted((REPO / "hvd_compress/torch/kernels").glob("*.py")) + [
    REPO / "hvd_compress/torch" / name
    for name in ("ddp.py", "exchange.py", "dist.py", "fusion.py", "hierarchical.py", "optimizer.py", "stock.py")
]
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
