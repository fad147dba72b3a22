"""Spec: TF codec state under Horovod's TF elastic states (hvd_compress.tensorflow.frontends.elastic), in process.

* ``commit()`` snapshots the codec's variables with the model's; ``restore()`` brings back exactly
  that snapshot (residuals, server residual, step counters, PowerSGD's Q, GradiVeQ's basis), and
  variables created after the commit go back to their initial values;
* ``sync()`` keeps the state, re-runs the agreement check at once (collectively, not in some
  rank's next trace), and when the world changed drops the graphs Horovod traced with the codec;
* DoubleSqueeze's server residual is re-cut from the old world's chunk to the new one's (the
  variable replaced: its length changes);
* a graph traced for another world fails its world guard instead of exchanging wrong chunks.
Horovod runs with one process (hvd.init() without a launcher); the elastic runs across hosts with
a SIGKILLed worker are tests/test_elastic_cluster.py (``tf`` cases).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
hvd = pytest.importorskip("horovod.tensorflow")

import hvd_compress.tensorflow as hct  # noqa: E402
from hvd_compress.common import chunk_bounds  # noqa: E402
from hvd_compress.tensorflow.frontends import elastic  # noqa: E402
from hvd_compress.tensorflow.collectives import HorovodCollectives  # noqa: E402

SPECS = [
    "onebit",
    "doublesqueeze:codec=onebit",
    "qsgd:bits=4",
    "powersgd:rank=2,start_iter=2",
    "gradiveq:warmup_steps=1,sample_steps=2,compress_steps=4,sampler=none",
]


@pytest.fixture(scope="module", autouse=True)
def _horovod():
    hvd.init()


def _variables():
    g = np.random.default_rng(0)
    return [
        tf.Variable(g.normal(size=shape).astype(np.float32) * 0.1, name=name)
        for name, shape in (("conv", (3, 3, 4, 8)), ("w1", (72, 64)), ("b1", (64,)), ("w2", (64, 8)))
    ]


def _train(variables, reducer, steps, seed):
    g = np.random.default_rng(seed)
    for _ in range(steps):
        x = tf.constant(g.normal(size=(16, 6, 6, 4)).astype(np.float32))
        y = tf.constant(g.integers(0, 8, 16))
        with tf.GradientTape() as tape:
            h = tf.nn.relu(tf.nn.conv2d(x, variables[0], 2, "SAME"))
            h = tf.nn.relu(tf.reshape(h, [16, -1]) @ variables[1] + variables[2])
            loss = tf.reduce_mean(
                tf.keras.losses.sparse_categorical_crossentropy(y, h @ variables[3], from_logits=True)
            )
        grads = reducer(tape.gradient(loss, variables), variables)
        for v, gr in zip(variables, grads):
            v.assign_sub(0.05 * gr)


def _flat(sd, prefix=""):
    out = {}
    for k in sorted(sd):
        if isinstance(sd[k], dict):
            out.update(_flat(sd[k], f"{prefix}/{k}"))
        else:
            out[f"{prefix}/{k}"] = np.array(sd[k])
    return out


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("spec", SPECS)
def test_commit_and_restore_bring_back_codec_state_with_the_variables(spec):
    variables = _variables()
    reducer = hct.GradientReducer(spec)
    state = elastic.CompressedTensorFlowState(variables, reducer=reducer, epoch=0)
    _train(variables, reducer, 3, seed=1)
    state.commit()
    committed = _flat(elastic.codec_snapshot(reducer.codec))
    weights = [v.numpy() for v in variables]
    assert committed, "codec kept no state"
    _train(variables, reducer, 3, seed=2)
    assert not all(np.array_equal(committed[k], v) for k, v in _flat(elastic.codec_snapshot(reducer.codec)).items())
    state.restore()
    _same(_flat(elastic.codec_snapshot(reducer.codec)), committed)
    assert all(np.array_equal(v.numpy(), w) for v, w in zip(variables, weights))
    # the restored state trains on exactly like a twin loaded from the same snapshot
    twin_vars = _variables()
    for v, w in zip(twin_vars, weights):
        v.assign(w)
    twin = hct.GradientReducer(spec)
    twin.build(twin_vars)
    elastic.load_snapshot(twin.codec, elastic.codec_snapshot(reducer.codec), reset_missing=True)
    _train(variables, reducer, 2, seed=3)
    _train(twin_vars, twin, 2, seed=3)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(variables, twin_vars))


def test_restore_before_any_step_brings_later_variables_back_to_their_initial_values():
    variables = _variables()
    reducer = hct.GradientReducer("powersgd:rank=2,start_iter=0")
    state = elastic.CompressedTensorFlowState(variables, reducer=reducer)  # commits an empty codec
    _train(variables, reducer, 3, seed=1)
    codec = reducer.codec
    assert codec.state["q"] and any(int(v.numpy()) == 3 for v in codec.state["step"].values())
    state.restore()
    assert all(int(v.numpy()) == 0 for v in codec.state["step"].values())
    assert all(not np.any(v.numpy()) for v in codec.state["residual"].values())
    for key, q in codec.state["q"].items():
        np.testing.assert_array_equal(q.numpy(), codec.initial_state("q", key, q).numpy())


def test_sync_rechecks_agreement_and_drops_horovods_traces_when_the_world_changed():
    variables = _variables()
    codec = hct.from_spec("onebit")
    state = elastic.CompressedTensorFlowState(variables, codec=codec)
    state.sync()  # the job's start
    assert codec._stock.exchange._checked and state.codec_state._world == (1, 0)
    # what Horovod's Keras DistributedOptimizer (built eagerly) holds: a cached tf.function
    allreduce_grads = hvd._make_allreduce_grads_fn(
        "DistributedSGD", "", "", codec, False, hvd.Average, 1.0, None, process_set=hvd.global_process_set
    )
    allreduce_grads([tf.ones([72, 64])], [variables[1]])
    horovod_fns = elastic._horovod_cached_functions(codec)
    assert horovod_fns and all(len(fn._function_cache) >= 1 for fn in horovod_fns)
    state.commit()
    committed = _flat(elastic.codec_snapshot(codec))
    codec._stock.exchange._checked = False
    state.sync()  # a reset in the same world (1, 0): graphs stay, state stays, agreement re-run here
    assert codec._stock.exchange._checked
    assert all(len(fn._function_cache) >= 1 for fn in horovod_fns)
    _same(_flat(elastic.codec_snapshot(codec)), committed)
    state.codec_state._world = (3, 1)  # as if this worker was rank 1 of 3 before the reset
    state.sync()
    assert all(len(fn._function_cache) == 0 for fn in horovod_fns)
    assert state.codec_state._world == (1, 0)
    _same(_flat(elastic.codec_snapshot(codec)), committed)


def test_server_residual_is_recut_to_the_new_world_and_the_variable_replaced():
    codec = hct.from_spec("doublesqueeze:codec=onebit")
    n, key = 1000, "w"
    codec.inner.build_state(key, n)  # the worker residual: gives the tensor's size
    bounds = chunk_bounds(n, 3, codec.alignment())
    lo, hi = bounds[1]
    chunk = np.arange(lo, hi, dtype=np.float32) + 1
    elastic._set_variable(codec, "server_residual", key, chunk)
    old_var = codec.state["server_residual"][key]
    cs = elastic.CodecState(codec)
    cs._world = (3, 1)  # committed as rank 1 of 3; now the only worker
    cs.sync()
    new = codec.state["server_residual"][key]
    assert new is not old_var and new.shape == [n]
    expected = np.zeros(n, np.float32)
    expected[lo:hi] = chunk
    np.testing.assert_array_equal(new.numpy(), expected)
    # and the pure re-cut: old rank 1 of 3 lost, ranks 0 and 2 survive as 0 and 1 of 2
    full = np.arange(n, dtype=np.float32)
    pieces = [(3, 0, {key: full[bounds[0][0] : bounds[0][1]]}), (3, 2, {key: full[bounds[2][0] : bounds[2][1]]})]
    got = np.concatenate(
        [elastic.recut_server_residual(pieces, {key: n}, codec.alignment(), 2, r)[key] for r in range(2)]
    )
    full[lo:hi] = 0
    np.testing.assert_array_equal(got, full)


def test_a_graph_traced_for_another_world_fails_its_world_guard():
    class Traced(HorovodCollectives):
        size = 2  # type: ignore[assignment]  (what the world was when the graph was traced)

    comm = Traced()

    @tf.function
    def guarded():
        with tf.control_dependencies([comm.world_guard()]):
            return tf.constant(1)

    with pytest.raises(tf.errors.InvalidArgumentError, match="traced for a world"):
        guarded()
    assert HorovodCollectives().world_guard() is None  # eager: read live, nothing to guard


def test_is_horovod_failure_recognizes_failed_hvd_compress_collectives():
    err = tf.errors.UnknownError(None, None, "Graph execution error: node hvdc_w1_0a1b2c3d_a2a: connection closed")
    assert elastic.is_horovod_failure(err)
    assert not elastic.is_horovod_failure(tf.errors.UnknownError(None, None, "some user op failed"))
    assert not elastic.is_horovod_failure(ValueError("Horovod"))
