"""Spec: the TensorFlow and torch codecs share one wire format, byte for byte.

For the same input and the same random draws (``encode(x, noise=u)``; TernGrad also gets the
same shared ``scale``, which the exchange agrees on by allreduce-MAX), every codec's payload is
byte-identical in both frameworks, and each framework decodes the other's payloads to the same
values. Error-feedback codecs (OneBit, EFSign, TopK, DoubleSqueeze) also keep identical residuals
over several steps, so their payloads stay identical step after step.

Inputs: multiples of 1/16 (every reduction in the codecs, means and norms included, is exact in
fp32 whatever the summation order, so results cannot depend on how each framework's kernels sum),
with exact zeros, -0.0 and an all-zero bucket; and generic ``randn`` values for the codecs whose
payload depends only on order-free operations (max, comparisons, elementwise math). For generic
inputs the sum-based scales (OneBit's means, EFSign's and SignSGD's mean |x|, QSGD's L2 norm) may
differ in the last bit between frameworks: fp32 sums are not associative (tested below as
"codes identical, scales within 1e-6 relative").
"""

from __future__ import annotations

import os

import codec_cases
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

import hvd_compress.tensorflow as hct  # noqa: E402
import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.common import chunk_bounds, packed_nbytes  # noqa: E402

# From the one table of per-codec test facts (tests/codec_cases.py). Order-free: the bytes do not
# depend on the float summation order, so generic inputs must match too.
SPECS = codec_cases.specs("wire")
ORDER_FREE = set(SPECS) - codec_cases.sum_based("wire")
SIZES = [1, 7, 3001, 40_000]


def grid(n, seed):
    rng = np.random.default_rng(seed)
    x = (rng.integers(-16, 17, n) / 16).astype(np.float32)
    x[5:9] = 0.0
    x[9:10] = -0.0
    x[1024:2048] = 0.0
    return x


def randn(n, seed):
    return (np.random.default_rng(seed).standard_normal(n) * 1e-3).astype(np.float32)


def quantizer(codec):
    """The payload-producing codec under error-feedback / DoubleSqueeze wrappers."""
    while hasattr(codec, "inner"):
        codec = codec.inner
    return codec


def encode_both(spec, x, seed=0):
    tq, fq = quantizer(hc.from_spec(spec)), quantizer(hct.from_spec(spec))
    kw_t, kw_f = {}, {}
    if tq.stochastic:
        u = np.random.default_rng(seed + 1).random(x.size, dtype=np.float32)
        kw_t["noise"], kw_f["noise"] = torch.from_numpy(u), tf.constant(u)
    if tq.shared_scale:
        s = tq.local_scale(torch.from_numpy(x))
        kw_t["scale"], kw_f["scale"] = s, tf.constant(s.numpy())
    pt = tq.encode(torch.from_numpy(x), **kw_t).numpy()
    pf = fq.encode(tf.constant(x), **kw_f).numpy()
    return tq, fq, pt, pf


@pytest.mark.parametrize("spec", SPECS)
def test_same_settings_same_fingerprint_same_sizes(spec):
    t, f = hc.from_spec(spec), hct.from_spec(spec)
    assert f.describe() == t.describe() and f.fingerprint() == t.fingerprint()
    for n in SIZES + [0, 65536]:
        assert f.payload_nbytes(n) == t.payload_nbytes(n)
    assert (f.summable, f.stochastic, f.sparse, f.shared_scale, f.alignment()) == (
        t.summable,
        t.stochastic,
        t.sparse,
        t.shared_scale,
        t.alignment(),
    )


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("spec", SPECS)
def test_payload_bytes_identical_and_cross_decodable(spec, n):
    inputs = [grid(n, n)] + ([randn(n, n)] if spec in ORDER_FREE else [])
    for x in inputs:
        tq, fq, pt, pf = encode_both(spec, x)
        assert pf.dtype == np.uint8 and pf.shape == pt.shape == (tq.payload_nbytes(n),)
        assert np.array_equal(pt, pf), f"{spec} n={n}: {(pt != pf).sum()} bytes differ"
        from_torch_in_tf = fq.decode(tf.constant(pt), n).numpy()
        from_tf_in_torch = tq.decode(torch.from_numpy(pf), n).numpy()
        assert np.array_equal(from_torch_in_tf, from_tf_in_torch)
        assert np.array_equal(from_torch_in_tf, tq.decode(torch.from_numpy(pt), n).numpy())


@pytest.mark.parametrize("spec", sorted(set(SPECS) - ORDER_FREE))
def test_generic_inputs_codes_identical_scales_close(spec):
    n = 40_000
    x = randn(n, 3)
    tq, fq, pt, pf = encode_both(spec, x)
    ncode = packed_nbytes(n, getattr(tq, "bits", 1))
    assert pt.shape == pf.shape
    if spec != "qsgd:bits=4,norm=l2":  # L2 scale feeds the levels; sign codecs' codes are pure signs
        assert np.array_equal(pt[:ncode], pf[:ncode])
    st, sf = pt[ncode:].view(np.float32), pf[ncode:].view(np.float32)
    np.testing.assert_allclose(sf, st, rtol=1e-6)  # fp32 summation order only
    dt = tq.decode(torch.from_numpy(pt), n).numpy()
    np.testing.assert_allclose(fq.decode(tf.constant(pt), n).numpy(), dt, rtol=0, atol=0)


@pytest.mark.parametrize(
    "spec",
    ["onebit", "efsign", "topk:ratio=0.01", "signsgd", "doublesqueeze:codec=onebit", "doublesqueeze:codec=efsign"],
)
def test_error_feedback_over_steps(spec):
    """Three steps of the worker encoder (3 chunks, as under a 3-worker reduce-scatter) and, for
    DoubleSqueeze, of the owner's re-encode. From a zero residual the payloads and the new
    residuals are byte-identical. Later steps encode ``g + e`` where ``e`` holds inexact means, so
    the sum-based scales may then differ in the last bit (see the module docstring): payloads
    decode within fp32 rounding of each other, and TopK (no means) stays byte-identical."""
    t, f = hc.from_spec(spec), hct.from_spec(spec)
    n = 5000
    bounds = chunk_bounds(n, 3, t.alignment())
    exact_always = spec in ("topk:ratio=0.01", "signsgd")
    for step in range(3):
        x = grid(n, 100 + step)
        pt = t.worker_encode(torch.from_numpy(x), "w", bounds, lambda i, p: None)
        pf = f.worker_encode(tf.constant(x), "w", bounds, lambda i, p: None)
        for (a, b), ct, cf in zip(bounds, pt, pf):
            if step == 0 or exact_always:
                assert np.array_equal(ct.numpy(), cf.numpy()), f"step {step}"
            else:
                np.testing.assert_allclose(
                    f.decode(cf, b - a).numpy(), t.decode(ct, b - a).numpy(), rtol=1e-5, atol=1e-6
                )
        if spec.startswith("doublesqueeze"):
            lo, hi = bounds[1]
            mean = grid(hi - lo, 200 + step)
            st = t.server_encode(torch.from_numpy(mean), "w", lambda i, p: None, 1)
            sf = f.server_encode(tf.constant(mean), "w", lambda i, p: None, 1)
            if step == 0:
                assert np.array_equal(st.numpy(), sf.numpy())
        if getattr(t, "worker_feedback", False) or hasattr(t, "inner"):
            rt = (t.state.get("residual") or t.inner.state["residual"])["w"].numpy()
            rf = f.residual_of("w").numpy()
            if step == 0 or exact_always:
                assert np.array_equal(rt, rf), f"residual step {step}"
            else:
                np.testing.assert_allclose(rf, rt, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", ["signsgd", "topk:ratio=0.01", "qsgd:bits=4", "onebit"])
def test_aggregate_of_mixed_payloads_identical(spec):
    """A chunk owner averaging payloads that came from both frameworks gets the same result."""
    n = 3001
    xs = [grid(n, 10 + r) for r in range(3)]
    tq = quantizer(hc.from_spec(spec))
    fq = quantizer(hct.from_spec(spec))
    payloads = [encode_both(spec, x, seed=r)[2 + (r % 2)] for r, x in enumerate(xs)]
    at = tq.aggregate([torch.from_numpy(p) for p in payloads], n).numpy()
    af = fq.aggregate([tf.constant(p) for p in payloads], n).numpy()
    np.testing.assert_array_equal(af, at)


def test_qsgd_inverse_scale_rounds_as_in_torch():
    """torch evaluates ``levels / scale`` as ``reciprocal(scale) * levels``; a true division differs
    from it in the last bit for about a quarter of the scales, which flips a code when a uniform
    falls between the two fractional parts. Here it does, on purpose."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    for _ in range(10_000):
        s, v = f32(rng.uniform(1e-3, 1e-2)), f32(rng.uniform(1e-4, 1e-3))
        y_torch = f32(v * f32(f32(1) / s * f32(127)))
        y_true = f32(v * f32(f32(127) / s))
        if y_torch != y_true and np.floor(y_torch) == np.floor(y_true):
            break
    fracs = sorted([y_torch - np.floor(y_torch), y_true - np.floor(y_true)])
    x = np.array([s, v] + [0.0] * 6, np.float32)
    u = np.full(8, 0.5, np.float32)
    u[1] = fracs[0]  # below one fractional part, not below the other
    pt = hc.QSGD(bits=8).encode(torch.from_numpy(x), noise=torch.from_numpy(u)).numpy()
    pf = hct.QSGD(bits=8).encode(tf.constant(x), noise=tf.constant(u)).numpy()
    assert np.array_equal(pt, pf)


def test_topk_canonical_ties_to_lower_indices():
    x = np.array([1, -3, 3, 0.5, 2, 2, 2, -2] * 10, np.float32)  # k = 8 of 80: ties at |3|
    _, _, pt, pf = encode_both("topk:ratio=0.1", x)
    assert np.array_equal(pt, pf)
    idx = pt[:32].view(np.int32)
    assert list(idx) == [1, 2, 9, 10, 17, 18, 25, 26]
