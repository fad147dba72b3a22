"""Spec: the numpy references (:mod:`hvd_compress.codecs`) ARE the built-in wire formats.

For every built-in codec, the torch plain path (``HVD_COMPRESS_NATIVE=0``), the native C kernels,
the Triton kernels (under Triton's CPU interpreter here) and the TensorFlow codec produce payloads
byte-identical to the numpy reference for the same input and the same uniforms (``noise=``;
TernGrad also gets the same shared ``scale``, which the exchange agrees on by allreduce-MAX), odd
sizes included; each implementation decodes the reference's payloads, and any valid payload, to
the reference's values.

Inputs (as in ``tests/test_tf_torch_wire.py``): a "grid" of multiples of 1/16 (every sum, mean and
norm is exact in fp32 whatever the order), with zeros, -0.0 and an all-zero run, for every codec;
generic ``randn`` values for the codecs whose bytes depend only on order-free operations. For the
sum-based scales on generic inputs (OneBit's means, the sign codecs' mean |x|, QSGD's L2 norm) the
reference sums in float64 and rounds once; the kernels' fp32 sums may differ in the last bit, so
there the codes must be identical and the scales within 1e-6 relative.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import codec_cases
import hvd_compress
from hvd_compress.core.registry import BUILTIN_NAMES

torch = pytest.importorskip("torch")

import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.common import packed_nbytes  # noqa: E402

# The payload formats, from the one table of per-codec test facts (tests/codec_cases.py).
SPECS = codec_cases.specs("conformance")
SUM_BASED = codec_cases.sum_based("conformance")
# Odd sizes (not whole bytes, buckets or base-3 groups) and several buckets. Empty tensors never
# reach a framework codec (the exchange sends them uncompressed); the reference handles 0 too
# (hvd_compress.testing.check_codec, below).
SIZES = [1, 7, 9, 1001, 3001, 40_000]
IMPLS = ["torch_plain", "torch_native", "triton", "tf"]
TORCH_IMPLS = ["torch_plain", "torch_native", "triton"]
# Triton runs here under its CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1 without a
# GPU): about 1 s per 131k values, so it gets the small sizes only.
TRITON_MAX = 4096
# Every built-in codec has its reference in hvd_compress.codecs: the payload formats (SPECS, checked
# byte for byte here), lattice (decoded against the receiver's vector, below) and the exchanges of
# the multi-round codecs, DoubleSqueeze, PowerSGD and GradiVeQ (tests/test_reducer_references.py).
REDUCERS = {"doublesqueeze", "gradiveq", "powersgd"}


def grid(n, seed):
    x = (np.random.default_rng(seed).integers(-16, 17, n) / 16).astype(np.float32)
    x[5:9] = 0.0
    x[9:10] = -0.0
    x[1024:2048] = 0.0
    return x


def randn(n, seed):
    return (np.random.default_rng(seed).standard_normal(n) * 1e-3).astype(np.float32)


def quantizer(codec):
    while hasattr(codec, "inner"):
        codec = codec.inner
    return codec


class Impl:
    """One implementation of a codec: encode(x, noise, scale) / decode(payload, n) on numpy."""

    def __init__(self, impl, spec, monkeypatch):
        self.impl = impl
        if impl == "tf":
            tf = pytest.importorskip("tensorflow")
            import hvd_compress.tensorflow as hct

            self.tf, self.codec = tf, quantizer(hct.from_spec(spec))
            return
        from hvd_compress import _native
        from hvd_compress.torch.kernels import backend

        if impl == "triton":
            if backend.triton_unavailable() is not None or not backend.interpreting():
                pytest.skip(
                    "Triton kernels on CPU tensors need Triton and TRITON_INTERPRET=1 "
                    "(the gpu-marked tests in tests/test_triton_kernels.py cover CUDA)"
                )
            monkeypatch.setenv("HVD_COMPRESS_BACKEND", "triton")
        monkeypatch.setenv("HVD_COMPRESS_NATIVE", "1" if impl == "torch_native" else "0")
        if impl == "torch_native" and _native.load() is None:
            pytest.skip(f"native kernels unavailable: {_native.unavailable_reason()}")
        self.codec = quantizer(hc.from_spec(spec))

    def sizes(self, sizes):
        return [n for n in sizes if self.impl != "triton" or n <= TRITON_MAX]

    def encode(self, x, noise, scale):
        kw = {}
        if self.impl == "tf":
            if self.codec.stochastic:
                kw["noise"] = self.tf.constant(noise)
            if self.codec.shared_scale:
                kw["scale"] = self.tf.constant(np.float32([scale]))
            return self.codec.encode(self.tf.constant(x), **kw).numpy()
        if self.codec.stochastic:
            kw["noise"] = torch.from_numpy(noise.copy())
        if self.codec.shared_scale:
            kw["scale"] = torch.tensor([scale], dtype=torch.float32)
        return self.codec.encode(torch.from_numpy(x.copy()), **kw).numpy()

    def decode(self, payload, n):
        if self.impl == "tf":
            return self.codec.decode(self.tf.constant(payload), n).numpy()
        return self.codec.decode(torch.from_numpy(payload.copy()), n).numpy()


def reference_encode(ref, x, noise, scale):
    kw = {"scale": scale} if isinstance(ref, hvd_compress.codecs.TernGrad) else {}
    return ref.encode(x, None, noise=noise, **kw)


def draws(ref, x):
    noise = np.random.default_rng(x.size + 1).random(x.size, dtype=np.float32)
    scale = np.float32(np.abs(x).max() * 0.75) if x.size else np.float32(0)  # as if agreed by MAX
    return noise, scale


def test_every_builtin_codec_has_a_reference():
    registry = hvd_compress.registry()
    assert BUILTIN_NAMES <= set(registry)
    for name in BUILTIN_NAMES:
        assert registry[name].__module__.startswith("hvd_compress.codecs."), name
    for name in REDUCERS:
        assert callable(getattr(registry[name], "reduce", None)), name
    checked = {s.split(":")[0] for s in SPECS} | {"lattice"} | REDUCERS
    assert checked == BUILTIN_NAMES


@pytest.mark.parametrize("spec", SPECS)
def test_reference_settings_match_both_frameworks(spec):
    """Same description (fingerprint of the wire format), payload sizes and chunk alignment."""
    ref = hvd_compress.reference(spec)
    codecs = [hc.from_spec(spec)]
    if importlib.util.find_spec("tensorflow") is not None:  # torch is checked without TF too
        import hvd_compress.tensorflow as hct

        codecs.append(hct.from_spec(spec))
    for codec in codecs:
        assert codec.describe() == ref.describe()
        assert codec.alignment() == ref.alignment()
        assert quantizer(codec).stochastic == ref.stochastic
        for n in SIZES + [0, 8, 65536]:
            assert codec.payload_nbytes(n) == ref.payload_nbytes(n)
    assert hvd_compress.reference(ref.spec_string()) == ref


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("spec", SPECS)
def test_payloads_identical_to_the_reference(spec, impl, monkeypatch):
    ref = hvd_compress.reference(spec)
    codec = Impl(impl, spec, monkeypatch)
    for n in codec.sizes(SIZES):
        inputs = [("grid", grid(n, n))] + ([("randn", randn(n, n))] if spec not in SUM_BASED else [])
        for kind, x in inputs:
            noise, scale = draws(ref, x)
            want = reference_encode(ref, x, noise, scale)
            got = codec.encode(x, noise, scale)
            assert got.dtype == np.uint8 and got.shape == want.shape == (ref.payload_nbytes(n),)
            assert np.array_equal(got, want), f"{impl} {spec} {kind} n={n}: {(got != want).sum()} bytes differ"
            ref_values = ref.decode(want, n)
            assert np.array_equal(codec.decode(want, n), ref_values, equal_nan=True), f"{impl} decode n={n}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("spec", sorted(SUM_BASED))
def test_generic_inputs_codes_identical_scales_close(spec, impl, monkeypatch):
    ref = hvd_compress.reference(spec)
    codec = Impl(impl, spec, monkeypatch)
    for n in codec.sizes((1001, 40_000)):
        x = randn(n, 3)
        noise, scale = draws(ref, x)
        want, got = reference_encode(ref, x, noise, scale), codec.encode(x, noise, scale)
        ncode = packed_nbytes(n, getattr(ref, "bits", 1))
        assert got.shape == want.shape
        if "l2" not in spec:  # the L2 scale feeds the levels; the sign codecs' codes are pure signs
            assert np.array_equal(got[:ncode], want[:ncode])
        np.testing.assert_allclose(got[ncode:].view(np.float32), want[ncode:].view(np.float32), rtol=1e-6)
        # the decoders agree exactly on either payload
        for payload in (want, got):
            assert np.array_equal(codec.decode(payload, n), ref.decode(payload, n))


@pytest.mark.parametrize("impl", TORCH_IMPLS)
@pytest.mark.parametrize("spec", SPECS)
def test_nonfinite_inputs_identical_to_the_reference(spec, impl, monkeypatch):
    """NaN and Inf reach the wire as the reference says (a NaN scale, never a finite lie). Torch
    only: TensorFlow's bf16 cast writes NaN as 0x7FC0 where torch writes 0xFFFF (both NaN)."""
    ref = hvd_compress.reference(spec)
    codec = Impl(impl, spec, monkeypatch)
    x = grid(3001, 3)
    x[17], x[2500], x[2900] = np.nan, np.inf, -np.inf
    noise, _ = draws(ref, x)
    scale = np.float32(np.abs(np.nan_to_num(x, nan=0, posinf=0, neginf=0)).max() * 0.75)
    want, got = reference_encode(ref, x, noise, scale), codec.encode(x, noise, scale)
    assert np.array_equal(got, want), f"{(got != want).sum()} bytes differ"
    assert np.array_equal(codec.decode(want, x.size), ref.decode(want, x.size), equal_nan=True)


def _random_payload(ref, n, rng):
    """Valid random bytes for ``ref``'s format: random codes, finite scales."""
    nbytes = ref.payload_nbytes(n)
    p = rng.integers(0, 256, nbytes, dtype=np.uint8)
    name = ref.name
    if name in ("none", "fp16", "bf16"):
        values = rng.standard_normal(n).astype(np.float32)
        return ref.encode(values, None)
    if name == "topk":
        k = ref.k(n)
        idx = np.sort(rng.choice(n, k, replace=False)).astype("<i4")
        return np.concatenate([idx.view(np.uint8), rng.standard_normal(k).astype("<f4").view(np.uint8)])
    if name == "terngrad":
        nc = ref._code_nbytes(n)
        if ref.packing == "base3":
            p[:nc] = rng.integers(0, 243, nc)
        p[nc:] = np.float32([rng.random()]).view(np.uint8)
        return p
    ncode = packed_nbytes(n, getattr(ref, "bits", 1))
    scales = rng.standard_normal((nbytes - ncode) // 4).astype("<f4")
    p[ncode:] = scales.view(np.uint8)
    return p


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("spec", SPECS)
def test_decoders_agree_on_arbitrary_valid_payloads(spec, impl, monkeypatch):
    """Not only encoder output: any valid payload (all codes, e.g. QSGD-2's unused code 3) decodes
    to the reference's values."""
    ref = hvd_compress.reference(spec)
    codec = Impl(impl, spec, monkeypatch)
    rng = np.random.default_rng(5)
    for n in (1, 9, 3001):
        p = _random_payload(ref, n, rng)
        assert np.array_equal(codec.decode(p, n), ref.decode(p, n), equal_nan=True), f"n={n}"


@pytest.mark.parametrize("impl", ["torch_plain", "torch_native", "tf"])
@pytest.mark.parametrize("spec", ["signsgd", "signsgd:scaled=false"])
def test_signsgd_vote_matches_the_reference(spec, impl, monkeypatch):
    ref = hvd_compress.reference(spec)
    codec = Impl(impl, spec, monkeypatch)
    n = 3001
    payloads = [ref.encode(grid(n, 10 + r) * (r + 1), None) for r in range(4)]  # 4 workers: ties
    if impl == "tf":
        got = codec.codec.aggregate([codec.tf.constant(p) for p in payloads], n).numpy()
    else:
        got = codec.codec.aggregate([torch.from_numpy(p) for p in payloads], n).numpy()
    assert np.array_equal(got, ref.aggregate(payloads, n))


def test_terngrad_local_scale_close_to_the_reference():
    ref = hvd_compress.reference("terngrad")
    x = randn(40_000, 4)
    s = float(quantizer(hc.from_spec("terngrad")).local_scale(torch.from_numpy(x)))
    assert s == pytest.approx(float(ref.local_scale(x)), rel=1e-5)


def test_reference_rejects_malformed_payloads():
    with pytest.raises(ValueError, match="base-3"):
        hvd_compress.reference("terngrad").decode(np.full(6, 250, np.uint8), 10)
    bad = np.concatenate([np.int32([0, 99]).view(np.uint8), np.zeros(8, np.uint8)])
    with pytest.raises(ValueError, match="outside"):
        hvd_compress.reference("topk:ratio=0.2").decode(bad, 10)


@pytest.mark.parametrize("spec", SPECS)
def test_references_pass_the_public_conformance_checks(spec):
    """The checks a user's codec gets (hvd_compress.testing), empty tensors included."""
    from hvd_compress.testing import check_codec

    check_codec(spec, frameworks=())


# ------------------------------------------------------------------------------------ lattice
# SwarmSGD's gossip codec (torch only): a payload decodes relative to the receiver's own vector, so
# the checks are encode (same shift seed, same uniforms) and decode_relative (values and ok flag).
LATTICE_SIZES = [0, 1, 7, 9, 1001, 4097, 70_000]  # 70k: more than one 64k processing chunk in torch


def lattice_pair(n, seed, distance=1e-2, scale=3.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    y = (x + (rng.random(n) * 2 - 1) * distance).astype(np.float32)
    return x, y


def torch_lattice_seed(seed):
    """The shift seed torch's Lattice.encode draws first from ``Generator().manual_seed(seed)``."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(seed)))


def lattice_encodings(bits, n, seed, x, eps):
    """(torch payload, reference payload) of ``x`` with the same shift seed and uniforms."""
    from hvd_compress.torch.codecs.lattice import Lattice

    noise = np.random.default_rng(seed + 100).random(n)  # float64, as torch draws them
    got = Lattice(bits=bits).encode(
        torch.from_numpy(x.copy()), torch.Generator().manual_seed(seed), eps, noise=torch.from_numpy(noise)
    )
    want = hvd_compress.reference(f"lattice:bits={bits}").encode(x, eps=eps, seed=torch_lattice_seed(seed), noise=noise)
    return got.numpy(), want


def assert_same_decode(bits, payload, y):
    from hvd_compress.torch.codecs.lattice import Lattice

    got, got_ok = Lattice(bits=bits).decode_relative(torch.from_numpy(payload.copy()), torch.from_numpy(y.copy()))
    want, want_ok = hvd_compress.reference(f"lattice:bits={bits}").decode_relative(payload, y)
    assert got_ok == want_ok
    assert got.dtype == torch.float32 and want.dtype == np.float32
    assert np.array_equal(got.numpy(), want, equal_nan=True), f"{(got.numpy() != want).sum()} values differ"
    return want_ok


@pytest.mark.parametrize("spec", ["lattice", "lattice:bits=4,safety=3", "lattice:bits=2,eps=0.5"])
def test_lattice_reference_settings_match_torch(spec):
    ref, codec = hvd_compress.reference(spec), hc.from_spec(spec)
    assert codec.describe() == ref.describe()
    assert (codec.q, codec.radius, codec.stochastic) == (ref.q, ref.radius, ref.stochastic)
    for n in LATTICE_SIZES:
        assert codec.payload_nbytes(n) == ref.payload_nbytes(n)
    assert hvd_compress.reference(ref.spec_string()) == ref
    x = lattice_pair(1001, 0)[0]
    for distance in (0.0, 1e-30, 1e-3, 2.5, float("nan"), float("inf"), 1e39):
        assert codec.choose_eps(distance, torch.from_numpy(x)) == pytest.approx(
            ref.choose_eps(distance, x), rel=0, abs=0, nan_ok=True
        )
        assert codec.choose_eps(distance) == pytest.approx(ref.choose_eps(distance), rel=0, abs=0, nan_ok=True)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lattice_payloads_and_decodes_identical_to_the_reference(bits):
    ref = hvd_compress.reference(f"lattice:bits={bits}")
    for n in LATTICE_SIZES:
        x, y = lattice_pair(n, n)
        eps = ref.choose_eps(float(np.abs(x - y).max()) if n else 1.0, x)
        got, want = lattice_encodings(bits, n, n, x, eps)
        assert got.dtype == np.uint8 and got.shape == want.shape == (ref.payload_nbytes(n),)
        assert np.array_equal(got, want), f"bits={bits} n={n}: {(got != want).sum()} bytes differ"
        assert assert_same_decode(bits, want, y)  # within the radius: exact
        if n:
            # beyond the radius (by 1.5 to 3 q steps on some values): the checksum says so
            far = y.copy()
            far[:: max(1, n // 5)] += np.float32(eps * ref.q * 1.5)
            assert not assert_same_decode(bits, want, far)
            # a reference so far that coordinates pass 2^50, or non-finite: NaN, not ok
            assert not assert_same_decode(bits, want, y * np.float32(1e30))
            nan_ref = y.copy()
            nan_ref[n // 2] = np.nan
            assert not assert_same_decode(bits, want, nan_ref)


def test_lattice_nonfinite_inputs_identical_to_the_reference():
    x, y = lattice_pair(3001, 3)
    x[17], x[2500] = np.nan, np.inf
    for bits, eps in ((8, 0.01), (4, 0.01), (8, float("nan"))):
        got, want = lattice_encodings(bits, x.size, 3, x, eps)
        assert np.array_equal(got, want)
        assert np.isnan(want[-16:-12].view(np.float32)[0])  # eps NaN on the wire
        assert not assert_same_decode(bits, want, y)
    x, _ = lattice_pair(100, 4)
    with pytest.raises(ValueError, match="too small"):  # coordinates beyond 2^50
        hc.from_spec("lattice").encode(torch.from_numpy(x), None, 1e-20)
    with pytest.raises(ValueError, match="too small"):
        hvd_compress.reference("lattice").encode(x, eps=1e-20, seed=0)
    with pytest.raises(ValueError, match="decode_relative"):
        hc.from_spec("lattice").decode(torch.zeros(116, dtype=torch.uint8), 100)
    with pytest.raises(ValueError, match="decode_relative"):
        hvd_compress.reference("lattice").decode(np.zeros(116, np.uint8), 100)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lattice_decoders_agree_on_arbitrary_payloads(bits):
    """Random residues, seeds and checksums (nearly always a checksum mismatch) decode alike."""
    ref = hvd_compress.reference(f"lattice:bits={bits}")
    rng = np.random.default_rng(bits)
    for n in (1, 9, 3001):
        p = rng.integers(0, 256, ref.payload_nbytes(n), dtype=np.uint8)
        p[-16:-12] = np.float32([0.05]).view(np.uint8)
        y = lattice_pair(n, n)[1]
        assert_same_decode(bits, p, y)
        p[-8:] = 0  # checksum 0 (what a zero coordinate vector has)
        assert_same_decode(bits, p, y)


def test_lattice_checksum_matches_torch():
    from hvd_compress.torch.codecs.lattice import Lattice

    rng = np.random.default_rng(0)
    for n in (1, 4095, 4096, 4097, 70_000):
        k = rng.integers(-(2**40), 2**40, n).astype(np.float64)
        assert Lattice(bits=4).checksum(torch.from_numpy(k)) == hvd_compress.reference("lattice:bits=4").checksum(k)


def test_a_framework_without_a_builtin_codec_does_not_run_its_reference():
    """Lattice's reference is registered, but TensorFlow has no lattice codec: its from_spec must
    keep saying so rather than build a reference-backend codec that cannot gossip."""
    from hvd_compress.spec import build

    class Base:
        pass

    known = {"none": Base, "doublesqueeze": Base}
    with pytest.raises(ValueError, match="unknown codec 'lattice'") as info:
        build("lattice:bits=8", known, Base, reference_cls=Base)
    assert "lattice" not in str(info.value).split("available:")[1]
    with pytest.raises(ValueError, match="doublesqueeze needs codec="):
        build("doublesqueeze:codec=lattice", known, Base, reference_cls=Base)
