"""Elastic TF worker for tests/test_elastic_cluster.py: the torch worker's job and log, in tf-keras.

The same events as ``elastic_cluster_train.py`` (``start``, ``progress`` after every committed
batch, ``reset``, ``done`` with accuracy and a parameter checksum), the same teacher task (32 -> 64
-> 10 MLP, SGD 0.05 momentum 0.9, 64 samples per worker and batch, seeded by (epoch, batch, rank)).

``--codec none``: Horovod alone, its tf-keras ``hvd.DistributedOptimizer`` in Horovod's
``TensorFlowKerasState`` (the control); any other codec: ``hvd_compress.tensorflow.frontends.keras.
DistributedOptimizer`` in :class:`hvd_compress.tensorflow.frontends.elastic.CompressedKerasState`. The step
is a ``tf.function`` built inside the elastic function, so it is traced again after every reset.
"""

import argparse
import json
import os
import socket
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Horovod's Keras code needs tf-keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import horovod.tensorflow as hvd
import horovod.tensorflow.keras as hvdk
import numpy as np
import tensorflow as tf

import hvd_compress.tensorflow.frontends.keras as hck
from hvd_compress.tensorflow.frontends import elastic

ap = argparse.ArgumentParser()
ap.add_argument("--codec", default="onebit")
ap.add_argument("--epochs", type=int, default=6)
ap.add_argument("--batches", type=int, default=20)
ap.add_argument("--sleep", type=float, default=0.1)
args = ap.parse_args()

LOG = os.path.join(os.environ["ELASTIC_LOG"], f"{socket.gethostname()}-{os.getpid()}.jsonl")


def log(event, **fields):
    with open(LOG, "a") as f:
        f.write(
            json.dumps({"event": event, "host": socket.gethostname(), "pid": os.getpid(), "t": time.time(), **fields})
            + "\n"
        )


log("start")
hvd.init()
teacher = np.random.default_rng(0).normal(size=(32, 10)).astype(np.float32)
test_x = np.random.default_rng(1).normal(size=(2000, 32)).astype(np.float32)
test_y = (test_x @ teacher).argmax(1)
tf.keras.utils.set_random_seed(0)  # (the initial sync broadcasts rank 0's weights anyway)
model = tf.keras.Sequential(
    [tf.keras.layers.Dense(64, activation="relu", input_shape=(32,)), tf.keras.layers.Dense(10)]
)
base = tf.keras.optimizers.SGD(0.05, momentum=0.9)
opt = (
    hvdk.DistributedOptimizer(base) if args.codec == "none" else hck.DistributedOptimizer(base, compression=args.codec)
)
# momentum slots now, on every worker: the state's sync broadcasts the optimizer's variables, so a
# worker that joins must hold the same list as the survivors
opt.build(model.trainable_variables)
state = elastic.CompressedKerasState(model, opt, epoch=0, batch=0)  # no codec ("none"): Horovod's state
state.register_reset_callbacks([lambda: log("reset", size=hvd.size(), rank=hvd.rank())])
loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@elastic.run
def train(state):
    @tf.function  # traced here: after a reset the world (rank, size) differs
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        # minimize: Horovod's Keras optimizer averages in compute_gradients (not apply_gradients)
        opt.minimize(loss, model.trainable_variables, tape=tape)
        return loss

    while state.epoch < args.epochs:
        while state.batch < args.batches:
            g = np.random.default_rng(10_000 * state.epoch + 100 * state.batch + hvd.rank())
            x = g.normal(size=(64, 32)).astype(np.float32)
            step(tf.constant(x), tf.constant((x @ teacher).argmax(1)))
            state.batch += 1
            state.commit()
            log("progress", epoch=state.epoch, batch=state.batch, size=hvd.size(), rank=hvd.rank())
            time.sleep(args.sleep)
        state.epoch, state.batch = state.epoch + 1, 0
        state.commit()


train(state)
accuracy = float((model(test_x).numpy().argmax(1) == test_y).mean())
checksum = float(sum(np.asarray(v, np.float64).sum() for v in model.get_weights()))
log("done", accuracy=accuracy, checksum=checksum, size=hvd.size(), rank=hvd.rank())
