"""Specs of GradiVeQ and PowerSGD in TensorFlow: layout, exactness, linearity, energy rule,
agreement with torch, state round trip, tf.function.

Multi-worker cases run N simulated workers as threads (eager TF over tests/local_comm.py's
in-process collectives) through the real TF ``Exchange``; the graph-mode cases run a one-rank
Horovod job in this process; the horovodrun runs (2 and 3 workers) are in test_tf_linear_mp.py.
"""

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from local_comm import run_workers, run_workers_tf  # noqa: E402

import hvd_compress.tensorflow as hct  # noqa: E402
import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.tensorflow.codecs import gradiveq as tgvq  # noqa: E402
from hvd_compress.tensorflow.codecs import powersgd as tpsgd  # noqa: E402
from hvd_compress.tensorflow.exchange import Exchange  # noqa: E402
from hvd_compress.tensorflow.stats import WireStats  # noqa: E402
from hvd_compress.torch.codecs import gradiveq as pgvq  # noqa: E402
from hvd_compress.torch.codecs import powersgd as ppsgd  # noqa: E402
from hvd_compress.torch.exchange import Exchange as TorchExchange  # noqa: E402
from hvd_compress.torch.exchange import WireStats as TorchWireStats  # noqa: E402
from hvd_compress.torch.exchange import drive  # noqa: E402

# fp32 projection onto / back from a K<=256 orthonormal basis: each output value is a K-term dot
# product, relative rounding about sqrt(K) * 6e-8 ~ 1e-6; 1e-5 leaves a 10x margin. The same bound
# covers TF against torch: the same fp32 operations, summed in a different order.
FP32_LINEAR_RTOL = 1e-5

TORCH_CONV = (32, 16, 3, 3)  # OIHW: F=32 filters of 144 positions: K = 32*8 = 256, S = 18 slices
TF_CONV = (3, 3, 16, 32)  # the same layer's kernel in Keras (HWIO)


def hwio(t: torch.Tensor) -> np.ndarray:
    """A torch conv weight (OIHW, or F x C x k for conv1d) as the Keras kernel of the same layer."""
    perm = list(range(2, t.dim())) + [1, 0]
    return t.permute(*perm).contiguous().numpy()


def oihw(a: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`hwio`."""
    nd = a.ndim
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a, [nd - 1, nd - 2] + list(range(nd - 2)))))


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def exchange_steps(spec, grads_fn, steps, size, key="w", shape=TF_CONV, setup=None):
    """``steps`` eager exchanges of one TF tensor on ``size`` simulated workers; per rank
    (outputs as numpy, codec, wire stats)."""

    def work(comm):
        codec = hct.from_spec(spec)
        ex = Exchange(codec, comm, stats=WireStats())
        if setup is not None:
            ex.build_state(key, shape, tf.float32)
            setup(codec, comm.rank)
        outs = [ex.average(key, tf.constant(grads_fn(comm.rank, t).reshape(shape))).numpy() for t in range(steps)]
        return outs, codec, ex.stats.snapshot()

    return run_workers_tf(size, work)


def subspace_grads(dim=3, seed=7):
    """TF conv gradients (HWIO) whose slices lie in a fixed ``dim``-dimensional subspace plus an offset."""
    f, p, d, k, s = pgvq.slice_geometry(TORCH_CONV, 256)
    basis = torch.linalg.qr(torch.randn(k, dim, generator=torch.Generator().manual_seed(seed)))[0]
    offset = torch.randn(k, generator=torch.Generator().manual_seed(seed + 1))

    def grads(rank, step):
        g = torch.Generator().manual_seed(1000 * rank + step)
        slices = torch.randn(s, dim, generator=g) @ basis.t() + offset
        return hwio(pgvq.from_slices(slices, TORCH_CONV).reshape(TORCH_CONV))

    return grads


# ------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("torch_shape", [TORCH_CONV, (16, 3, 5), (8, 4, 2, 3, 3)])
def test_tf_slices_of_a_keras_kernel_are_torch_slices_of_the_same_layer(torch_shape):
    """HWIO: the filters are the last axis, so the same position of all filters is already
    adjacent; positions are enumerated (c, i, j) as torch does, so the S x K slices match."""
    w = torch.arange(float(np.prod(torch_shape))).reshape(torch_shape)
    kernel = hwio(w)
    codec, reference = hct.GradiVeQ(sample_steps=10), hc.GradiVeQ(sample_steps=10)
    assert codec.geometry(kernel.shape) == reference.geometry(torch_shape)
    f, p, d, k, s = codec.geometry(kernel.shape)
    slices = tgvq.to_slices(tf.constant(kernel.reshape(-1)), kernel.shape, k).numpy()
    np.testing.assert_array_equal(slices, pgvq.to_slices(w.reshape(-1), torch_shape, k).numpy())
    assert np.array_equal(slices[0, :f], kernel.reshape(-1, f)[0])  # position 0 of filters 0..F-1
    back = tgvq.from_slices(tf.constant(slices), kernel.shape).numpy()
    np.testing.assert_array_equal(back, kernel.reshape(-1))


@pytest.mark.parametrize("torch_shape", [TORCH_CONV, (48, 80), (16, 3, 5)])
def test_tf_powersgd_matrix_is_the_torch_matrix_of_the_same_layer(torch_shape):
    """A conv kernel is F x C*kh*kw and a Dense kernel (in, out) is out x in, as torch views
    the same layer's weight."""
    w = torch.arange(float(np.prod(torch_shape))).reshape(torch_shape)
    kernel = hwio(w) if len(torch_shape) > 2 else w.t().contiguous().numpy()
    n, m = tpsgd.matrix_shape(kernel.shape)
    assert (n, m) == ppsgd.matrix_shape(torch_shape)
    mat = tpsgd.to_matrix(tf.constant(kernel.reshape(-1)), kernel.shape).numpy()
    np.testing.assert_array_equal(mat, w.reshape(n, m).numpy())
    np.testing.assert_array_equal(tpsgd.from_matrix(tf.constant(mat), kernel.shape).numpy(), kernel.reshape(-1))


# ------------------------------------------------------------------------------------ GradiVeQ math
def test_energy_rule_picks_the_smallest_d_and_agrees_with_torch():
    rng = np.random.default_rng(0)
    k, count = 16, 400
    basis = np.linalg.qr(rng.standard_normal((k, k)))[0]
    scales = np.array([10.0, 5.0, 3.0, 2.0] + [0.01] * 12)
    x = (rng.standard_normal((count, k)) * scales) @ basis.T + 3.0
    total, outer = x.sum(0), x.T @ x
    u, mu, d, vals = tgvq.fit_basis(count, tf.constant(total), tf.constant(outer), 0.99)
    d, vals = int(d), vals.numpy()
    share = np.cumsum(vals) / vals.sum()
    assert share[d - 1] >= 0.99 and share[d - 2] < 0.99 and d == 4  # the smallest such d
    u_d = u.numpy()[:, :d]
    np.testing.assert_allclose(u_d.T @ u_d, np.eye(d), atol=1e-6)  # orthonormal columns
    np.testing.assert_allclose(mu.numpy(), x.mean(0), atol=1e-6)
    assert int(tgvq.fit_basis(count, tf.constant(total), tf.constant(outer), 0.5)[2]) < d
    # torch on the same moments: the same d, and (deterministic signs, well separated eigenvalues)
    # the same basis to fp32 rounding
    tu, tmu, td, _ = pgvq.fit_basis(count, torch.from_numpy(total), torch.from_numpy(outer), 0.99)
    assert td == d
    np.testing.assert_allclose(u_d, tu.numpy(), atol=1e-5)
    np.testing.assert_allclose(mu.numpy(), tmu.numpy(), atol=1e-6)


def test_compression_is_linear_and_exact_in_the_subspace():
    rng = np.random.default_rng(1)
    k, s, n = 64, 40, 3
    sub = np.linalg.qr(rng.standard_normal((k, 3)))[0]
    mu_true = rng.standard_normal(k)
    samples = rng.standard_normal((500, 3)) @ sub.T + mu_true
    u, mu, d, _ = tgvq.fit_basis(500, tf.constant(samples.sum(0)), tf.constant(samples.T @ samples), 0.99)
    d = int(d)
    assert d <= 3
    u = u[:, :d]
    workers = [tf.constant((rng.standard_normal((s, 3)) @ sub.T + mu_true / n).astype(np.float32)) for _ in range(n)]
    total = tf.add_n(workers)
    summed = tf.add_n([tgvq.project(g, u, mu, n) for g in workers])  # what allreduce(Sum) carries
    # linearity: the sum of the compressed slices is the compression of the sum
    np.testing.assert_allclose(summed.numpy(), tgvq.project(total, u, mu, 1).numpy(), rtol=FP32_LINEAR_RTOL, atol=1e-5)
    # exactness: decompressing the sum once gives the sum of the slices
    assert rel_err(tgvq.reconstruct(summed, u, mu), total) < FP32_LINEAR_RTOL
    # without the mean the map is plainly linear: C(a) + C(b) == C(a + b)
    zero = tf.zeros([k])
    a, b = workers[0], workers[1]
    np.testing.assert_allclose(
        (tgvq.project(a, u, zero, 1) + tgvq.project(b, u, zero, 1)).numpy(),
        tgvq.project(a + b, u, zero, 1).numpy(),
        rtol=FP32_LINEAR_RTOL,
        atol=1e-5,
    )


@pytest.mark.parametrize("size", [2, 3])
def test_gradiveq_schedule_reconstructs_subspace_gradients_exactly(size):
    grads = subspace_grads()
    spec = "gradiveq:warmup_steps=3,sample_steps=4,compress_steps=5,sampler=none,samples_per_dim=0"
    results = exchange_steps(spec, grads, steps=3 + 9 + 4, size=size)
    outs, codec, stats = results[0]
    for step, out in enumerate(outs):
        want = sum(grads(r, step) for r in range(size)) / size
        assert rel_err(out, want) < FP32_LINEAR_RTOL, (step, codec.phase_at(step))
    for r in range(1, size):  # replicas identical
        assert all(np.array_equal(a, b) for a, b in zip(outs, results[r][0]))
    rep = codec.compression_report()
    assert rep["w"]["K"] == 256 and rep["w"]["d"] <= 4 and rep["w"]["ratio"] >= 64  # 3 dims + offset
    assert codec.phases() == {"w": "sample"}  # step 15: the second sampling phase
    # bytes: 3 fp32 steps + 8 sampling steps (sampler "none": fp32) + 5 steps of S x d, + 2 basis
    # broadcasts (d, then U_d and mu; both fits find the same d)
    d, n = rep["w"]["d"], 4608
    row = stats[codec.describe()]
    assert row["payload_bytes"] == 11 * 4 * n + 5 * 4 * 18 * d + 2 * (8 + 4 * (256 * d + 256))
    assert row["values"] == 16 * n


def test_gradiveq_with_qsgd_sampling_approximates_and_uses_the_fallback_elsewhere():
    grads = subspace_grads()
    spec = "gradiveq:warmup_steps=2,sample_steps=5,compress_steps=5,samples_per_dim=0"
    outs, codec, stats = exchange_steps(spec, grads, steps=12, size=2)[0]
    assert 0 < int(codec.state["d"]["w"].numpy()) < 256  # 4-bit sampling noise widens the basis
    for step in range(7, 12):  # compressed phase: the error is the sampling noise captured in U_d
        want = (grads(0, step) + grads(1, step)) / 2
        assert rel_err(outs[step], want) < 0.2
    assert stats[codec.describe()]["values"] == 12 * 4608
    # a Dense kernel is not a conv kernel: the fallback codec carries it, under its own row
    dense = hct.GradiVeQ(fallback="qsgd:bits=8")
    assert dense.should_compress(tf.zeros([64, 64])) and not dense.should_compress(tf.zeros([64]))
    assert not dense.should_compress(tf.zeros([3, 3, 4, 4]))  # conv below min_numel: fp32

    def g2(rank, step):
        return np.random.default_rng(rank * 10 + step).standard_normal((64, 64)).astype(np.float32)

    outs, codec, stats = exchange_steps("gradiveq:fallback=qsgd:bits=8", g2, 2, 2, shape=(64, 64))[0]
    assert "w" not in codec.state["phase"] and stats[codec.fallback.describe()]["values"] == 2 * 4096
    assert rel_err(outs[1], (g2(0, 1) + g2(1, 1)) / 2) < 0.05  # 8-bit QSGD


def test_gradiveq_ratio_and_error_feedback_as_in_torch():
    """``ratio=8`` fixes d = K/8; with ``error_feedback`` the outputs of a whole cycle (5 compressed
    steps, then 2 exact sampling steps) sum to the inputs, as in torch, and match torch step for step."""

    def grads(rank, step):
        return np.random.default_rng(1000 * rank + step).standard_normal(TORCH_CONV).astype(np.float32)

    spec = "gradiveq:warmup_steps=0,sample_steps=2,compress_steps=5,sampler=none,samples_per_dim=0,ratio=8"
    for ef in (False, True):
        results = exchange_steps(spec + f",error_feedback={ef}", lambda r, t: hwio(torch.from_numpy(grads(r, t))), 9, 2)
        outs, codec = results[0][0], results[0][1]
        assert int(codec.state["d"]["w"].numpy()) == 32
        assert all(np.array_equal(a, b) for a, b in zip(outs, results[1][0]))
        want = sum((grads(0, t) + grads(1, t)) / 2 for t in range(2, 9))
        gap = rel_err(oihw(sum(outs[2:9])), want)
        assert (gap < 1e-5) if ef else (gap > 0.3), (ef, gap)

        def torch_work(comm, ef=ef):
            codec = hc.from_spec(spec + f",error_feedback={ef}")
            ex = TorchExchange(codec, comm, stats=TorchWireStats())
            return [drive({"w": ex.average("w", torch.from_numpy(grads(comm.rank, t)))})["w"].numpy() for t in range(9)]

        theirs = run_workers(2, torch_work)[0]
        for t in range(9):
            assert rel_err(oihw(outs[t]), theirs[t]) < 1e-4, (ef, t)


def test_gradiveq_tf_and_torch_reconstruct_the_same_given_the_same_gradients_and_basis():
    """Both frameworks in their compressed phase with the same U_d and mu; general (not in the
    subspace) gradients, so the reconstruction is lossy: the same loss on both sides."""
    rng = np.random.default_rng(3)
    f, p, dpos, k, s = pgvq.slice_geometry(TORCH_CONV, 256)
    d = 40
    basis = np.linalg.qr(rng.standard_normal((k, d)))[0].astype(np.float32)
    mean = rng.standard_normal(k).astype(np.float32)
    grads = {(r, t): rng.standard_normal(TORCH_CONV).astype(np.float32) for r in range(2) for t in range(3)}
    spec = "gradiveq:warmup_steps=0,sample_steps=1,compress_steps=10,samples_per_dim=0"

    def torch_work(comm):
        codec = hc.from_spec(spec)
        for group, value in (
            ("basis", torch.from_numpy(basis)),
            ("mean", torch.from_numpy(mean)),
            ("d", d),
            ("K", k),
            ("slices", s),
            ("step", 1),
        ):
            codec.state[group]["w"] = value
        ex = TorchExchange(codec, comm, stats=TorchWireStats())
        return [drive({"w": ex.average("w", torch.from_numpy(grads[comm.rank, t]))})["w"].numpy() for t in range(3)]

    def tf_setup(codec, rank):
        codec.state["basis"]["w"].assign(np.pad(basis, [(0, 0), (0, k - d)]))
        codec.state["mean"]["w"].assign(mean)
        codec.state["d"]["w"].assign(d)
        codec.state["step"]["w"].assign(1)

    theirs = run_workers(2, torch_work)[0]
    ours = exchange_steps(spec, lambda r, t: hwio(torch.from_numpy(grads[r, t])), 3, 2, setup=tf_setup)[0][0]
    for t in range(3):
        want = (grads[0, t] + grads[1, t]) / 2
        assert rel_err(theirs[t], want) > 0.1  # lossy: 40 of 256 dimensions
        assert rel_err(oihw(ours[t]), theirs[t]) < FP32_LINEAR_RTOL


def test_gradiveq_state_round_trips_through_a_checkpoint(tmp_path):
    """Save mid-run (compressed phase, fitted basis), restore into a fresh codec, and both continue
    identically across a sampling phase (QSGD streams: the sampler's step counter is state too)
    and a refit. Restoring before the state exists works too (TF's deferred restoration)."""
    grads = subspace_grads()
    spec = "gradiveq:warmup_steps=1,sample_steps=2,compress_steps=3,samples_per_dim=0"

    def work(comm):
        a = hct.from_spec(spec)
        ex_a = Exchange(a, comm, stats=WireStats())
        for t in range(4):
            ex_a.average("w", tf.constant(grads(comm.rank, t)))
        path = tf.train.Checkpoint(compression=a).save(str(tmp_path / f"r{comm.rank}" / "c"))
        b = hct.from_spec(spec)
        ex_b = Exchange(b, comm, stats=WireStats())
        ex_b.build_state("w", TF_CONV, tf.float32)
        tf.train.Checkpoint(compression=b).restore(path).assert_consumed()
        lazy = hct.from_spec(spec)
        tf.train.Checkpoint(compression=lazy).restore(path)
        ex_lazy = Exchange(lazy, comm, stats=WireStats())
        same = []
        for t in range(4, 9):
            g = tf.constant(grads(comm.rank, t))
            ra, rb, rl = (e.average("w", g).numpy() for e in (ex_a, ex_b, ex_lazy))
            same.append(np.array_equal(ra, rb) and np.array_equal(ra, rl))
        names = sorted(n for n, _ in tf.train.list_variables(path))
        return a, same, names

    (a, same, names), _ = run_workers_tf(2, work)
    assert all(same)
    assert {g for g, t in a.state.items() if "w" in t} >= {
        "step",
        "phase",
        "basis",
        "mean",
        "d",
        "K",
        "slices",
        "sample_count",
        "sample_sum",
        "sample_outer",
    }
    assert a.state["basis"]["w"].name == "hvd_compress/basis/w:0"
    assert any(n.startswith("compression/sampler/state/step/w") for n in names)  # the sampler's RNG step


# ------------------------------------------------------------------------------------ PowerSGD
def low_rank_grads(shape, rank, seed=3):
    """TF gradients of ``shape`` whose matrix view is ``L C R^T`` (fixed L, R; C per worker and step)."""
    n, m = tpsgd.matrix_shape(shape)
    g = np.random.default_rng(seed)
    left, right = g.standard_normal((n, rank)), g.standard_normal((m, rank))

    def grads(r, step):
        core = np.random.default_rng(100 * r + step + 1).standard_normal((rank, rank)) + 2 * np.eye(rank)
        mat = (left @ core @ right.T).astype(np.float32)
        return tpsgd.from_matrix(tf.constant(mat), shape).numpy().reshape(shape)

    return grads


@pytest.mark.parametrize("rank,shape", [(2, (80, 48)), (3, TF_CONV)])
def test_powersgd_reconstructs_low_rank_gradients_exactly(rank, shape):
    grads = low_rank_grads(shape, rank)
    results = exchange_steps(f"powersgd:rank={rank},start_iter=2", grads, 8, 3, shape=shape)
    outs, codec, stats = results[0]
    for step, out in enumerate(outs):
        assert rel_err(out, sum(grads(r, step) for r in range(3)) / 3) < FP32_LINEAR_RTOL, step
    for r in (1, 2):
        assert all(np.array_equal(a, b) for a, b in zip(outs, results[r][0]))  # replicas identical
    # error feedback: each worker keeps M_w - M_hat (non-zero: workers differ); their sum is zero
    residuals = [res[1].state["residual"]["w"].numpy() for res in results]
    assert np.linalg.norm(sum(residuals)) < FP32_LINEAR_RTOL * np.linalg.norm(residuals[0])
    n, m = tpsgd.matrix_shape(shape)
    row = stats[codec.describe()]
    assert row["payload_bytes"] == 2 * 4 * n * m + 6 * 4 * (n + m) * rank  # 2 fp32 steps, then P and Q
    assert row["values"] == 8 * n * m


def test_powersgd_aggregation_is_linear_and_keeps_zeros_zero():
    """N workers holding a, b, c get what one worker holding their mean gets."""
    shape = (60, 40)
    seq = [
        [np.random.default_rng(10 * s + t).standard_normal(shape).astype(np.float32) for t in range(3)]
        for s in range(3)
    ]
    spec = "powersgd:rank=2,start_iter=0,error_feedback=false"
    many = exchange_steps(spec, lambda r, t: seq[r][t], 3, 3, shape=shape)[0][0]
    one = exchange_steps(spec, lambda r, t: sum(seq[w][t] for w in range(3)) / 3, 3, 1, shape=shape)[0][0]
    for a, b in zip(many, one):
        assert rel_err(a, b) < 1e-4  # sum-then-divide vs divide-then-sum: fp32 rounding, amplified
        # by the orthogonalization of a nearly rank-deficient P
    zero = np.zeros(shape, np.float32)
    outs, codec, _ = exchange_steps("powersgd:rank=1,start_iter=0", lambda r, t: zero, 2, 2, shape=shape)[0]
    assert all(np.array_equal(o, zero) for o in outs)  # zeros, not NaN
    g = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    outs, codec, _ = exchange_steps("powersgd:rank=1,start_iter=0", lambda r, t: g, 1, 1, shape=shape)[0]
    residual = tpsgd.from_matrix(tf.constant(codec.state["residual"]["w"].numpy().reshape(40, 60)), shape).numpy()
    np.testing.assert_allclose(outs[0].reshape(-1) + residual, g.reshape(-1), atol=1e-6)  # sent + kept = input
    assert np.abs(residual).max() > 0.1


def test_powersgd_tf_matches_torch_step_for_step():
    """The same gradients, the same starting Q: TF and torch PowerSGD (error feedback, warm start,
    rank 2) give the same averaged gradients over 4 steps, and end with the same Q and residuals."""
    rank, steps = 2, 4
    torch_shape = (24, 8, 3, 3)
    n, m = ppsgd.matrix_shape(torch_shape)
    grads = {
        (r, t): np.random.default_rng(50 + 10 * r + t).standard_normal(torch_shape).astype(np.float32)
        for r in range(2)
        for t in range(steps)
    }
    spec = f"powersgd:rank={rank},start_iter=1,min_numel=0"
    q0 = tpsgd.initial_q(0, "w", m, rank).numpy()

    def torch_work(comm):
        codec = hc.from_spec(spec)
        codec.state["q"]["w"] = torch.from_numpy(q0.copy())
        ex = TorchExchange(codec, comm, stats=TorchWireStats())
        outs = [drive({"w": ex.average("w", torch.from_numpy(grads[comm.rank, t]))})["w"].numpy() for t in range(steps)]
        return outs, codec.state["q"]["w"].numpy(), codec.state["residual"]["w"].numpy()

    theirs = run_workers(2, torch_work)
    results = exchange_steps(
        spec, lambda r, t: hwio(torch.from_numpy(grads[r, t])), steps, 2, shape=hwio(torch.zeros(torch_shape)).shape
    )
    for t in range(steps):
        assert rel_err(oihw(results[0][0][t]), theirs[0][0][t]) < FP32_LINEAR_RTOL, t
    codec = results[0][1]
    np.testing.assert_allclose(codec.state["q"]["w"].numpy(), theirs[0][1], rtol=0, atol=1e-4)
    for r in range(2):  # residuals: same matrix order (torch's memory order) in both frameworks
        mine = results[r][1].state["residual"]["w"].numpy()
        assert rel_err(mine, theirs[r][2]) < 1e-4


def test_powersgd_state_round_trips_and_survives_a_nonfinite_step(tmp_path):
    shape = (60, 40)

    def grads(r, t):
        return np.random.default_rng(10 * r + t).standard_normal(shape).astype(np.float32)

    def work(comm):
        a = hct.from_spec("powersgd:rank=2,start_iter=1,nonfinite=propagate")
        ex_a = Exchange(a, comm, stats=WireStats())
        for t in range(3):
            ex_a.average("w", tf.constant(grads(comm.rank, t)))
        path = tf.train.Checkpoint(compression=a).save(str(tmp_path / f"r{comm.rank}" / "c"))
        b = hct.from_spec("powersgd:rank=2,start_iter=1,nonfinite=propagate")
        tf.train.Checkpoint(compression=b).restore(path)  # deferred: filled when the state is created
        ex_b = Exchange(b, comm, stats=WireStats())
        same = [
            np.array_equal(
                ex_a.average("w", tf.constant(grads(comm.rank, t))).numpy(),
                ex_b.average("w", tf.constant(grads(comm.rank, t))).numpy(),
            )
            for t in range(3, 6)
        ]
        q_before = a.state["q"]["w"].numpy()
        bad = grads(comm.rank, 6)
        if comm.rank == 1:
            bad[3, 4] = np.nan
        out = ex_a.average("w", tf.constant(bad)).numpy()
        return same, q_before, a, out

    for same, q_before, codec, out in run_workers_tf(2, work):
        assert all(same)
        assert np.isnan(out).any()  # propagated, as an fp32 allreduce would
        np.testing.assert_array_equal(codec.state["q"]["w"].numpy(), q_before)  # the old Q kept
        assert np.all(codec.state["residual"]["w"].numpy() == 0)  # reset, never poisoned
        assert codec.state["q"]["w"].shape == (60, 2)  # m x r: the (60, 40) kernel is a 40 x 60 matrix


# ------------------------------------------------------------------------------------ config shared with torch
def test_same_knobs_defaults_specs_and_errors_as_torch():
    for spec in (
        "gradiveq",
        "gradiveq:warmup_steps=20,sample_steps=10,compress_steps=60",
        "gradiveq:energy=0.9,fallback=none,sampler=qsgd:bits=8",
        "powersgd",
        "powersgd:rank=2,start_iter=10",
    ):
        assert hct.from_spec(spec).fingerprint() == hc.from_spec(spec).fingerprint()
    g = hct.GradiVeQ()
    assert (g.energy, g.warmup_steps, g.sample_steps, g.compress_steps) == (0.99, 2500, 100, 400)
    assert isinstance(g.fallback, hct.QSGD) and isinstance(g.sampler, hct.QSGD)
    p = hct.PowerSGD()
    assert (p.rank, p.start_iter) == (1, 1000)
    for bad in (
        "gradiveq:energy=0",
        "gradiveq:energy=1.5",
        "gradiveq:sample_steps=0",
        "gradiveq:warmup_steps=-1",
        "gradiveq:slice_size=0",
        "gradiveq:fallback=nosuch",
        "powersgd:rank=0",
        "powersgd:start_iter=-1",
        "powersgd:min_compression_rate=0",
        "powersgd:rank=1.5",
    ):
        for build in (hct.from_spec, hc.from_spec):
            with pytest.raises(ValueError):
                build(bad)
    with pytest.raises(ValueError, match="GradiVeQ itself"):
        hct.GradiVeQ(fallback="gradiveq")


# ------------------------------------------------------------------------------------ tf.function, one-rank Horovod
@pytest.fixture(scope="module")
def hvd():
    import horovod.tensorflow as hvd

    hvd.init()
    return hvd


@pytest.mark.parametrize(
    "spec",
    ["gradiveq:warmup_steps=2,sample_steps=2,compress_steps=3,samples_per_dim=0", "powersgd:rank=2,start_iter=2"],
)
def test_reducer_traced_in_tf_function_equals_eager_and_counts_every_step(hvd, spec):
    """The phase is a tf.switch_case / tf.cond on the step counter: one trace runs every phase,
    with the same numbers as eager execution, and the counters advance per execution."""
    tag = spec.split(":")[0]
    variables = [
        tf.Variable(tf.zeros(TF_CONV), name=f"{tag}_conv/kernel"),
        tf.Variable(tf.zeros([128, 64]), name=f"{tag}_fc/kernel"),
        tf.Variable(tf.zeros([32]), name=f"{tag}_conv/bias"),
    ]
    traced, eager = hct.GradientReducer(spec), hct.GradientReducer(spec)
    step = tf.function(lambda *gs: traced(list(gs), variables))
    rng = np.random.default_rng(0)
    hct.reset_wire_stats()
    for t in range(9):
        gs = [tf.constant(rng.standard_normal(v.shape).astype(np.float32)) for v in variables]
        for a, b in zip(step(*gs), eager(gs, variables)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-5)  # graph vs eager kernels
        if t == 0:
            traces = step.experimental_get_tracing_count()  # (TF traces again after creating variables)
    assert step.experimental_get_tracing_count() == traces  # no retracing as the phases change
    assert int(traced.codec.state["step"][f"{tag}_conv/kernel"].numpy()) == 9
    rows = hct.wire_stats()
    assert rows[traced.codec.describe()]["values"] == 2 * 9 * (4608 + (0 if tag == "gradiveq" else 8192))
    if tag == "gradiveq":  # warm-up 2, sample 2 (fit), compress 3, sample 2
        assert traced.codec.phases() == {f"{tag}_conv/kernel": "sample"}
        assert traced.codec.compression_report()[f"{tag}_conv/kernel"]["K"] == 256
        assert rows[traced.codec.fallback.describe()]["values"] == 2 * 9 * 8192  # the Dense kernel


def test_keras3_model_fit_with_our_optimizer(hvd):
    """Keras 3 ``model.fit`` (a traced train step) through hvd_compress.tensorflow.frontends.keras.DistributedOptimizer."""
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3"):
        pytest.skip("Keras 3 only")
    import hvd_compress.tensorflow.frontends.keras as hck

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, name="c1"),
            keras.layers.Conv2D(32, 3, name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="out"),
        ],
        name="k3",
    )
    codec = hct.from_spec("gradiveq:warmup_steps=2,sample_steps=2,compress_steps=6,samples_per_dim=0")
    model.compile(
        optimizer=hck.DistributedOptimizer(keras.optimizers.SGD(0.01), compression=codec),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.default_rng(0).standard_normal((80, 8, 8, 1)).astype(np.float32)
    y = np.arange(80) % 10
    hist = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert codec.phases() == {"k3/c2/kernel": "compress"}  # 10 steps: 2 + 2 + 6
    assert int(codec.state["step"]["k3/c2/kernel"].numpy()) == 10
    assert codec.compression_report()["k3/c2/kernel"]["K"] == 32 * 8
