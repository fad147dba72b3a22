"""Spec: on a GPU the exchange's device work runs on a side CUDA stream, ordered by events.

:class:`hvd_compress.torch.exchange.CudaSideStreams` (used by every frontend's :class:`Driver`):
the side stream waits for the caller's stream before the first encode, collectives are issued
and waited on under it, and the caller's stream waits for it before the results are used. On CPU
tensors, or with ``HVD_COMPRESS_CUDA_STREAMS=0``, nothing changes. The ``gpu`` tests run where
CUDA exists (``ci/gpu_check.sh``) and check that results are bit-identical with and without the
side stream, including when the gradient is still being written by a long kernel on the caller's
stream when the exchange starts.
"""

from __future__ import annotations

import contextlib
import os

import pytest

torch = pytest.importorskip("torch")

import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.torch.exchange import CudaSideStreams, Driver, Exchange  # noqa: E402
from local_comm import run_workers  # noqa: E402

SPECS = ["qsgd:bits=4", "onebit", "efsign", "topk:ratio=0.01"]


def test_cpu_tensors_and_the_off_switch_use_no_stream(monkeypatch):
    streams = CudaSideStreams()
    assert streams.enter(None) is None
    assert streams.enter(torch.device("cpu")) is None
    monkeypatch.setenv("HVD_COMPRESS_CUDA_STREAMS", "0")
    assert streams.enter(torch.device("cuda", 0)) is None  # decided before touching CUDA
    assert streams.current() is None
    streams.leave([torch.zeros(1)])  # nothing entered: a no-op


def average(spec, grads_of_rank, device, streams_used=None):
    """Each of 2 thread ranks averages its gradients through a Driver; returns rank 0's results."""

    def worker(comm):
        exchange = Exchange(hc.from_spec(spec), comm)
        driver = Driver(comm)
        for name, g in grads_of_rank(comm.rank, device).items():
            driver.start(name, exchange.average(name, g), g.device)
        if streams_used is not None and comm.rank == 0:
            streams_used.extend(driver._stream_of.values())
        out = driver.finish()
        return {k: v.cpu() for k, v in out.items()}

    return run_workers(2, worker)[0]


def grads(rank, device):
    g = torch.Generator().manual_seed(rank)
    return {f"w{i}": torch.randn(4096 + 7 * i, generator=g).to(device) for i in range(3)}


def test_cpu_driver_results_do_not_depend_on_the_switch(monkeypatch):
    on = average("qsgd:bits=4", grads, torch.device("cpu"))
    monkeypatch.setenv("HVD_COMPRESS_CUDA_STREAMS", "0")
    off = average("qsgd:bits=4", grads, torch.device("cpu"))
    assert on.keys() == off.keys() and all(torch.equal(on[k], off[k]) for k in on)


@contextlib.contextmanager
def streams_off():
    # not monkeypatch: ci/gpu_check.py runs the gpu tests without pytest where it is missing
    before = os.environ.get("HVD_COMPRESS_CUDA_STREAMS")
    os.environ["HVD_COMPRESS_CUDA_STREAMS"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["HVD_COMPRESS_CUDA_STREAMS"]
        else:
            os.environ["HVD_COMPRESS_CUDA_STREAMS"] = before


@pytest.mark.gpu
@pytest.mark.parametrize("spec", SPECS)
def test_gpu_side_stream_results_equal_the_caller_stream_ones(spec):
    device = torch.device("cuda", torch.cuda.current_device())
    used: list = []
    on = average(spec, grads, device, used)
    assert used and all(s != torch.cuda.current_stream(device) for s in used), "no side stream was used"
    with streams_off():
        off = average(spec, grads, device)
    for k in on:
        assert torch.equal(on[k], off[k]), f"{spec} {k}: side stream changed the result"


@pytest.mark.gpu
def test_gpu_side_stream_waits_for_the_gradient_still_being_written():
    """The gradient comes out of a long matmul chain queued on the caller's stream; the exchange
    starts at once (no host sync). Ordering by events must make the encode read the final values."""
    device = torch.device("cuda", torch.cuda.current_device())

    def slow_grads(rank, device):
        a = torch.randn(2048, 2048, device=device, generator=torch.Generator(device).manual_seed(rank))
        for _ in range(20):  # tens of ms of queued work on the caller's stream
            a = torch.tanh(a @ a / 64)
        return {"w": a.reshape(-1)[:65536].contiguous()}

    got = average("onebit", slow_grads, device)
    torch.cuda.synchronize()
    want = average("onebit", lambda r, d: {"w": slow_grads(r, d)["w"].cpu()}, torch.device("cpu"))
    # the CPU and CUDA onebit kernels agree up to the last bit of the per-bucket means
    assert torch.allclose(got["w"], want["w"], rtol=1e-5, atol=1e-7)
