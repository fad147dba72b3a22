"""Spec: a 1-GPU training run through the exchange, every codec within 1 point of uncompressed.

Two ranks as two threads of one process (``tests/local_comm.py``) share one device; each step
every rank computes its shard's gradients, averages them through :class:`Exchange` and a
:class:`Driver` (the frontends' engine: the Triton kernels and the side CUDA stream on a GPU) and
takes an SGD step. The ``gpu`` case runs where CUDA exists; the CPU case runs the same code in CI
(native kernels), so the harness itself is tested everywhere.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.torch.exchange import Driver, Exchange  # noqa: E402
from local_comm import run_workers  # noqa: E402

CODECS = ["none", "qsgd:bits=4", "onebit", "efsign", "terngrad"]


def teacher_task(device, n=4096, dim=32, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(dim, classes, generator=g)
    x = torch.randn(2 * n, dim, generator=g)
    y = (x @ teacher).argmax(dim=1)
    return x[:n].to(device), y[:n].to(device), x[n:].to(device), y[n:].to(device)


def make_model():
    return torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def train(spec, device, steps=300, world=2):
    x, y, xt, yt = teacher_task(device)
    torch.manual_seed(0)
    initial = make_model().state_dict()  # identical initial replicas (threads share torch's RNG)

    def worker(comm):
        model = make_model().to(device)
        model.load_state_dict(initial)
        opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
        exchange = Exchange(hc.from_spec(spec), comm)
        shard = slice(comm.rank, None, comm.size)
        xs, ys = x[shard], y[shard]
        for step in range(steps):
            lo = (step * 64) % (xs.shape[0] - 64)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[lo : lo + 64]), ys[lo : lo + 64]).backward()
            driver = Driver(comm)
            for name, p in model.named_parameters():
                driver.start(name, exchange.average(name, p.grad), p.grad.device)
            averaged = driver.finish()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.grad.copy_(averaged[name].view_as(p.grad))
            opt.step()
        with torch.no_grad():
            accuracy = (model(xt).argmax(dim=1) == yt).float().mean().item()
            checksum = sum(float(p.double().sum()) for p in model.parameters())
        return accuracy, checksum

    results = run_workers(world, worker, timeout=300)
    assert len({c for _, c in results}) == 1, f"{spec}: replicas differ: {results}"
    return results[0][0]


def check_codecs(device):
    base = train("none", device)
    assert base > 0.85, f"uncompressed run did not train: {base}"
    for spec in CODECS[1:]:
        accuracy = train(spec, device)
        assert accuracy >= base - 0.01, f"{spec} on {device}: {accuracy:.4f} vs {base:.4f} uncompressed"


def test_cpu_training_through_the_exchange_within_1_point():
    check_codecs(torch.device("cpu"))


@pytest.mark.gpu
def test_gpu_training_through_the_exchange_within_1_point():
    check_codecs(torch.device("cuda", torch.cuda.current_device()))
