"""Spec: the TensorFlow codecs, one conformance table every codec passes, and their bad-input behaviour.

Single process. The exchange tests use Horovod TensorFlow initialized in this process (world size
1: real Horovod ops, a one-rank job); the multi-process behaviour is in ``test_tf_horovod.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

import hvd_compress.tensorflow as hct  # noqa: E402
from hvd_compress.tensorflow import packing  # noqa: E402

SPECS = [
    "none",
    "fp16",
    "bf16",
    "qsgd:bits=2,bucket_size=128",
    "qsgd:bits=4",
    "qsgd:bits=8",
    "qsgd:bits=4,norm=l2",
    "terngrad",
    "terngrad:packing=2bit",
    "onebit",
    "efsign",
    "signsgd",
    "signsgd:scaled=false",
    "topk:ratio=0.01",
    "doublesqueeze:codec=onebit",
    "doublesqueeze:codec=qsgd,bits=4",
]


def quantizer(codec):
    while hasattr(codec, "inner"):
        codec = codec.inner
    return codec


def encode(codec, x, seed=(1, 2), noise=None):
    kw = {}
    if codec.stochastic:
        kw["seed"] = tf.constant(seed, tf.int64) if noise is None else None
        kw["noise"] = noise
    if codec.shared_scale:
        kw["scale"] = codec.local_scale(x)
    return codec.encode(x, **kw)


# ------------------------------------------------------------------ conformance table
@pytest.mark.parametrize("spec", SPECS)
def test_conformance_sizes_shapes_and_tracing(spec):
    q = quantizer(hct.from_spec(spec))
    rng = np.random.default_rng(0)
    for n in (1, 7, 1000, 4097):
        x = tf.constant(rng.standard_normal(n).astype(np.float32))
        u = tf.constant(rng.random(n, dtype=np.float32))
        payload = encode(q, x, noise=u)
        assert payload.dtype == tf.uint8 and payload.shape == (q.payload_nbytes(n),)
        out = q.decode(payload, n)
        assert out.dtype == tf.float32 and out.shape == (n,)
        traced = tf.function(lambda t, v: encode(q, t, noise=v))(x, u)  # traceable, same bytes
        np.testing.assert_array_equal(traced.numpy(), payload.numpy())


@pytest.mark.parametrize("spec", ["none", "fp16"])
def test_lossless_round_trips_are_bit_exact(spec):
    q = hct.from_spec(spec)
    x = np.random.default_rng(1).standard_normal(3001).astype(np.float32)
    if spec == "fp16":
        x = x.astype(np.float16).astype(np.float32)  # representable values come back exactly
    np.testing.assert_array_equal(q.decode(q.encode(tf.constant(x)), x.size).numpy(), x)


@pytest.mark.parametrize(
    "spec,bucket", [("qsgd:bits=4,bucket_size=64", 64), ("qsgd:bits=2,bucket_size=64", 64), ("terngrad:clip=none", 64)]
)
def test_stochastic_codecs_are_unbiased(spec, bucket):
    """2000 copies of one 64-value pattern, one per bucket (same scale everywhere), each rounded
    with independent draws: the mean over copies estimates E[decode] at each position."""
    q = hct.from_spec(spec)
    pattern = np.random.default_rng(2).uniform(-1, 1, bucket).astype(np.float32)
    pattern[0] = 1.0  # every bucket's max-abs is 1
    reps = 2000
    x = tf.constant(np.tile(pattern, reps))
    decoded = q.decode(encode(q, x, seed=(5, 6)), x.shape[0]).numpy().reshape(reps, bucket)
    # per-value std <= step/2 (step = 1/s for QSGD, 1 for TernGrad): 6 standard errors
    step = 1.0 / q.levels if hasattr(q, "levels") else 1.0
    np.testing.assert_allclose(decoded.mean(0), pattern, atol=6 * (step / 2) / np.sqrt(reps))


@pytest.mark.parametrize("spec", ["onebit", "efsign", "topk:ratio=0.01", "doublesqueeze:codec=qsgd,bits=4"])
def test_error_feedback_identity(spec):
    """C(p) + e_new == g + e_old every step (up to the rounding of one fp32 subtraction)."""
    codec = hct.from_spec(spec)
    rng = np.random.default_rng(3)
    n = 5000
    bounds = [(0, 2048), (2048, n)]
    draw = (lambda i, p: tf.constant([i, p], tf.int64)) if codec.stochastic else (lambda i, p: None)
    e_old = np.zeros(n, np.float32)
    for _ in range(3):
        g = rng.standard_normal(n).astype(np.float32)
        payloads = codec.worker_encode(tf.constant(g), "layer/kernel", bounds, draw)
        sent = np.concatenate([codec.decode(p, b - a).numpy() for p, (a, b) in zip(payloads, bounds)])
        e_new = codec.residual_of("layer/kernel").numpy()
        np.testing.assert_allclose(sent + e_new, g + e_old, rtol=0, atol=1e-6)
        e_old = e_new
    assert codec.residual_of("layer/kernel").name.startswith("hvd_compress/residual/layer/kernel")


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([1, 2, 4, 8]), n=st.integers(0, 300), seed=st.integers(0, 2**16))
def test_pack_unpack_round_trip(bits, n, seed):
    codes = np.random.default_rng(seed).integers(0, 2**bits, n).astype(np.int32)
    packed = packing.pack_bits(tf.constant(codes), bits)
    assert packed.shape == (packing.packed_nbytes(n, bits),)
    np.testing.assert_array_equal(packing.unpack_bits(packed, bits, n).numpy(), codes)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 300), seed=st.integers(0, 2**16))
def test_base3_round_trip(n, seed):
    codes = np.random.default_rng(seed).integers(0, 3, n).astype(np.int32)
    packed = packing.pack_base3(tf.constant(codes))
    assert packed.shape == (packing.base3_nbytes(n),)
    np.testing.assert_array_equal(packing.unpack_base3(packed, n).numpy(), codes)


# ------------------------------------------------------------------ bad input, codec level
@pytest.mark.parametrize("spec", [s for s in SPECS if s != "signsgd:scaled=false"])
def test_zero_and_empty_are_exact(spec):
    """(Bare signSGD, ``scaled=False``, sends +1 for 0 by design: its 1-bit code has no zero.)"""
    q = quantizer(hct.from_spec(spec))
    zeros = tf.zeros([3000])
    np.testing.assert_array_equal(q.decode(encode(q, zeros), 3000).numpy(), np.zeros(3000))
    empty = q.decode(encode(q, tf.zeros([0])), 0)
    assert empty.shape == (0,)


@pytest.mark.parametrize("spec", [s for s in SPECS if s not in ("none", "fp16", "bf16")])
def test_nonfinite_input_never_decodes_to_finite_garbage(spec):
    """A NaN or Inf in a chunk makes (at least) its bucket decode to NaN: never a silent finite value."""
    q = quantizer(hct.from_spec(spec))
    for bad in (np.nan, np.inf):
        x = np.random.default_rng(4).standard_normal(4096).astype(np.float32)
        x[100] = bad
        out = q.decode(encode(q, tf.constant(x)), x.size).numpy()
        assert np.isnan(out).any(), f"{spec} with {bad}"


def test_bad_specs_list_what_exists():
    with pytest.raises(
        ValueError, match="available: bf16, doublesqueeze, efsign, fp16, gradiveq, none, onebit, powersgd"
    ):
        hct.from_spec("qsdg:bits=4")
    with pytest.raises(ValueError, match="does not take \\['bitz'\\]"):
        hct.from_spec("qsgd:bitz=4")
    with pytest.raises(ValueError, match="bits must be 2, 4 or 8"):
        hct.from_spec("qsgd:bits=3")
    with pytest.raises(ValueError, match="non-summable"):
        hct.DoubleSqueeze(hct.FP16())


# ------------------------------------------------------------------ exchange on a one-rank Horovod job
@pytest.fixture(scope="module")
def hvd():
    import horovod.tensorflow as hvd

    hvd.init()
    return hvd


@pytest.mark.parametrize("spec", ["qsgd:bits=4", "onebit", "doublesqueeze:codec=onebit", "terngrad", "fp16"])
def test_reducer_in_tf_function_matches_codec_and_counts_bytes(hvd, spec):
    hct.reset_wire_stats()
    reducer = hct.GradientReducer(spec)
    w = tf.Variable(tf.zeros([64, 128]), name=f"dense_{spec.split(':')[0]}/kernel")
    b = tf.Variable(tf.zeros([128]), name=f"dense_{spec.split(':')[0]}/bias")
    g = tf.constant(np.random.default_rng(5).standard_normal([64, 128]).astype(np.float32))
    step = tf.function(lambda gw, gb: reducer([gw, gb], [w, b]))
    for _ in range(2):
        out_w, out_b = step(g, tf.ones([128]))
    assert out_w.shape == (64, 128) and out_w.dtype == tf.float32
    np.testing.assert_array_equal(out_b.numpy(), np.ones(128))  # 1-D: uncompressed, exact
    err = np.abs(out_w.numpy() - g.numpy()).max() / np.abs(g.numpy()).max()
    assert err < 1.0  # one rank: the codec's own round trip (TopK/sign would be coarser)
    stats = hct.wire_stats()
    row = stats[reducer.codec.describe()]
    assert row["values"] == 2 * 64 * 128 and row["tensors"] == 2
    extra = 4 if reducer.codec.shared_scale else 0  # TernGrad's scale agreement (allreduce-MAX)
    expected = 8.0 * (reducer.codec.payload_nbytes(64 * 128) + extra) / (64 * 128)
    assert row["bits_per_value"] == pytest.approx(expected, rel=1e-9)
    assert stats["uncompressed"]["values"] == 2 * 128


def test_reducer_nonfinite_raise_names_the_tensor(hvd):
    w = tf.Variable(tf.zeros([64, 32]), name="blocks/3/kernel")
    reducer = hct.GradientReducer("qsgd:bits=4")
    g = np.ones([64, 32], np.float32)
    g[1, 1] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="gradient 'blocks/3/kernel' holds NaN or Inf"):
        tf.function(lambda t: reducer([t], [w]))(tf.constant(g))
    propagate = hct.GradientReducer("qsgd:bits=4,nonfinite=propagate")
    out = propagate([tf.constant(g)], [w])[0].numpy()
    assert np.isnan(out).any() and np.isfinite(out.reshape(-1)[512:]).all()
    assert np.all(propagate.codec.state["step"]["blocks/3/kernel"].numpy() == 1)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_reducer_keeps_gradient_dtypes(hvd, dtype):
    w = tf.Variable(tf.zeros([64, 64], dtype), name=f"dt_{dtype}/kernel")
    g = tf.cast(tf.fill([64, 64], 0.25), dtype)
    out = hct.GradientReducer("qsgd:bits=8")([g], [w])[0]
    assert out.dtype == tf.as_dtype(dtype)
    np.testing.assert_allclose(tf.cast(out, tf.float64).numpy(), 0.25, rtol=1e-2)


def test_duplicate_variable_names_are_refused(hvd):
    a, b = tf.Variable(tf.zeros([64, 32]), name="same"), tf.Variable(tf.zeros([64, 32]), name="same")
    with pytest.raises(ValueError, match="variable names must be unique"):
        hct.GradientReducer("onebit")([tf.ones([64, 32])] * 2, [a, b])


def test_state_built_up_front_restores_from_checkpoint(hvd, tmp_path):
    """Residuals exist after build() (before any step), are named after their variables, and a
    tf.train.Checkpoint of the codec restores them."""
    w = tf.Variable(tf.zeros([64, 64]), name="enc/kernel")
    first = hct.GradientReducer("onebit")
    first([tf.random.stateless_normal([64, 64], seed=[1, 1])], [w])
    path = tf.train.Checkpoint(compression=first.codec).save(str(tmp_path / "ckpt"))
    second = hct.GradientReducer("onebit")
    second.build([w])
    assert second.codec.residual_of("enc/kernel").name == "hvd_compress/residual/enc/kernel:0"
    tf.train.Checkpoint(compression=second.codec).restore(path).assert_consumed()
    np.testing.assert_array_equal(
        second.codec.residual_of("enc/kernel").numpy(), first.codec.residual_of("enc/kernel").numpy()
    )
    # restored before the state exists: TF's deferred restoration fills it when the first step
    # creates it (a zero gradient sends C(e) and keeps e - C(e): their sum is the restored e)
    lazy = hct.GradientReducer("onebit")
    tf.train.Checkpoint(compression=lazy.codec).restore(path)
    sent = lazy([tf.zeros([64, 64])], [w])[0].numpy().reshape(-1)
    np.testing.assert_allclose(
        sent + lazy.codec.residual_of("enc/kernel").numpy(), first.codec.residual_of("enc/kernel").numpy(), atol=1e-6
    )
