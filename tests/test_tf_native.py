"""Spec: the TF codecs' native path (hvd_compress.tensorflow.native) gives the plain TF ops' payloads.

Same input, same seed: the kernels' Philox draws are ``tf.random.stateless_uniform``'s bit for bit,
so stochastic codes are identical; on inputs whose sums are exact in fp32 (multiples of 1/16) the
whole payload is identical, eagerly and inside ``tf.function``; decoding matches the plain ops.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

import hvd_compress.tensorflow as hct  # noqa: E402
from hvd_compress import _native  # noqa: E402
from hvd_compress.tensorflow import native  # noqa: E402

pytestmark = pytest.mark.skipif(not _native.enabled(), reason="native kernels unavailable")

SPECS = [
    "qsgd:bits=4",
    "qsgd:bits=2,bucket_size=128",
    "qsgd:bits=8,norm=l2",
    "terngrad",
    "terngrad:packing=2bit",
    "onebit",
    "onebit:bucket_size=64",
    "efsign",
]


def quantizer(spec):
    c = hct.from_spec(spec)
    while hasattr(c, "inner"):
        c = c.inner
    return c


def grid(n, seed):
    x = (np.random.default_rng(seed).integers(-16, 17, n) / 16).astype(np.float32)
    x[3:7] = 0.0
    return x


@pytest.mark.parametrize("simd", [1, 0])
@pytest.mark.parametrize("seed", [(1, 2), (123456789012345, -5), (2**63 - 1, 0)])
@pytest.mark.parametrize("n", [1, 5, 4099])
def test_kernel_uniforms_are_tf_stateless_uniform(seed, n, simd):
    ref = tf.random.stateless_uniform([n], seed=tf.constant(seed, tf.int64)).numpy()
    lib = _native.load()
    lib.hvdc_set_simd(simd)  # the AVX2 rounds and the scalar loop draw the same bits
    try:
        assert (native.tf_uniform(np.array(seed), n).view(np.uint32) == ref.view(np.uint32)).all()
    finally:
        lib.hvdc_set_simd(1)


def encode(codec, x, seed):
    kw = {"seed": tf.constant(seed, tf.int64)} if codec.stochastic else {}
    if codec.shared_scale:
        kw["scale"] = codec.local_scale(x)
    return codec.encode(x, **kw)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("n", [1, 1000, 40_001])
def test_native_payloads_equal_plain_ops_eager_and_in_graph(spec, n):
    codec = quantizer(spec)
    x = tf.constant(grid(n, n))
    with _native.forced(False):
        plain = encode(codec, x, (7, 8)).numpy()
        plain_dec = codec.decode(tf.constant(plain), n).numpy()
    fast = encode(codec, x, (7, 8)).numpy()
    graph = tf.function(lambda t: encode(codec, t, (7, 8)))(x).numpy()
    assert fast.tobytes() == plain.tobytes() and graph.tobytes() == plain.tobytes()
    dec = codec.decode(tf.constant(fast), n).numpy()
    graph_dec = tf.function(lambda p: codec.decode(p, n))(tf.constant(fast)).numpy()
    assert dec.tobytes() == plain_dec.tobytes() and graph_dec.tobytes() == plain_dec.tobytes()


@pytest.mark.parametrize("spec", ["qsgd:bits=4", "terngrad", "onebit", "efsign"])
def test_generic_inputs_same_codes_scales_within_an_ulp(spec):
    codec, n = quantizer(spec), 50_000
    x = tf.constant((np.random.default_rng(3).standard_normal(n) * 1e-3).astype(np.float32))
    with _native.forced(False):
        plain = encode(codec, x, (1, 2)).numpy()
    fast = encode(codec, x, (1, 2)).numpy()
    nbuckets = -(-n // getattr(codec, "bucket_size", n))
    nscale = {"qsgd": 4 * nbuckets, "terngrad": 4, "onebit_quantizer": 8 * nbuckets, "scaled_sign": 4}[codec.name]
    ncode = len(plain) - nscale
    assert fast[:ncode].tobytes() == plain[:ncode].tobytes()
    np.testing.assert_allclose(fast[ncode:].view(np.float32), plain[ncode:].view(np.float32), rtol=1e-6)


def test_eager_calls_share_buffers_with_tf_no_copies():
    """In eager mode the kernels read the input tensor's own buffer and TF wraps their 64-byte
    aligned output without a copy (a copy each way cost as much as the whole encode)."""
    x = tf.random.normal([100_003])
    a, b = native.to_numpy(x), native.to_numpy(x)
    assert a.ctypes.data == b.ctypes.data and not a.flags.writeable
    out = native.empty(100_003, np.float32)
    assert out.ctypes.data % native.ALIGN == 0 and out.shape == (100_003,)
    t = native.to_tensor(out)
    assert native.to_numpy(t).ctypes.data == out.ctypes.data
    p = native.empty(17, np.uint8)
    assert p.ctypes.data % native.ALIGN == 0 and p.dtype == np.uint8 and p.shape == (17,)
