"""Spec: ``hc.compression_error()`` gives torch the same counters as TensorFlow's: with tracking on,
every exchange adds this worker's ``||p - C(p)||^2`` and ``||p||^2`` (``p``: what it encoded, the
gradient plus the residual under error feedback); off by default, it counts nothing."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.torch.exchange import Exchange, WireStats, drive  # noqa: E402
from local_comm import run_workers  # noqa: E402


def exchange_once(spec, grads, track=True, world=2, steps=1):
    """Each rank averages its ``grads[rank]`` ``steps`` times; returns each rank's errors and codec."""

    def worker(comm):
        stats = WireStats()
        stats.track_error = track
        codec = hc.from_spec(spec)
        exchange = Exchange(codec, comm, stats=stats)
        for _ in range(steps):
            drive({"w": exchange.average("w", grads[comm.rank])})
        return stats.errors(), codec

    return run_workers(world, worker)


def grads(world=2, n=4096):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(64, n // 64, generator=g) for _ in range(world)]  # 2-D: 1-D tensors go uncompressed


def test_off_by_default_counts_nothing():
    assert WireStats().track_error is False
    (errors, _), _ = exchange_once("qsgd:bits=4", grads(), track=False)
    assert errors == {}


@pytest.mark.parametrize("world", [2, 3])  # allgather, then reduce-scatter
def test_qsgd_error_is_what_the_payload_loses(world):
    g = grads(world)
    results = exchange_once("qsgd:bits=4,min_numel=0", g, world=world)
    for rank, (errors, _) in enumerate(results):
        (row,) = errors.values()
        assert row["reference_sq"] == pytest.approx(float(g[rank].double().pow(2).sum()), rel=1e-9)
        assert 0.05 < row["relative_error"] < 0.5  # 4-bit max-norm buckets of Gaussian values
        assert row["relative_error"] == pytest.approx((row["error_sq"] / row["reference_sq"]) ** 0.5)


def test_error_feedback_error_is_the_new_residual():
    g = grads()
    for rank, (errors, codec) in enumerate(exchange_once("onebit:min_numel=0", g)):
        (row,) = errors.values()
        residual = codec.residual_of("w")  # first step: p = g, and p - C(p) is the residual
        assert row["error_sq"] == pytest.approx(float(residual.double().pow(2).sum()), rel=1e-6)
        assert row["reference_sq"] == pytest.approx(float(g[rank].double().pow(2).sum()), rel=1e-6)
        assert 0.3 < row["relative_error"] < 1.0


def test_summable_codecs_count_the_cast():
    (fp16, _), _ = exchange_once("fp16:min_numel=0", grads())
    (none, _), _ = exchange_once("none:min_numel=0", grads())
    assert 0 < next(iter(fp16.values()))["relative_error"] < 1e-3
    assert next(iter(none.values()))["error_sq"] == 0.0


def test_public_switch_and_reader(monkeypatch):
    from hvd_compress.torch import stats

    monkeypatch.setattr(stats.WIRE_STATS, "track_error", False)
    hc.reset_wire_stats()
    hc.track_compression_error()
    assert stats.WIRE_STATS.track_error is True
    hc.track_compression_error(False)
    assert hc.compression_error() == {}
