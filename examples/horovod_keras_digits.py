"""A stock Horovod Keras training script (the structure of Horovod's
examples/tensorflow2/tensorflow2_keras_mnist.py: ``horovod.tensorflow.keras.DistributedOptimizer``
around the optimizer, ``model.fit`` with Horovod's broadcast and metric-averaging callbacks, on
scikit-learn's 8x8 digits so it needs no download). It does not import hvd_compress: run it
compressed, unchanged, through the launcher::

    HVD_COMPRESS="qsgd:bits=4" horovodrun -np 2 python -m hvd_compress.run examples/horovod_keras_digits.py

and plain with ``horovodrun -np 2 python examples/horovod_keras_digits.py``. Rank 0 prints
``accuracy=0.XXXX`` (the test set, averaged over ranks) at the end.
"""

import argparse
import os

# Horovod 0.28.1's Keras optimizer needs tf-keras (Keras 3, TF >= 2.16's default tf.keras, fails
# with "'Variable' object has no attribute 'ref'"): Horovod Keras scripts on today's TF set this.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import horovod.tensorflow.keras as hvd
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser(description="Keras digits example")
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
    # Horovod: initialize Horovod.
    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.keras.utils.set_random_seed(args.seed + hvd.rank())  # different weights per rank: the broadcast fixes it

    (xtr, ytr), (xte, yte) = datasets()
    # Horovod: shard the training set; every rank takes the same number of steps per epoch
    steps_per_epoch = len(xtr) // hvd.size() // args.batch_size
    xtr, ytr = xtr[hvd.rank() :: hvd.size()], ytr[hvd.rank() :: hvd.size()]
    dataset = (
        tf.data.Dataset.from_tensor_slices((xtr, ytr))
        .repeat()
        .shuffle(len(xtr), seed=args.seed + hvd.rank())
        .batch(args.batch_size)
    )

    model = make_model()
    # Horovod: adjust learning rate based on number of workers.
    scaled_lr = args.lr * hvd.size()
    opt = tf.keras.optimizers.Adam(scaled_lr)

    # Horovod: add Horovod DistributedOptimizer.
    opt = hvd.DistributedOptimizer(opt)

    model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer=opt, metrics=["accuracy"]
    )

    callbacks = [
        # Horovod: broadcast initial variable states from rank 0 to all other processes.
        # This is necessary to ensure consistent initialization of all workers when
        # training is started with random weights or restored from a checkpoint.
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        # (Horovod's example also adds hvd.callbacks.MetricAverageCallback(): Horovod 0.28.1's fails
        # on TF >= 2.16, "module 'keras.backend' has no attribute 'constant'", launcher or not: it
        # takes the Keras 3 backend even under tf-keras. The test accuracy below is averaged instead.)
    ]

    # Horovod: write logs on worker 0.
    verbose = 2 if hvd.rank() == 0 else 0
    model.fit(dataset, steps_per_epoch=steps_per_epoch, callbacks=callbacks, epochs=args.epochs, verbose=verbose)

    # test accuracy, averaged over ranks (each rank scores its shard of the test set)
    xte, yte = xte[hvd.rank() :: hvd.size()], yte[hvd.rank() :: hvd.size()]
    correct = float(np.sum(np.argmax(model.predict(xte, verbose=0), axis=1) == yte))
    totals = hvd.allreduce(np.array([correct, float(len(yte))]), op=hvd.Sum, name="test_accuracy")
    if hvd.rank() == 0:
        print(f"accuracy={float(totals[0] / totals[1]):.4f}")
