"""Spec: the numpy references of the multi-round codecs (PowerSGD, GradiVeQ, DoubleSqueeze) ARE
their exchanges: the torch codec, run over N simulated ranks (tests/local_comm.py) through the real
``Exchange``, ends every step with the reference's values (within fp32 rounding: the two sides
multiply matrices with different BLAS summation orders), and every rank hands each collective
exactly the reference's number of bytes, round by round.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
from local_comm import run_workers  # noqa: E402

import hvd_compress  # noqa: E402
import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.codecs.powersgd import matrix_shape  # noqa: E402
from hvd_compress.torch.exchange import Exchange, WireStats, drive  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


class Recording:
    """A rank's collectives, logging ``(collective name, bytes handed in)`` for each call."""

    def __init__(self, comm):
        self.comm, self.rank, self.size, self.log = comm, comm.rank, comm.size, []

    def _note(self, name, tensor):
        self.log.append((name, tensor.numel() * tensor.element_size()))

    def allreduce_async(self, tensor, name, op="average"):
        self._note(name, tensor)
        return self.comm.allreduce_async(tensor, name, op=op)

    def allgather_async(self, tensor, name, **kwargs):
        self._note(name, tensor)
        return self.comm.allgather_async(tensor, name)

    def alltoall_async(self, tensor, splits, name):
        self._note(name, tensor)
        return self.comm.alltoall_async(tensor, splits, name)

    def broadcast_async(self, tensor, root_rank, name):
        self._note(name, tensor)
        return self.comm.broadcast_async(tensor, root_rank, name)


def torch_steps(spec, grads, shape, key="w", setup=None):
    """Run the torch codec ``spec`` on ``len(grads[0])`` simulated ranks for ``len(grads)`` steps
    (``grads[step][rank]``, numpy). Returns per step: (every rank's result, every rank's bytes per
    collective round of this tensor, rank 0's codec)."""
    size = len(grads[0])

    def work(comm):
        rec = Recording(comm)
        codec = hc.from_spec(spec)
        if setup is not None:
            setup(codec, comm.rank)
        ex = Exchange(codec, rec, stats=WireStats())
        ex.ensure_checked()
        out = []
        for step_grads in grads:
            rec.log.clear()
            g = torch.from_numpy(step_grads[comm.rank].copy()).reshape(shape)
            res = drive({key: ex.average(key, g)})[key]
            rounds = [(name.split(".")[-1], n) for name, n in rec.log if name.startswith(f"hvdc.{key}.")]
            out.append((res.reshape(-1).numpy(), rounds))
        return out, codec

    per_rank = run_workers(size, work)
    steps = []
    for s in range(len(grads)):
        results = [per_rank[r][0][s][0] for r in range(size)]
        rounds = [per_rank[r][0][s][1] for r in range(size)]
        steps.append((results, rounds))
    return steps, per_rank[0][1]


def reference_steps(ref, grads, shape, state=None, **kwargs):
    out = []
    for step_grads in grads:
        red = ref.reduce(step_grads, state, shape, **kwargs)
        state = red.state
        out.append(red)
    return out


def assert_same_exchange(torch_run, reference_run, what):
    for step, ((results, rounds), red) in enumerate(zip(torch_run, reference_run)):
        for r, res in enumerate(results):
            np.testing.assert_allclose(res, red.values, rtol=RTOL, atol=ATOL, err_msg=f"{what} step {step} rank {r}")
        want = [[(name, nbytes[r]) for name, nbytes in red.rounds] for r in range(len(results))]
        assert rounds == want, f"{what} step {step}: bytes per round {rounds} != {want}"


def grads_for(steps, size, shape, seed, low_rank=None):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    out = []
    for _ in range(steps):
        step = []
        for _ in range(size):
            g = rng.standard_normal(n).astype(np.float32)
            if low_rank is not None:  # mostly a few shared directions: what the codecs exploit
                g = (low_rank.reshape(-1) * (1 + 0.1 * rng.standard_normal())).astype(np.float32) + 0.05 * g
            step.append(g.astype(np.float32))
        out.append(step)
    return out


# ------------------------------------------------------------------------------------ PowerSGD
@pytest.mark.parametrize(
    "spec,shape,size",
    [
        ("powersgd:rank=1,start_iter=0", (64, 48), 2),
        ("powersgd:rank=2,start_iter=2", (32, 16, 3, 3), 3),
        ("powersgd:rank=4,start_iter=1", (64, 80), 4),  # QR orthogonalization
        ("powersgd:rank=2,start_iter=0,error_feedback=false,warm_start=false", (40, 60), 3),
        ("powersgd:rank=2,start_iter=0", (2, 2000), 2),  # not worth compressing: one fp32 allreduce
    ],
)
def test_powersgd_reference_is_the_torch_exchange(spec, shape, size):
    from hvd_compress.torch.codecs.powersgd import initial_q

    ref = hvd_compress.reference(spec)
    grads = grads_for(5, size, shape, seed=sum(shape))
    run, codec = torch_steps(spec, grads, shape)
    m, r = matrix_shape(shape)[1], ref.effective_rank(shape)
    q0 = initial_q(codec.seed, "w", m, r).numpy()  # torch's random start: the same on every rank
    assert_same_exchange(run, reference_steps(ref, grads, shape, initial_q=q0), spec)


def test_powersgd_reference_sizes_and_settings():
    ref, codec = hvd_compress.reference("powersgd:rank=2,start_iter=10"), hc.from_spec("powersgd:rank=2,start_iter=10")
    for shape in [(64, 48), (32, 16, 3, 3), (2, 2000), (1000,)]:
        assert ref.payload_nbytes_for(shape) == codec.payload_nbytes_for(shape)
        assert ref.worth_compressing(shape) == codec.worth_compressing(shape)
    for n in (1, 100, 65536):
        assert ref.payload_nbytes(n) == codec.payload_nbytes(n)
    with pytest.raises(ValueError, match="reduce"):
        ref.encode(np.zeros(4, np.float32))


# ------------------------------------------------------------------------------------ GradiVeQ
CONV = (32, 16, 3, 3)  # sample_steps=3, samples_per_dim=1: K = 64, S = 72 slices per step


def conv_grads(steps, size, seed, shape=CONV):
    rng = np.random.default_rng(seed)
    f, n = shape[0], int(np.prod(shape))
    # slices near a few shared directions (what PCA finds), plus a little noise per rank
    directions = rng.standard_normal((3, n)).astype(np.float32)
    out = []
    for _ in range(steps):
        mix = rng.standard_normal(3).astype(np.float32) * np.float32([3, 2, 1])
        common = (mix @ directions).astype(np.float32)
        out.append([(common + 0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(size)])
    del f
    return out


@pytest.mark.parametrize(
    "knobs,size",
    [
        ("", 2),
        (",error_feedback=true", 3),
        (",ratio=8", 3),
        (",ratio=4,error_feedback=true,energy=0.9", 4),
    ],
)
def test_gradiveq_reference_is_the_torch_exchange(knobs, size):
    """Two cycles of warm-up, sampling (fp32 aggregates), basis fit and compressed steps."""
    spec = (
        "gradiveq:warmup_steps=1,sample_steps=3,compress_steps=3,slice_size=64,samples_per_dim=1,"
        "sampler=none,fallback=none" + knobs
    )
    ref = hvd_compress.reference(spec)
    grads = conv_grads(1 + 2 * 6, size, seed=size)
    run, codec = torch_steps(spec, grads, CONV)
    refs = reference_steps(ref, grads, CONV)
    assert_same_exchange(run, refs, spec)
    state = refs[-1].state
    assert (state["K"], state["d"], state["slices"]) == (64, codec.state["d"]["w"], 72)
    assert codec.state["K"]["w"] == 64
    # the fitted basis spans the same subspace (the eigen-solvers may differ in sign or rotation)
    u_t = codec.state["basis"]["w"].numpy()
    np.testing.assert_allclose(u_t @ u_t.T, state["basis"] @ state["basis"].T, atol=1e-5)


def test_gradiveq_reference_fallback_and_settings():
    spec = "gradiveq:warmup_steps=0,sample_steps=1,compress_steps=1,sampler=none,fallback=none"
    ref = hvd_compress.reference(spec)
    grads = grads_for(2, 3, (64, 48), seed=1)  # 2-D: not a conv kernel, the fallback's exchange
    run, _ = torch_steps(spec, grads, (64, 48))
    assert_same_exchange(run, reference_steps(ref, grads, (64, 48)), spec)
    codec = hc.from_spec("gradiveq:sample_steps=10")
    assert hvd_compress.reference("gradiveq:sample_steps=10").geometry(CONV) == codec.geometry(CONV)
    for step in (0, 2499, 2500, 2599, 2600, 3000):
        assert ref.phase_at(step) == hc.from_spec(spec).phase_at(step)
    with pytest.raises(ValueError, match="aggregate="):
        hvd_compress.reference("gradiveq:warmup_steps=0").reduce(grads[0], None, (64, 48))


def test_gradiveq_reference_fit_matches_torch():
    from hvd_compress.codecs.gradiveq import fit_basis
    from hvd_compress.torch.codecs.gradiveq import fit_basis as torch_fit

    rng = np.random.default_rng(0)
    k, count = 16, 400
    basis = np.linalg.qr(rng.standard_normal((k, k)))[0]
    scales = np.array([10.0, 5.0, 3.0, 2.0] + [0.01] * 12)
    x = (rng.standard_normal((count, k)) * scales) @ basis.T + 3.0
    total, outer = x.sum(0), x.T @ x
    for energy, dim in ((0.99, None), (0.5, None), (0.99, 3)):
        u, mu, d, vals = fit_basis(count, total, outer, energy, dim)
        tu, tmu, td, tvals = torch_fit(count, torch.from_numpy(total), torch.from_numpy(outer), energy, dim)
        assert d == td
        np.testing.assert_allclose(u, tu.numpy(), atol=1e-6)  # distinct eigenvalues: the same vectors
        np.testing.assert_allclose(mu, tmu.numpy(), rtol=1e-7)
        np.testing.assert_allclose(vals, tvals.numpy(), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------ DoubleSqueeze
def torch_draws(codec_seed, step, key="w"):
    """The uniforms torch's exchange gives a stochastic codec: a generator seeded per (seed, rank,
    step, tensor, chunk, phase) (``Exchange._compressed``), ``torch.rand`` on the plain path."""
    import zlib

    from hvd_compress.common import mix

    def noise(who, chunk, phase, numel):
        g = torch.Generator().manual_seed(mix(codec_seed, who, step, zlib.crc32(key.encode()), chunk, phase))
        return torch.rand(numel, generator=g).numpy()

    return noise


@pytest.mark.parametrize(
    "spec,size",
    [
        ("doublesqueeze:codec=onebit,bucket_size=64", 3),
        ("doublesqueeze:codec=onebit", 2),
        ("doublesqueeze:codec=topk,ratio=0.05", 4),
        ("doublesqueeze:codec=efsign", 3),
        ("doublesqueeze:codec=qsgd,bits=4,bucket_size=128", 3),  # stochastic: torch's uniforms
        ("doublesqueeze:codec=qsgd,bits=2", 2),
    ],
)
@pytest.mark.parametrize("native", ["0", "1"])
def test_doublesqueeze_reference_is_the_torch_exchange(spec, size, native, monkeypatch):
    monkeypatch.setenv("HVD_COMPRESS_NATIVE", native)
    if native == "1":
        from hvd_compress import _native

        if _native.load() is None:
            pytest.skip(f"native kernels unavailable: {_native.unavailable_reason()}")
        if "qsgd" in spec:
            pytest.skip("the native QSGD kernel draws its own uniforms from the generator")
    ref = hvd_compress.reference(spec)
    shape = (50, 61)  # 3050 values: chunks of several buckets, a short last one
    grads = grads_for(5, size, shape, seed=size)
    run, codec = torch_steps(spec, grads, shape)
    state, refs = None, []
    for step, step_grads in enumerate(grads):
        refs.append(ref.reduce(step_grads, state, noise=torch_draws(codec.seed, step)))
        state = refs[-1].state
    assert_same_exchange(run, refs, spec)
    # the residuals too: each rank's worker residual, the owners' server residuals
    assert len(state["worker_residual"]) == size and len(state["server_residual"]) == size


def test_doublesqueeze_reference_settings_and_small_tensors():
    for spec in ("doublesqueeze", "doublesqueeze:codec=qsgd,bits=4", "doublesqueeze:codec=topk,ratio=0.05"):
        ref, codec = hvd_compress.reference(spec), hc.from_spec(spec)
        assert ref.describe() == codec.describe()
        assert hvd_compress.reference(ref.spec_string()) == ref
        for n in (1, 7, 3050, 65536):
            assert ref.payload_nbytes(n) == codec.payload_nbytes(n)
    # fewer values than ranks: the allgather exchange, worker feedback only
    ref = hvd_compress.reference("doublesqueeze:codec=onebit,bucket_size=8")
    red = ref.reduce([np.float32([1.0, -2.0]), np.float32([3.0, 0.5]), np.float32([-1.0, -1.0])])
    assert [name for name, _ in red.rounds] == ["ag"] and "server_residual" not in red.state
    with pytest.raises(ValueError, match="non-summable"):
        hvd_compress.reference("doublesqueeze:codec=fp16")
    with pytest.raises(ValueError, match="rng= or noise="):
        hvd_compress.reference("doublesqueeze:codec=qsgd").reduce([np.ones(10, np.float32)] * 2)
