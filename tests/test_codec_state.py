"""Codec state is typed: each codec declares its ``State`` dataclass (hvd_compress.core.state), one
field per group, and saves it in the untyped checkpoint format (``{group: {tensor name: value}}``),
so states saved before the typing still load, and TF checkpoints keep their variable paths."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from codec_cases import specs
from local_comm import run_workers

import hvd_compress.torch as hc
from hvd_compress.core.state import ErrorFeedbackState, PowerSGDState, TensorState
from hvd_compress.torch.exchange import Exchange, WireStats, drive

# every codec of the per-codec table but gossip (Lattice is exchanged by SwarmSGD, not here)
SPECS = [s for s in specs("codecs") if not s.startswith("lattice")] + [
    "powersgd:rank=1,start_iter=1",
    "gradiveq:warmup_steps=1,sample_steps=1,compress_steps=2",
]
SHAPE = (32, 16, 3, 3)  # a conv kernel, so GradiVeQ compresses it and PowerSGD factors it


def trained(spec, steps=4, size=2):
    """Rank 0's codec after ``steps`` exchanges of two tensors among ``size`` simulated workers."""

    def work(comm):
        codec = hc.from_spec(spec)
        ex = Exchange(codec, comm, stats=WireStats())
        gen = torch.Generator().manual_seed(comm.rank)
        for _ in range(steps):
            grads = {"conv.weight": torch.randn(SHAPE, generator=gen), "fc.weight": torch.randn(64, 80, generator=gen)}
            drive({key: ex.average(key, g) for key, g in grads.items()})
        return codec

    return run_workers(size, work)[0]


def same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("spec", SPECS)
def test_torch_codec_state_is_its_declared_dataclass_and_round_trips(spec):
    codec = trained(spec)
    assert isinstance(codec.state, codec.State) and issubclass(codec.State, TensorState)
    assert dataclasses.is_dataclass(codec.state)
    saved = codec.state_dict()
    # the checkpoint format: exactly the declared groups, each a plain dict keyed by tensor name
    assert list(saved["state"]) == list(codec.State.group_names())
    assert all(type(group) is dict for group in saved["state"].values())
    fresh = hc.from_spec(spec)
    fresh.load_state_dict(saved)
    assert same(fresh.state_dict(), saved)
    assert type(fresh.state) is codec.State


def test_the_state_of_each_family_names_what_it_keeps():
    assert isinstance(hc.QSGD().state, TensorState) and list(hc.QSGD().state) == ["step"]
    assert isinstance(hc.OneBit().state, ErrorFeedbackState)
    assert list(hc.from_spec("doublesqueeze:codec=onebit").state) == ["step", "numel", "server_residual"]
    assert isinstance(hc.PowerSGD().state, PowerSGDState)
    assert "basis" in hc.GradiVeQ().state and "samples" in hc.GradiVeQ().state
    # typed access and access by group name reach the same dict
    codec = trained("onebit", steps=1)
    assert codec.state.residual is codec.state["residual"] and "conv.weight" in codec.state.residual


def test_a_state_saved_before_the_typing_loads_and_a_foreign_group_is_refused():
    codec = trained("onebit", steps=2)
    saved = codec.state_dict()
    # the untyped state only held the groups a codec had written to
    old = {"codec": saved["codec"], "state": {"residual": saved["state"]["residual"]}}
    fresh = hc.from_spec("onebit")
    fresh.load_state_dict(old)
    assert fresh.state.step == {} and same(fresh.state.residual, saved["state"]["residual"])
    with pytest.raises(ValueError, match=r"group\(s\) \['q'\].*ErrorFeedbackState"):
        fresh.load_state_dict({"codec": saved["codec"], "state": {"q": {}}})


def test_groups_are_not_replaced_from_outside():
    codec = hc.OneBit()
    with pytest.raises(TypeError):
        codec.state["residual"] = {}  # type: ignore[index]
    with pytest.raises(KeyError):
        codec.state["q"]


# ---------------------------------------------------------------------------- TensorFlow
tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("spec", ["qsgd:bits=4", "onebit", "doublesqueeze:codec=onebit", "powersgd:rank=2", "gradiveq"])
def test_tf_codec_state_is_the_same_dataclass_made_trackable(spec, tmp_path):
    import hvd_compress.tensorflow as hct

    codec = hct.from_spec(spec)
    assert isinstance(codec.state, codec.State) and issubclass(codec.State, TensorState)
    torch_state = hc.from_spec(spec).State
    if spec != "gradiveq":  # TF keeps GradiVeQ's sample moments as three variable groups
        assert codec.State is torch_state
    codec.state_variable("step", "dense/kernel", [], tf.int64).assign(7)
    # checkpoint paths are those of the untyped dict of dicts: .../state/<group>/<tensor name>
    path = tf.train.Checkpoint(compression=codec).save(str(tmp_path / "ck"))
    names = [name for name, _ in tf.train.list_variables(path)]
    assert "compression/state/step/dense.Skernel/.ATTRIBUTES/VARIABLE_VALUE" in names
    restored = hct.from_spec(spec)
    restored.state_variable("step", "dense/kernel", [], tf.int64)
    tf.train.Checkpoint(compression=restored).restore(path).assert_consumed()
    assert int(restored.state.step["dense/kernel"].numpy()) == 7
    copy = pickle.loads(pickle.dumps(codec))
    assert type(copy.state) is type(codec.state) and int(copy.state.step["dense/kernel"].numpy()) == 7
    with pytest.raises(ValueError, match="keeps no state group 'nope'"):
        codec.state_variable("nope", "dense/kernel", [])
