"""Elastic Horovod training in TensorFlow (tf-keras) with a compressed exchange and committed codec state.

Runs as a plain job or as an elastic one:

    TF_USE_LEGACY_KERAS=1 horovodrun -np 2 --gloo python examples/elastic_tf.py --codec onebit
    TF_USE_LEGACY_KERAS=1 horovodrun -np 3 --min-np 2 --max-np 3 --host-discovery-script ./discover.sh \\
        --gloo python examples/elastic_tf.py --codec "doublesqueeze:codec=onebit"

``CompressedKerasState`` is Horovod's ``TensorFlowKerasState`` with the codec's state (error-feedback
residuals, DoubleSqueeze's server residual, RNG steps, PowerSGD's Q, GradiVeQ's basis) committed,
restored and re-synchronized with the model and optimizer; ``hvd_compress.tensorflow.frontends.elastic.run``
is ``hvd.elastic.run`` that also recognizes a failed compressed collective. The step function is
a ``tf.function`` created inside the elastic function, so it is traced again for the new world
after every reset (see docs/elastic.md).
"""

import argparse
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Horovod's Keras state needs tf-keras

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

import hvd_compress.tensorflow.frontends.keras as hck
from hvd_compress.tensorflow.frontends import elastic

ap = argparse.ArgumentParser()
ap.add_argument("--codec", default="onebit")
ap.add_argument("--epochs", type=int, default=4)
ap.add_argument("--batches", type=int, default=40, help="batches per epoch")
ap.add_argument("--commit-every", type=int, default=5, help="commit state every N batches")
args = ap.parse_args()

hvd.init()
# a fixed synthetic task: 10 classes from a random linear teacher
teacher = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
test_x = np.random.default_rng(1).normal(size=(2000, 64)).astype(np.float32)
test_y = (test_x @ teacher).argmax(1)
model = tf.keras.Sequential(
    [tf.keras.layers.Dense(128, activation="relu", input_shape=(64,)), tf.keras.layers.Dense(10)]
)
opt = hck.DistributedOptimizer(tf.keras.optimizers.SGD(0.05, momentum=0.9), compression=args.codec)
# Horovod's stock optimizer instead:
#   codec = hvd_compress.tensorflow.from_spec(args.codec)
#   opt = horovod.tensorflow.keras.DistributedOptimizer(tf.keras.optimizers.SGD(...), compression=codec)
#   state = elastic.CompressedKerasState(model, opt, codec=codec, epoch=0, batch=0)
#   and in step(): opt.minimize(loss, model.trainable_variables, tape=tape) (Horovod's optimizer
#   averages in compute_gradients, not in apply_gradients)
opt.build(model.trainable_variables)  # every worker, joining ones too, holds the same optimizer variables
state = elastic.CompressedKerasState(model, opt, epoch=0, batch=0)
loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@elastic.run
def train(state):
    @tf.function  # created here: traced for the world of this (re)start
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    while state.epoch < args.epochs:
        while state.batch < args.batches:
            # every rank draws its own batch, seeded by (epoch, batch, rank): resumable
            g = np.random.default_rng(10_000 * state.epoch + 100 * state.batch + hvd.rank())
            x = g.normal(size=(64, 64)).astype(np.float32)
            step(tf.constant(x), tf.constant((x @ teacher).argmax(1)))
            state.batch += 1
            if state.batch % args.commit_every == 0:
                state.commit()
        state.epoch, state.batch = state.epoch + 1, 0
        state.commit()


train(state)
accuracy = float((model(test_x).numpy().argmax(1) == test_y).mean())
checksum = sum(float(np.asarray(w, np.float64).sum()) for w in model.get_weights())
print(
    f"rank {hvd.rank()} of {hvd.size()}: codec {args.codec}, accuracy {accuracy:.4f}, "
    f"parameter checksum {checksum:.10f}"
)
