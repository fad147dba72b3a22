"""Spec of the double-quantization parameter server (hvd_compress.ps) and its quantizer.

The first half runs in-process (quantizer, wire format, a shard's message checks); the second
half runs real Ray actors on a tiny logistic-regression problem (one local Ray for the module).
"""

import numpy as np
import pytest

from hvd_compress import lowprec
from hvd_compress.ps import (
    HEADER_BITS,
    AccAsyLPG,
    AsyFPG,
    AsyLPG,
    MalformedMessage,
    Message,
    SparseAsyLPG,
    synthetic_logistic,
)
from hvd_compress.ps import wire
from hvd_compress.ps.runtime import ServerShard


# ---------------------------------------------------------------------------------- quantizer
@pytest.mark.parametrize("bits", [2, 3, 5, 8, 12])
def test_quantizer_unbiased_and_within_one_step(bits):
    rng = np.random.default_rng(bits)
    v = rng.normal(size=300).astype(np.float32)
    reps = 2000
    draws = np.stack([lowprec.decode(lowprec.encode(v, bits, None, rng=rng), v.size, bits) for _ in range(reps)])
    step = np.abs(v).max() / lowprec.levels(bits)
    assert np.all(np.abs(draws - v) <= step * (1 + 1e-5))
    # per-value std of one draw <= step/2, so the mean of 2000 draws is within 5 sigma of v
    assert np.all(np.abs(draws.mean(0) - v) <= 5 * (step / 2) / np.sqrt(reps) + 1e-6)
    # the exact variance formula the precision rule relies on matches the empirical one (10%)
    emp = np.mean(np.sum((draws - v) ** 2, axis=1))
    assert emp == pytest.approx(lowprec.expected_sq_error(v, bits), rel=0.1)


def test_fewest_bits_is_the_fewest_that_meets_the_budget():
    rng = np.random.default_rng(0)
    v = rng.normal(size=500)
    for budget in (10.0, 1.0, 1e-2, 1e-4):
        b = lowprec.fewest_bits(v, budget)
        assert lowprec.expected_sq_error(v, b) <= budget
        assert b == 2 or lowprec.expected_sq_error(v, b - 1) > budget
    assert lowprec.fewest_bits(v, 0.0) is None  # only the exact model meets a zero budget


@pytest.mark.parametrize("bits", list(range(1, 33)))
def test_pack_roundtrip_any_width(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, size=77, dtype=np.uint64)
    packed = lowprec.pack_codes(codes, bits)
    assert packed.size == lowprec.packed_nbytes(77, bits)  # real packed size: ceil(77 * bits / 8)
    assert np.array_equal(lowprec.unpack_codes(packed, bits, 77).astype(np.uint64), codes)


def test_sparsification_unbiased_with_expected_budget():
    rng = np.random.default_rng(1)
    v = (rng.normal(size=200) * rng.exponential(size=200)).astype(np.float32)
    p = lowprec.keep_probabilities(v, 40)
    assert p.sum() == pytest.approx(40) and p.max() <= 1
    reps, acc, kept = 4000, np.zeros(200), 0
    for _ in range(reps):
        idx, vals = lowprec.sparsify(v, 40, rng)
        acc[idx] += vals
        kept += idx.size
    assert kept / reps == pytest.approx(40, rel=0.05)
    # each coordinate's estimator has std |v|*sqrt((1-p)/p); 5 sigma over 4000 draws
    sd = np.abs(v) * np.sqrt((1 - p) / np.maximum(p, 1e-12)) / np.sqrt(reps)
    assert np.all(np.abs(acc / reps - v) <= 5 * sd + 1e-6)


@pytest.mark.parametrize("phi", [0.02, 0.5])  # index list and bitmap formats
def test_sparse_wire_roundtrip_and_size(phi):
    rng = np.random.default_rng(2)
    v = rng.normal(size=1000).astype(np.float32)
    enc = wire.sparse(v, 8, phi * 1000, np.random.default_rng(3))
    msg = wire.encode("gradient", 0, 0, enc, 1000)
    out = wire.decode(msg)
    nnz = int(np.count_nonzero(out))
    index = min(1000, nnz * 10)  # bitmap (1000 bits) or 10-bit indices, whichever is smaller
    assert msg.payload.size == 5 + -(-index // 8) + -(-nnz * 8 // 8) + 4
    assert msg.nbits() == HEADER_BITS + 8 * msg.payload.size


# ---------------------------------------------------------------------------------- a shard's checks
def _shard(alg=None, n=10):
    s = ServerShard(0, np.zeros(n), alg or AsyLPG(step_size=0.1), inner_steps=100, checkpoint_every=10)
    s.begin_epoch(0)
    return s


def _grad(n=10, **kw):
    base = dict(
        kind="gradient",
        sender=0,
        epoch=0,
        version=0,
        encoding="fp32",
        bits=32,
        n=n,
        payload=np.ones(n, "<f4").view(np.uint8),
    )
    base.update(kw)
    return Message(**base)


@pytest.mark.parametrize(
    "bad,reason",
    [
        ("not a message", "not an hvd_compress.ps.wire.Message"),
        (_grad(kind="delete_everything"), "kind must be one of"),
        (_grad(n=11, payload=np.ones(11, "<f4").view(np.uint8)), "this receiver holds 10 values"),
        (_grad(payload=np.ones(9, "<f4").view(np.uint8)), "must have 40 bytes"),
        (_grad(payload=np.full(10, np.nan, "<f4").view(np.uint8)), "NaN or Inf"),
        (_grad(payload=np.ones(10, np.float64)), "1-D uint8"),
        (_grad(encoding="quant", bits=40), "bits must be in"),
        (_grad(encoding="quant", bits=4, payload=np.zeros(3, np.uint8)), "has 9 bytes, got 3"),
        (
            _grad(
                encoding="quant",
                bits=2,
                payload=np.concatenate([np.full(3, 255, np.uint8), np.ones(1, "<f4").view(np.uint8)]),
            ),
            "outside the 2-bit grid",
        ),
        (_grad(encoding="sparse", bits=8, payload=np.array([99, 0, 0, 0, 0], np.uint8)), "99 survivors"),
        (_grad(version=5), "computed on version 5"),
        (_grad(epoch="0"), "epoch must be an integer"),
        (_grad(encoding="same", payload=np.zeros(0, np.uint8)), "must carry values"),
        (
            Message(kind="pull_model", sender=0, epoch=0, encoding="fp32", n=10, payload=np.zeros(40, np.uint8)),
            "carries no payload",
        ),
    ],
)
def test_malformed_messages_rejected_with_a_clear_error(bad, reason):
    shard = _shard()
    before = shard.state["x"].copy()
    with pytest.raises(MalformedMessage, match=reason):
        shard.handle(bad)
    assert np.array_equal(shard.state["x"], before) and shard.version == 0
    assert shard.rejected == 1
    ok = shard.handle(_grad())  # the shard keeps serving
    assert ok.kind == "model" and shard.version == 1


def test_every_message_is_counted_from_its_payload():
    shard = _shard(AsyFPG(step_size=0.1), n=10)
    reply = shard.handle(Message(kind="pull_model", sender=0, epoch=0))
    assert reply.encoding == "same"  # x is the snapshot: nothing to send
    reply = shard.handle(_grad())
    assert reply.encoding == "fp32"
    assert shard.bits["up:pull_model"] == HEADER_BITS
    assert shard.bits["up:gradient"] == HEADER_BITS + 32 * 10
    assert shard.bits["down:model"] == 2 * HEADER_BITS + 32 * 10
    assert shard.staleness == [0]


def test_model_precision_rule():
    # AsyLPG pulls use the fewest bits with E||Q(x)-x||^2 <= mu ||x - x_snapshot||^2
    alg = AsyLPG(step_size=0.1, mu=0.5)
    rng = np.random.default_rng(0)
    snap = rng.normal(size=400)
    for scale in (1e-1, 1e-3):
        x = snap + scale * rng.normal(size=400)
        enc, bits, payload = alg.encode_model(x, snap, rng)
        assert enc == "quant" and payload.size == lowprec.payload_nbytes(400, bits)
        budget = 0.5 * np.sum((x - snap) ** 2)
        assert lowprec.expected_sq_error(x, bits) <= budget < lowprec.expected_sq_error(x, bits - 1)
    assert alg.encode_model(snap, snap, rng)[0] == "same"


# ---------------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def ray_session():
    from hvd_compress.ps.runtime import ensure_ray

    ray = ensure_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny():
    from hvd_compress.ps.experiment import optimum

    problem = synthetic_logistic(n_samples=256, dim=256, density=0.1, lam=1e-3, seed=1)
    # a loose target: 0.02 above the optimum (0.413; the initial loss is log 2 = 0.693);
    # full-precision SVRG needs about 4 epochs of 32 updates
    return problem, optimum(problem) + 0.02


ALGS = [
    AsyFPG(step_size=4.0),
    AsyLPG(step_size=4.0, bits=8),
    SparseAsyLPG(step_size=4.0, bits=8, phi=0.3),
    AccAsyLPG(step_size=8.0, bits=8, theta=0.5),
]


@pytest.fixture(scope="module")
def results(ray_session, tiny):
    from hvd_compress.ps import run

    problem, target = tiny
    return {
        a.name: run(problem, a, num_workers=2, num_shards=2, epochs=15, batch_size=8, target_loss=target) for a in ALGS
    }


@pytest.mark.parametrize("name", [a.name for a in ALGS])
def test_each_algorithm_reaches_a_loose_target(results, tiny, name):
    r = results[name]
    assert r.bits_to_target is not None, r.history
    assert r.final_loss <= tiny[1]
    assert r.staleness["count"] == r.shards[0]["version"] + r.shards[1]["version"]
    assert r.dead_workers == [] and r.rejected == 0


def test_bits_are_counted_exactly(results):
    r = results["AsyFPG"]
    assert r.total_bits == sum(r.bits_by_kind.values()) > 0
    for s in r.shards:  # fp32 gradients: header + 32 bits per value, message by message
        assert s["bits"]["up:gradient"] == s["messages"]["up:gradient"] * (HEADER_BITS + 32 * s["n"])
    fp = results["AsyFPG"].bits_per_update
    assert results["AsyLPG"].bits_per_update < fp / 2.5  # 8-bit gradients + adaptive-precision models
    assert results["Sparse-AsyLPG"].bits_per_update < results["AsyLPG"].bits_per_update
    assert results["AsyLPG"].model_bits_mean < 16


def test_a_dead_worker_does_not_stall_the_servers(ray_session, tiny):
    from hvd_compress.ps import run

    problem, target = tiny
    # worker 1's process exits after 10 updates, having pushed its 11th gradient to shard 0 only
    r = run(
        problem,
        AsyLPG(step_size=4.0),
        num_workers=3,
        num_shards=2,
        epochs=15,
        batch_size=8,
        target_loss=target,
        faults={1: {"after": 10, "where": "mid_push"}},
    )
    assert r.dead_workers == [1]
    assert r.bits_to_target is not None and r.final_loss <= target


def test_a_hung_worker_is_killed_and_the_run_goes_on(ray_session, tiny):
    from hvd_compress.ps import run

    problem, target = tiny
    r = run(
        problem,
        AsyFPG(step_size=4.0),
        num_workers=2,
        num_shards=2,
        epochs=15,
        batch_size=8,
        target_loss=target,
        faults={0: {"after": 3, "where": "hang"}},
        epoch_timeout_s=5,
    )
    assert r.dead_workers == [0]
    assert r.bits_to_target is not None


def test_malformed_message_over_ray(ray_session):
    ray = ray_session
    shard = ray.remote(ServerShard).options(num_cpus=0).remote(0, np.zeros(10), AsyLPG(0.1), 100, 10)
    ray.get(shard.begin_epoch.remote(0))
    with pytest.raises(MalformedMessage, match="malformed message rejected: .* must have 40 bytes"):
        ray.get(shard.handle.remote(_grad(payload=np.zeros(3, np.uint8))))
    reply = ray.get(shard.handle.remote(_grad()))  # the actor is alive and unchanged
    assert reply.kind == "model" and ray.get(shard.report.remote())["rejected"] == 1
    ray.kill(shard)
