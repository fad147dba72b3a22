"""Spec: fused compressed buckets (hvd_compress.torch.fusion).

One round's collectives of many tensors travel as one collective per kind and bucket, and the
result is bit for bit what the tensor-by-tensor exchange gives, for every codec; collectives per
step are buckets x the pattern's rounds; ranks that visit tensors in different orders still agree;
ranks whose tensors differ fail with the same clear error instead of slicing wrong or hanging.
Simulated workers (threads, tests/local_comm.py) over the real Exchange; the horovodrun runs are in
test_fusion_mp.py."""

import zlib

import pytest
import torch

import hvd_compress.torch as hc
from hvd_compress.torch.exchange import Exchange, WireStats, drive
from hvd_compress.torch.fusion import (
    DEFAULT_BUCKET_BYTES,
    ENV_BUCKET_BYTES,
    CollectiveStats,
    FusedCollectives,
    bucket_bytes_from_env,
)
from local_comm import run_workers
from test_codecs import SPECS

# odd sizes, several shapes, one tensor the codecs leave uncompressed (1-D, small)
SHAPES = {
    "conv.weight": (16, 3, 3, 3),
    "fc1.weight": (257, 31),
    "fc1.bias": (31,),
    "fc2.weight": (1001,),
    "fc3.weight": (64, 64),
    "z.last": (5, 7),
}
FUSABLE = [s for s in SPECS if not getattr(hc.from_spec(s), "needs_reference", False)]  # not Lattice


def grad(rank: int, step: int, name: str, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(f"{rank}.{step}.{name}".encode()))
    return torch.randn(shape, generator=g)


def run(spec: str, bucket_bytes: int, world: int = 3, steps: int = 2, shapes=SHAPES, reverse_on=None):
    """Every rank's averaged gradients per step, codec state and collective counts."""

    def work(comm):
        codec = hc.from_spec(spec)
        stats = CollectiveStats()
        fcomm = FusedCollectives(comm, bucket_bytes, stats=stats)
        ex = Exchange(codec, fcomm, stats=WireStats())
        ex.ensure_checked()
        outs, per_step = [], []
        for step in range(steps):
            before = stats.snapshot()["collectives"]
            names = sorted(shapes, reverse=(comm.rank == reverse_on))
            outs.append(drive({n: ex.average(n, grad(comm.rank, step, n, shapes[n])) for n in names}, fcomm))
            per_step.append(stats.snapshot()["collectives"] - before)
        return outs, codec.state_dict(), stats.snapshot(), per_step

    return run_workers(world, work)


@pytest.mark.parametrize("spec", FUSABLE)
def test_fused_exchange_is_bit_identical_to_tensor_by_tensor(spec):
    fused, unfused = run(spec, DEFAULT_BUCKET_BYTES), run(spec, 0)
    for rank, ((f_out, f_state, f_stats, _), (u_out, u_state, u_stats, _)) in enumerate(zip(fused, unfused)):
        for step, (fs, us) in enumerate(zip(f_out, u_out)):
            assert fs.keys() == us.keys()
            for name in fs:
                assert torch.equal(fs[name], us[name]), (spec, rank, step, name)
        assert repr(f_state) == repr(u_state), spec  # residuals, RNG steps: the same per tensor
        assert f_stats["requested"] == u_stats["requested"] == u_stats["collectives"]
        assert f_stats["collectives"] < u_stats["collectives"], (spec, f_stats, u_stats)


@pytest.mark.parametrize("spec", ["qsgd:bits=4", "onebit", "powersgd:rank=2", "doublesqueeze:codec=onebit"])
def test_collectives_per_step_are_buckets_times_rounds(spec):
    # one bucket: as many collectives per step as the pattern has rounds (for the tensors that take
    # it); one byte per bucket: every collective its own, as unfused
    one_bucket = run(spec, DEFAULT_BUCKET_BYTES, steps=3)
    unfused = run(spec, 0, steps=3)
    tiny = run(spec, 1, steps=3)
    for (_, _, f, f_steps), (_, _, u, u_steps), (_, _, t, t_steps) in zip(one_bucket, unfused, tiny):
        assert t_steps == u_steps
        rounds = f_steps[-1]
        assert 1 <= rounds <= 4, f_steps  # scale, alltoall, allgather, the fused fp32 allreduce
        assert u_steps[-1] >= 3 * rounds / 2
        assert len(set(f_steps[1:])) == 1  # the same every step


def test_ranks_visiting_tensors_in_different_orders_agree():
    forward = run("qsgd:bits=4", DEFAULT_BUCKET_BYTES)
    mixed = run("qsgd:bits=4", DEFAULT_BUCKET_BYTES, reverse_on=1)
    for (a, _, _, _), (b, _, _, _) in zip(forward, mixed):
        for sa, sb in zip(a, b):
            assert all(torch.equal(sa[n], sb[n]) for n in sa)


@pytest.mark.parametrize("spec", ["qsgd:bits=4", "onebit", "topk:ratio=0.01"])
def test_a_rank_with_other_shapes_fails_clearly_on_every_rank(spec):
    def work(comm):
        shapes = dict(SHAPES)
        if comm.rank == 1:
            shapes["fc3.weight"] = (64, 65)  # same names, another shape
        fcomm = FusedCollectives(comm, DEFAULT_BUCKET_BYTES)
        ex = Exchange(hc.from_spec(spec), fcomm, stats=WireStats())
        try:
            drive({n: ex.average(n, grad(comm.rank, 0, n, s)) for n, s in shapes.items()}, fcomm)
        except ValueError as exc:
            return str(exc)
        return None

    messages = run_workers(3, work)
    assert all(m is not None and "fused" in m and "differ" in m for m in messages), messages


@pytest.mark.parametrize("spec", ["qsgd:bits=4", "onebit", "topk:ratio=0.01"])
def test_unfused_a_rank_with_other_shapes_fails_clearly_on_every_rank(spec):
    """One collective per tensor: a peer's payload of another size is a ValueError naming the
    codec and the tensor on every rank, never values sliced from the wrong bytes."""

    def work(comm):
        shapes = dict(SHAPES)
        if comm.rank == 1:
            shapes["fc3.weight"] = (64, 65)  # same names, another shape
        ex = Exchange(hc.from_spec(spec), comm, stats=WireStats())
        try:
            drive({n: ex.average(n, grad(comm.rank, 0, n, s)) for n, s in shapes.items()}, comm)
        except ValueError as exc:
            return str(exc)
        return None

    messages = run_workers(3, work)
    assert all(m is not None and "fc3.weight" in m and "differ in size" in m for m in messages), messages


def test_bucket_bytes_knob(monkeypatch):
    monkeypatch.delenv(ENV_BUCKET_BYTES, raising=False)
    assert bucket_bytes_from_env() == DEFAULT_BUCKET_BYTES
    monkeypatch.setenv(ENV_BUCKET_BYTES, "0")
    assert bucket_bytes_from_env() == 0
    for bad in ("-1", "64MB"):
        monkeypatch.setenv(ENV_BUCKET_BYTES, bad)
        with pytest.raises(ValueError, match=ENV_BUCKET_BYTES):
            bucket_bytes_from_env()
    with pytest.raises(ValueError, match="bucket_bytes"):
        FusedCollectives(object(), -5)


# ---------------------------------------------------------------------- hc.DistributedOptimizer
class CountingCollectives:
    """Counts the collectives that reach the backend (to see them start during backward)."""

    def __init__(self, comm):
        self.comm, self.rank, self.size, self.issued = comm, comm.rank, comm.size, 0

    def __getattr__(self, attr):
        fn = getattr(self.comm, attr)

        def counted(*args, **kwargs):
            self.issued += 1
            return fn(*args, **kwargs)

        return counted


def net(seed=0):
    # weights from a local generator: the workers are threads, and torch's global RNG is shared
    model = torch.nn.Sequential(
        torch.nn.Linear(40, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 48),
        torch.nn.Tanh(),
        torch.nn.Linear(48, 5),
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def train(spec="onebit", steps=3, passes=1, overlap=True, bucket_bytes=DEFAULT_BUCKET_BYTES, unused_on=None):
    """Final parameters of every rank, and the collectives in flight after each step's backward."""

    def work(comm):
        counting = CountingCollectives(comm)
        model = net()
        opt = hc.DistributedOptimizer(
            torch.optim.SGD(model.parameters(), lr=0.1),
            named_parameters=model.named_parameters(),
            compression=spec,
            comm=counting,
            bucket_bytes=bucket_bytes,
            backward_passes_per_step=passes,
            overlap=overlap,
        )
        in_flight = []
        for step in range(steps):
            opt.zero_grad()
            at_start = counting.issued
            for p in range(passes):
                g = torch.Generator().manual_seed(1000 * step + 10 * p + comm.rank)
                x, y = torch.randn(16, 40, generator=g), torch.randint(0, 5, (16,), generator=g)
                head = model[:-1] if comm.rank == unused_on else model  # the classifier unused there
                out = head(x)
                loss = out.pow(2).mean() if comm.rank == unused_on else torch.nn.functional.cross_entropy(out, y)
                loss.backward()
            in_flight.append(counting.issued - at_start)  # issued during backward
            opt.step()
        return [p.detach().clone() for p in model.parameters()], in_flight

    return run_workers(2, work)


def same_params(a, b):
    return all(torch.equal(x, y) for (pa, _), (pb, _) in zip(a, b) for x, y in zip(pa, pb))


@pytest.mark.parametrize("spec", ["onebit", "qsgd:bits=4", "powersgd:rank=2,start_iter=0"])
def test_optimizer_overlapped_fused_and_unfused_end_bit_identical(spec):
    overlapped = train(spec)
    assert same_params(overlapped, train(spec, overlap=False))
    assert same_params(overlapped, train(spec, bucket_bytes=0))
    assert same_params(overlapped, train(spec, bucket_bytes=64 * 64 * 4))  # several buckets
    assert all(torch.equal(x, y) for x, y in zip(overlapped[0][0], overlapped[1][0]))  # replicas


def test_buckets_start_during_backward_with_overlap():
    # after backward, before step(): the buckets' first collectives are already in flight (beyond
    # the one-off agreement checks of the first step); without overlap nothing is
    overlapped, plain = train(overlap=True), train(overlap=False)
    for (_, flights), (_, idle) in zip(overlapped, plain):
        assert all(n > 0 for n in flights) and not any(idle), (flights, idle)


def test_backward_passes_per_step_accumulates_like_exchanging_once_in_step():
    assert same_params(train(passes=2), train(passes=2, overlap=False))


def test_more_backward_passes_than_declared_is_a_clear_error():
    def work(comm):
        model = net()
        _opt = hc.DistributedOptimizer(
            torch.optim.SGD(model.parameters(), lr=0.1),
            named_parameters=model.named_parameters(),
            compression="onebit",
            comm=comm,
        )
        x = torch.randn(4, 40)
        model(x).sum().backward()
        with pytest.raises(RuntimeError, match="backward_passes_per_step"):
            model(x).sum().backward()
        return True

    assert run_workers(2, work) == [True, True]


def test_a_parameter_unused_on_one_rank_still_agrees():
    # rank 1 never uses the classifier: its bucket starts in step() there, from backward elsewhere
    ranks = train(unused_on=1)
    assert all(torch.equal(x, y) for x, y in zip(ranks[0][0], ranks[1][0]))


@pytest.mark.parametrize("bucket_bytes", [0, DEFAULT_BUCKET_BYTES])
def test_a_nan_gradient_on_one_rank_raises_on_every_rank_after_the_step_finishes(bucket_bytes):
    """The non-finite check is a device flag per tensor that the Driver reads once for the whole
    step: every rank raises FloatingPointError naming the tensor, after every exchange finished
    (no collective left half-done), fused or not."""

    def work(comm):
        fcomm = FusedCollectives(comm, bucket_bytes)
        ex = Exchange(hc.from_spec("qsgd:bits=4"), fcomm, stats=WireStats())
        grads = {n: grad(comm.rank, 0, n, s) for n, s in SHAPES.items()}
        if comm.rank == 2:
            grads["fc1.weight"][3, 4] = float("nan")
        try:
            drive({n: ex.average(n, g) for n, g in grads.items()}, fcomm)
        except FloatingPointError as exc:
            return str(exc)
        return None

    messages = run_workers(3, work)
    assert all(m is not None and "'fc1.weight'" in m for m in messages), messages
