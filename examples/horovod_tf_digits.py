"""A stock Horovod TensorFlow 2 training script (the structure of Horovod's
examples/tensorflow2/tensorflow2_mnist.py: a custom loop with ``hvd.DistributedGradientTape``, the
variables broadcast after the first step, on scikit-learn's 8x8 digits so it needs no download).
It does not import hvd_compress: run it compressed, unchanged, through the launcher::

    HVD_COMPRESS="qsgd:bits=4" horovodrun -np 2 python -m hvd_compress.run examples/horovod_tf_digits.py

and plain with ``horovodrun -np 2 python examples/horovod_tf_digits.py``. Rank 0 prints
``accuracy=0.XXXX`` (the test set, averaged over ranks) at the end.
"""

import argparse
import os

# Horovod 0.28.1's DistributedGradientTape keys gradients by ``var.ref()``, which Keras 3 variables
# (TF >= 2.16's default tf.keras) lack: use tf-keras, as Horovod TF2 scripts on today's TF must.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser(description="TensorFlow 2 digits example")
parser.add_argument("--batch-size", type=int, default=32, help="input batch size for training")
parser.add_argument("--epochs", type=int, default=3, help="number of epochs to train")
parser.add_argument("--lr", type=float, default=0.001, help="learning rate (scaled by the number of workers)")
parser.add_argument("--seed", type=int, default=42, help="random seed")


def datasets():
    x, y = load_digits(return_X_y=True)
    x = ((x / 16.0 - 0.3) / 0.4).astype(np.float32).reshape(-1, 8, 8, 1)  # NHWC
    xtr, xte, ytr, yte = train_test_split(x, y.astype(np.int64), test_size=0.25, random_state=0, stratify=y)
    return (xtr, ytr), (xte, yte)


def make_model():
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(8, 8, 1)),
            tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            tf.keras.layers.MaxPooling2D(2),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10),
        ]
    )


if __name__ == "__main__":
    args = parser.parse_args()
    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.keras.utils.set_random_seed(args.seed + hvd.rank())  # different weights per rank: the broadcast fixes it

    (xtr, ytr), (xte, yte) = datasets()
    # Horovod: shard the training set; every rank takes the same number of steps
    steps_per_epoch = len(xtr) // hvd.size() // args.batch_size
    xtr, ytr = xtr[hvd.rank() :: hvd.size()], ytr[hvd.rank() :: hvd.size()]

    model = make_model()
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # Horovod: scale the learning rate by the number of workers.
    opt = tf.keras.optimizers.Adam(args.lr * hvd.size())

    @tf.function
    def training_step(images, labels, first_batch):
        with tf.GradientTape() as tape:
            loss_value = loss(labels, model(images, training=True))

        # Horovod: add Horovod Distributed GradientTape.
        tape = hvd.DistributedGradientTape(tape)

        grads = tape.gradient(loss_value, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

        # Horovod: broadcast initial variable states from rank 0 to all other processes.
        # This is necessary to ensure consistent initialization of all workers when
        # training is started with random weights or restored from a checkpoint.
        #
        # Note: broadcast should be done after the first gradient step to ensure optimizer
        # initialization.
        if first_batch:
            hvd.broadcast_variables(model.variables, root_rank=0)
            hvd.broadcast_variables(opt.variables(), root_rank=0)
        return loss_value

    rng = np.random.default_rng(args.seed + hvd.rank())
    for epoch in range(1, args.epochs + 1):
        perm = rng.permutation(len(xtr))
        for batch in range(steps_per_epoch):
            idx = perm[batch * args.batch_size : (batch + 1) * args.batch_size]
            loss_value = training_step(tf.constant(xtr[idx]), tf.constant(ytr[idx]), epoch == 1 and batch == 0)
            if batch % 10 == 0 and hvd.rank() == 0:
                print(f"Epoch {epoch} step {batch}/{steps_per_epoch}\tLoss: {float(loss_value):.6f}")

    # test accuracy, averaged over ranks (each rank scores its shard of the test set)
    xte, yte = xte[hvd.rank() :: hvd.size()], yte[hvd.rank() :: hvd.size()]
    correct = float(np.sum(np.argmax(model(xte, training=False).numpy(), axis=1) == yte))
    totals = hvd.allreduce(tf.constant([correct, float(len(yte))], tf.float64), op=hvd.Sum, name="test_accuracy")
    if hvd.rank() == 0:
        print(f"accuracy={float(totals[0] / totals[1]):.4f}")
