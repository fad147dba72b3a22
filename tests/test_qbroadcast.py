"""Spec of the parameter-quantizing broadcast (hvd_compress.torch.broadcast_parameters).

One real ``horovodrun -np 2 --gloo`` job runs every scenario (tests/mp/qbroadcast_torch.py);
the tests below read its per-rank results.
"""

import pytest

from launch import horovodrun


@pytest.fixture(scope="module")
def ranks():
    return horovodrun(2, "tests/mp/qbroadcast_torch.py", timeout=300)


@pytest.mark.parametrize("case", ["full", "bits4", "delta"])
def test_replicas_identical_root_included(ranks, case):
    # the root applies the decoded values too, so every rank holds the same bits
    assert ranks[0][case]["digest"] == ranks[1][case]["digest"]


@pytest.mark.parametrize("case,bits,bucket", [("full", 8, 512), ("bits4", 4, 128), ("delta", 8, 512)])
def test_deviation_within_quantization_bound(ranks, case, bits, bucket):
    # each value moves by at most one grid step (max|v| / (2**(bits-1) - 1) of its bucket);
    # the script subtracts the step (with fp32 slack) so <= 0 means "within the bound"
    for r in ranks.values():
        assert r[case]["excess"] <= 0.0


def test_delta_error_scales_with_the_drift_not_the_weights(ranks):
    # the drift since the last sync is ~1e-3 per value; the full broadcast's error is ~1e-2
    r = ranks[0]
    assert r["delta"]["max_err"] < r["full"]["max_err"] / 20
    assert r["delta"]["state_matches"]


def test_integers_and_booleans_exact(ranks):
    for r in ranks.values():
        assert r["full"]["nbt"] == r["full"]["root_nbt"]  # BatchNorm num_batches_tracked
        assert r["mixed"]["int_exact"] and r["mixed"]["bool_exact"]
        assert r["mixed"]["dtypes"] == {
            "h": "torch.float16",
            "d": "torch.float64",
            "i": "torch.int64",
            "b": "torch.bool",
            "s": "torch.float32",
        }
        assert r["mixed"]["scalar"] == r["mixed"]["root_scalar"]  # a bucket's max is on the grid
    assert ranks[0]["mixed"]["digest"] == ranks[1]["mixed"]["digest"]


@pytest.mark.parametrize("case,bits", [("full", 8), ("bits4", 4)])
def test_bytes_about_bits_over_32_of_horovod(ranks, case, bits):
    stats = ranks[0][case]["stats"]
    ratio = stats["bytes"] / stats["fp32_bytes"]
    # nominal bits/32 plus one fp32 scale per bucket (8/512: +0.8%; 4/128: +6%), +10% margin
    assert bits / 32 <= ratio <= bits / 32 * 1.10
    if case == "full":
        assert stats["fp32_bytes"] == ranks[0]["horovod_bytes"]  # what hvd.broadcast_parameters sends


def test_unbiased_over_repeated_broadcasts(ranks):
    u = ranks[0]["unbiased"]
    # 64 independent 2-bit draws: the mean's error shrinks ~8x below one draw's; allow 4x
    assert u["mean_abs_bias"] < u["single_abs_err"] / 4


def test_bad_input_raises_on_every_rank(ranks):
    for r in ranks.values():
        e = r["errors"]
        assert "passed different tensors" in e["shape"]
        assert "'w' holds NaN or Inf on root rank 0" in e["nan"] and e["nan_untouched"]
        assert "needs state=BroadcastState()" in e["delta_no_state"]


# ------------------------------------------------------------------ the TensorFlow twin
@pytest.fixture(scope="module")
def tf_ranks():
    return horovodrun(2, "tests/mp/qbroadcast_tf.py", timeout=300)


def test_tf_broadcast_variables(tf_ranks):
    r0, r1 = tf_ranks[0], tf_ranks[1]
    for case in ("full", "delta"):
        assert r0[case]["digest"] == r1[case]["digest"]  # identical replicas, root included
        assert r0[case]["excess"] <= 0.0  # within one grid step of the root's value
    assert r0["full"]["int_exact"] and r0["full"]["bool_exact"] and r1["full"]["int_exact"]
    assert r0["full"]["dtypes"] == ["int64", "bool", "float16"]
    for case, bits in (("full", 8), ("delta", 4)):
        ratio = r0[case]["stats"]["bytes"] / r0[case]["stats"]["fp32_bytes"]
        assert bits / 32 <= ratio <= bits / 32 * 1.10
    assert r0["delta"]["max_err"] < 2e-3  # the drift was ~1e-3 per value: the error follows it
    for r in (r0, r1):
        assert "passed different variables" in r["errors"]["shape"]
        assert "holds NaN or Inf on root rank 0" in r["errors"]["nan"]


def test_torch_and_numpy_payloads_byte_identical():
    # the TF broadcast encodes with hvd_compress.lowprec; its bytes equal the torch QSGD codec's
    import numpy as np
    import torch
    from hvd_compress import lowprec
    from hvd_compress.torch import QSGD

    rng = np.random.default_rng(0)
    for bits in (2, 4, 8):
        for n in (1, 513, 3000):
            v = rng.normal(size=n).astype(np.float32)
            noise = rng.random(n, dtype=np.float32)
            a = lowprec.encode(v, bits, 512, noise=noise)
            b = QSGD(bits=bits, bucket_size=512).encode(torch.from_numpy(v), noise=torch.from_numpy(noise))
            assert a.tobytes() == b.numpy().tobytes()
