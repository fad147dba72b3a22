"""Spec: codec state under ``hvd.elastic.TorchState`` (hvd_compress.torch.frontends.elastic), in process.

* ``commit()`` snapshots the codec state with the model and optimizer; ``restore()`` brings back
  exactly that snapshot (residuals, server residual, step counters, PowerSGD's Q, GradiVeQ's
  basis), for hvd_compress's DistributedOptimizer and for the stock optimizer with a codec member;
* ``sync()`` (what ``hvd.elastic.run`` calls after a reset) keeps the state and makes the
  exchange re-run its agreement check in the (new) world;
* per-worker entries (residuals) are never broadcast, shared ones are;
* DoubleSqueeze's server residual is re-cut from the old world's chunks to the new one's, the
  chunks of lost workers zero.
Horovod runs with one process here (hvd.init() without a launcher); the multi-host elastic runs
with a SIGKILLed worker are tests/test_elastic_cluster.py.
"""

import copy

import pytest
import torch

hvd = pytest.importorskip("horovod.torch")

import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.common import chunk_bounds  # noqa: E402
from hvd_compress.torch.frontends import elastic  # noqa: E402

SPECS = [
    "onebit",
    "doublesqueeze:codec=onebit",
    "qsgd:bits=4",
    "powersgd:rank=2",
    "gradiveq:warmup_steps=1,sample_steps=2,compress_steps=4,sampler=none",
]


@pytest.fixture(scope="module", autouse=True)
def _horovod():
    hvd.init()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))


def _train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        x, y = torch.randn(16, 32, generator=g), torch.randint(0, 8, (16,), generator=g)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _flat(obj):
    """Codec state_dict as {path: tensor or value}, for exact comparison."""
    out = {}

    def walk(prefix, o):
        if isinstance(o, dict):
            for k in sorted(o, key=str):
                walk(f"{prefix}/{k}", o[k])
        else:
            out[prefix] = o.clone() if isinstance(o, torch.Tensor) else o

    walk("", obj)
    return out


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("spec", SPECS)
def test_commit_and_restore_bring_back_codec_state_with_the_model(spec):
    model = _model()
    opt = hc.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        named_parameters=model.named_parameters(),
        compression=spec,
    )
    state = hvd.elastic.TorchState(model=model, optimizer=opt, epoch=0)
    assert isinstance(state._handlers["optimizer"], elastic.CompressedOptimizerStateHandler)
    _train(model, opt, 5, seed=1)
    state.commit()
    committed = _flat(opt.codec.state_dict())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    if spec.startswith(("onebit", "doublesqueeze")):  # residuals even in a one-process world
        assert any(isinstance(v, torch.Tensor) for v in committed.values()), "codec kept no state"
    _train(model, opt, 3, seed=2)
    state.restore()
    _same(_flat(opt.codec.state_dict()), committed)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    # restored state trains on exactly like the original did after the commit
    twin_model = _model()
    twin_model.load_state_dict(weights)
    twin = hc.DistributedOptimizer(
        torch.optim.SGD(twin_model.parameters(), lr=0.05, momentum=0.9),
        named_parameters=twin_model.named_parameters(),
        compression=spec,
    )
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch may alias loaded tensors
    _train(model, opt, 2, seed=3)
    _train(twin_model, twin, 2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin_model.parameters()))


def test_stock_optimizer_takes_a_codec_member_and_sync_rechecks_the_world():
    model = _model()
    codec = hc.from_spec("doublesqueeze:codec=onebit")
    stock = hvd.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.05), named_parameters=model.named_parameters(), compression=codec
    )
    state = hvd.elastic.TorchState(model=model, optimizer=stock, codec=codec, epoch=0)
    assert isinstance(state._handlers["codec"], elastic.CodecStateHandler)
    # (one process: Horovod's stock optimizer skips communication, so the exchange is checked
    # with hvd_compress's optimizer)
    opt = hc.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.05), named_parameters=model.named_parameters(), compression=codec
    )
    state = hvd.elastic.TorchState(model=model, optimizer=opt, epoch=0)
    _train(model, opt, 3, seed=1)
    state.commit()
    committed = _flat(codec.state_dict())
    assert "server_residual" in codec.state and codec.state["numel"]
    _train(model, opt, 2, seed=2)
    state.restore()
    _same(_flat(codec.state_dict()), committed)
    assert opt.exchange._checked_world == (1, 0)
    state.sync()  # as after a reset: state kept (one worker: the re-cut is the identity) ...
    _same(_flat(codec.state_dict()), committed)
    assert opt.exchange._checked_world is None  # ... and the agreement check re-runs
    _train(model, opt, 1, seed=3)
    assert opt.exchange._checked_world == (1, 0)


def test_split_state_keeps_residuals_local_and_the_rest_shared():
    model = _model()
    opt = hc.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.05),
        named_parameters=model.named_parameters(),
        compression="doublesqueeze:codec=qsgd",
    )
    _train(model, opt, 2, seed=1)
    sd = opt.codec.state_dict()
    shared, local = elastic.split_state(sd)
    assert set(local["state"]) == {"server_residual"} and set(local["inner"]["state"]) == {"residual"}
    assert "step" in shared["state"] and "numel" in shared["state"] and "residual" not in shared["inner"]["state"]
    _same(_flat(elastic.merge_state(shared, local)), _flat(sd))


def test_server_residual_is_recut_to_the_new_world_and_lost_chunks_are_zero():
    n, align = 1000, 64
    full = torch.arange(n, dtype=torch.float32)
    old = chunk_bounds(n, 3, align)
    # old rank 1 was killed; old ranks 2 and 0 survive as new ranks 0 and 1; a new worker joins
    pieces = [
        (3, 2, {"w": full[old[2][0] : old[2][1]].clone()}),
        (3, 0, {"w": full[old[0][0] : old[0][1]].clone()}),
        (None, None, {}),
    ]
    expected = full.clone()
    expected[old[1][0] : old[1][1]] = 0
    new = chunk_bounds(n, 3, align)
    for rank in range(3):
        got = elastic.recut_server_residual(pieces, {"w": n}, align, 3, rank)["w"]
        assert torch.equal(got, expected[new[rank][0] : new[rank][1]]), rank
    two = chunk_bounds(n, 2, align)
    got = torch.cat([elastic.recut_server_residual(pieces[:2], {"w": n}, align, 2, r)["w"] for r in range(2)])
    assert torch.equal(got, expected) and two[0][1] == got.numel() - (two[1][1] - two[1][0])
    assert elastic.recut_server_residual([(None, None, {})], {"w": n}, align, 1, 0) == {}
