"""Worker script: TensorFlow fused compressed buckets under horovodrun (tests/test_tf_fusion_mp.py).

For each codec and bucket_bytes in (0, 64 MiB), from the same start and the same per-rank
gradients: a GradientReducer loop eagerly, one inside tf.function, and the Keras
DistributedOptimizer (tf-keras or Keras 3, whichever TF_USE_LEGACY_KERAS picks) for a few steps.
Records a digest of every result and codec state variable, and the collectives per step: counted
at the backend eagerly, and as Horovod ops in the traced graph under tf.function.

    horovodrun -np 3 --gloo python tests/mp/tf_fusion.py --out DIR --specs "onebit;qsgd:bits=4"
"""

import hashlib

from common import parse_args, write_result

import numpy as np
import tensorflow as tf

import horovod.tensorflow as hvd
import hvd_compress.tensorflow as hct
import hvd_compress.tensorflow.frontends.keras as hck
from hvd_compress.tensorflow.collectives import HorovodCollectives

args = parse_args({"--specs": {"required": True}, "--steps": {"type": int, "default": 3}})
hvd.init()
RANK = hvd.rank()
FUSED = 64 << 20
SHAPES = [(64, 48), (48,), (48, 40), (40,), (96, 32), (32,), (128, 64), (100, 10), (10,), (3, 3, 8, 16)]
COLLECTIVE_OPS = {"HorovodAllgather", "HorovodAlltoall", "HorovodAllreduce", "HorovodGroupedAllreduce"}


class Counting(HorovodCollectives):
    """Horovod's collectives, counted as the exchange issues them (agreement checks apart)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def allreduce(self, tensor, name, op="average"):
        self.count += 1
        return super().allreduce(tensor, name, op)

    def allgather(self, tensor, name):
        self.count += "_check" not in name
        return super().allgather(tensor, name)

    def alltoall(self, tensor, splits, name):
        self.count += 1
        return super().alltoall(tensor, splits, name)


def digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()


def state_of(codec):
    return [v.numpy() for g in sorted(codec.state) for _, v in sorted(codec.state[g].items())]


def grads_for(step):
    rng = np.random.default_rng(1000 * step + RANK)
    return [tf.constant(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]


def reducer_run(spec, bucket_bytes, graph):
    comm = Counting()
    reducer = hct.GradientReducer(spec, comm=comm, bucket_bytes=bucket_bytes)
    # the same variable names (so state keys and RNG streams) in every run
    variables = [tf.Variable(tf.zeros(s), name=f"layer{i}/w") for i, s in enumerate(SHAPES)]
    reducer.build(variables)

    def step_fn(gs):
        return reducer(gs, variables)

    if graph:
        step_fn = tf.function(step_fn)
    outs, per_step = [], []
    for step in range(args.steps):
        before = comm.count
        outs += [o.numpy() for o in step_fn(grads_for(step))]
        per_step.append(comm.count - before)
    row = {"digest": digest(outs), "state": digest(state_of(reducer.codec)), "per_step": per_step}
    if graph:
        graph_ops = step_fn.get_concrete_function(grads_for(0)).graph.get_operations()
        row["graph_collectives"] = sum(op.type in COLLECTIVE_OPS for op in graph_ops)
        row["graph_op_types"] = sorted({op.type for op in graph_ops if op.type.startswith("Horovod")})
    return row


def keras_run(spec, bucket_bytes):
    import keras

    model = keras.Sequential(
        [
            keras.Input((32,)),
            keras.layers.Dense(96, name="d1"),
            keras.layers.Dense(64, name="d2"),
            keras.layers.Dense(10, name="d3"),
        ],
        name="net",  # the same variable names (state keys, so RNG streams) in every run
    )
    init = np.random.default_rng(0)  # the same start in every run and on every rank
    model.set_weights([init.standard_normal(w.shape).astype(np.float32) * 0.1 for w in model.get_weights()])
    opt = hck.DistributedOptimizer(keras.optimizers.SGD(0.01), compression=spec, bucket_bytes=bucket_bytes)
    rng = np.random.default_rng(7 + RANK)
    for _ in range(args.steps):
        x = tf.constant(rng.standard_normal((16, 32)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
    return {
        "digest": digest([v.numpy() for v in model.trainable_variables]),
        "state": digest(state_of(opt.compression)),
    }


result = {}
for spec in args.specs.split(";"):
    for bucket_bytes in (0, FUSED):
        result[f"{spec}|eager|{bucket_bytes}"] = reducer_run(spec, bucket_bytes, graph=False)
        result[f"{spec}|graph|{bucket_bytes}"] = reducer_run(spec, bucket_bytes, graph=True)
        result[f"{spec}|keras|{bucket_bytes}"] = keras_run(spec, bucket_bytes)
write_result(args.out, RANK, result)
