"""The TensorFlow/Keras demo: train a small Keras model with Horovod once per codec and compare.

Run under Horovod, in either Keras mode::

    horovodrun -np 2 --gloo python -m hvd_compress.tensorflow.demo --mode keras3
    horovodrun -np 2 --gloo python -m hvd_compress.tensorflow.demo --mode tfkeras \
        --runs "hvd:fp32;hvd:hvd-fp16;hvd:qsgd:bits=4;ours:onebit;tape:topk:ratio=0.01"

The MLP of ``hvd_compress.demo`` (64-256-256-10) on scikit-learn's digits, the training set sharded
across ranks, SGD 0.05 with momentum 0.9; every rank starts from different weights, which
``QuantizedBroadcastCallback(bits=8)`` makes identical. Rank 0 prints a table (frontend, codec,
bits per value on the wire, bytes sent per step, accuracy, time per step, replicas identical).

``--mode``: ``keras3`` (Keras 3, the default of TF >= 2.16) or ``tfkeras`` (sets
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported). A run is ``frontend:codec``:

* ``ours``: ``hvd_compress.tensorflow.frontends.keras.DistributedOptimizer(opt, compression=codec)`` + ``model.fit``;
* ``hvd``: Horovod's ``horovod.tensorflow.keras.DistributedOptimizer(opt, compression=codec)`` +
  ``model.fit`` (tf-keras only: Horovod's Keras integration fails on Keras 3);
* ``tape``: a ``tf.function`` GradientTape loop with ``hvd.DistributedGradientTape(tape, compression=codec)``
  (tf-keras variables; Horovod's tape needs ``var.ref()``, which Keras 3 variables lack);
* ``reducer``: a GradientTape loop with ``hvd_compress.tensorflow.GradientReducer(codec)`` (both modes).

Codec ``fp32`` is Horovod's ``Compression.none``, ``hvd-fp16`` Horovod's ``Compression.fp16``;
anything else an hvd_compress spec string (``qsgd:bits=4``, ``onebit``, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

CODECS = [
    "fp16",
    "bf16",
    "qsgd:bits=8",
    "qsgd:bits=4",
    "terngrad",
    "onebit",
    "efsign",
    "signsgd",
    "topk:ratio=0.01",
    "doublesqueeze:codec=onebit",
]
DEFAULT_RUNS = {
    "keras3": ["ours:none"] + [f"ours:{c}" for c in CODECS],
    "tfkeras": ["hvd:fp32", "hvd:hvd-fp16"] + [f"hvd:{c}" for c in CODECS],
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["keras3", "tfkeras"], default="keras3")
    ap.add_argument("--runs", help="';'-separated frontend:codec runs (default: every codec)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--json", help="write the rows as JSON here (rank 0)")
    return ap


def split_runs(text: str):
    return [r.strip() for r in text.split(";") if r.strip()]


class Demo:
    """Everything one rank needs to train the runs; Keras mode fixed at construction."""

    def __init__(self, mode: str, epochs: int = 10, batch_size: int = 32, lr: float = 0.05):
        # tf.keras resolves to tf-keras or Keras 3 when first touched, from TF_USE_LEGACY_KERAS
        os.environ["TF_USE_LEGACY_KERAS"] = "1" if mode == "tfkeras" else "0"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        import horovod.tensorflow as hvd

        legacy = tf.keras.Model.__module__.startswith("tf_keras")
        if legacy != (mode == "tfkeras"):
            raise RuntimeError(
                f"--mode {mode}: tf.keras was already resolved to "
                f"{'tf-keras' if legacy else 'Keras 3'} in this process; set "
                "TF_USE_LEGACY_KERAS before anything touches tf.keras"
            )

        from hvd_compress.data import load_digits_arrays

        self.mode, self.epochs, self.batch_size, self.lr = mode, epochs, batch_size, lr
        self.tf, self.keras, self.hvd = tf, tf.keras, hvd
        tf.config.threading.set_inter_op_parallelism_threads(2)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        hvd.init()
        self.rank, self.size = hvd.rank(), hvd.size()
        xtr, ytr, self.xte, self.yte = load_digits_arrays(0)
        self.per_rank = (len(xtr) // self.size) // batch_size * batch_size  # same steps on every rank
        self.x, self.y = xtr[self.rank :: self.size][: self.per_rank], ytr[self.rank :: self.size][: self.per_rank]

    @property
    def steps(self) -> int:
        return self.epochs * (self.per_rank // self.batch_size)

    def keras_version(self) -> str:
        import importlib

        return importlib.import_module("tf_keras" if self.mode == "tfkeras" else "keras").__version__

    def make_model(self, seed: int):
        keras = self.keras
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [
                keras.Input(shape=(64,)),
                keras.layers.Dense(256, activation="relu", name="d1"),
                keras.layers.Dense(256, activation="relu", name="d2"),
                keras.layers.Dense(10, name="out"),
            ],
            name="mlp",
        )

    def loss(self):
        return self.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def codec_of(self, name: str):
        import hvd_compress.tensorflow as hct

        if name == "fp32":
            return self.hvd.Compression.none
        if name == "hvd-fp16":
            return self.hvd.Compression.fp16
        return hct.from_spec(name)

    # ---------------------------------------------------------------- training
    def train_fit(self, frontend: str, compression):
        import hvd_compress.tensorflow.frontends.keras as hck
        from hvd_compress.tensorflow.frontends.keras.callbacks import (
            CompressionStatsCallback,
            QuantizedBroadcastCallback,
        )

        model = self.make_model(1000 + self.rank)  # different per rank: the broadcast makes them equal
        base = self.keras.optimizers.SGD(self.lr, momentum=0.9)
        if frontend == "hvd":
            import horovod.tensorflow.keras as hvd_keras

            opt = hvd_keras.DistributedOptimizer(base, compression=compression)
        else:
            opt = hck.DistributedOptimizer(base, compression=compression)
        model.compile(optimizer=opt, loss=self.loss(), metrics=["accuracy"])
        hist = model.fit(
            self.x,
            self.y,
            batch_size=self.batch_size,
            epochs=self.epochs,
            shuffle=True,
            verbose=0,
            callbacks=[QuantizedBroadcastCallback(root_rank=0, bits=8), CompressionStatsCallback()],
        )
        logs = {k: [float(v) for v in vs] for k, vs in hist.history.items() if k.startswith("hvdc_")}
        return model, logs

    def train_tape(self, frontend: str, compression, tag: str):
        import hvd_compress.tensorflow as hct

        tf, hvd = self.tf, self.hvd
        model = self.make_model(1000 + self.rank)
        hct.broadcast_variables(model.weights, root_rank=0, bits=8, name=f"demo_bcast_{tag}")
        opt = self.keras.optimizers.SGD(self.lr, momentum=0.9)
        loss_fn = self.loss()
        reducer = hct.GradientReducer(compression) if frontend == "reducer" else None
        variables = model.trainable_variables

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            if reducer is None:
                tape = hvd.DistributedGradientTape(tape, compression=compression)
                grads = tape.gradient(loss, variables)
            else:
                grads = reducer(tape.gradient(loss, variables), variables)
            opt.apply_gradients(zip(grads, variables))
            return loss

        rng = np.random.default_rng(self.rank)
        for _ in range(self.epochs):
            perm = rng.permutation(self.per_rank)
            for b in range(self.per_rank // self.batch_size):
                sl = perm[b * self.batch_size : (b + 1) * self.batch_size]
                step(tf.constant(self.x[sl]), tf.constant(self.y[sl]))
        return model, {}

    # ---------------------------------------------------------------- one run
    def accuracy(self, model) -> float:
        logits = np.asarray(model(self.xte, training=False))
        return float(np.mean(np.argmax(logits, 1) == self.yte))

    def replicas_identical(self, model, tag: str) -> bool:
        tf = self.tf
        flat = tf.concat([tf.reshape(tf.convert_to_tensor(w), [-1]) for w in model.trainable_weights], 0)
        gathered = self.hvd.allgather(flat[None], name=f"demo_replicas_{tag}").numpy()
        return bool(all(np.array_equal(gathered[0], gathered[i]) for i in range(self.size)))

    def run(self, run: str, idx: int = 0) -> dict:
        import hvd_compress.tensorflow as hct

        frontend, _, codec_name = run.partition(":")
        if frontend not in ("ours", "hvd", "tape", "reducer"):
            raise ValueError(f"unknown frontend {frontend!r} in run {run!r}: ours, hvd, tape or reducer")
        compression = self.codec_of(codec_name)
        hct.reset_wire_stats()
        t0, c0 = time.perf_counter(), time.process_time()
        if frontend in ("ours", "hvd"):
            model, logs = self.train_fit(frontend, compression)
        else:
            model, logs = self.train_tape(frontend, compression, str(idx))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        stats = hct.wire_stats()
        ours = isinstance(compression, hct.Codec)
        label = compression.describe() if ours else None
        training = {k: v for k, v in stats.items() if not k.startswith("broadcast(")}
        if not ours:  # Horovod's own compressors bypass our counters: every tensor rides a ring allreduce
            values = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            nbytes = values * (4 if codec_name == "fp32" else 2)
            training = {
                codec_name: {
                    "sent_bytes": 2.0 * (self.size - 1) / self.size * nbytes * self.steps,
                    "values": values * self.steps,
                    "payload_bytes": nbytes * self.steps,
                }
            }
        codec_row = training.get(label if ours else codec_name)
        return {
            "run": run,
            "frontend": frontend,
            "codec": codec_name,
            "label": label or f"{codec_name} (horovod)",
            "accuracy": self.accuracy(model),
            "replicas_identical": self.replicas_identical(model, str(idx)),
            "steps": self.steps,
            "seconds": elapsed,
            "cpu_seconds": cpu,
            "time_per_step_s": elapsed / self.steps,
            "wire_stats": stats,
            "epoch_logs": logs,
            "bytes_per_step": sum(r["sent_bytes"] for r in training.values()) / self.steps,
            "bits_per_value": 8.0 * codec_row["payload_bytes"] / max(codec_row["values"], 1) if codec_row else None,
            "nominal_bits": compression.nominal_bits(65536) if ours else None,
            "codec_row": codec_row if ours else None,
        }


def format_table(rows) -> str:
    head = (
        f"{'frontend':<8} {'codec':<34} {'bits/value':>10} {'bytes/step':>11} {'vs fp32':>8} "
        f"{'accuracy':>9} {'ms/step':>8} {'replicas':>9}"
    )
    fp32 = next((r["bytes_per_step"] for r in rows if r["codec"] in ("fp32", "none")), None)
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r['bytes_per_step'] / fp32:8.3f}" if fp32 else f"{'':>8}"
        bits = f"{r['bits_per_value']:10.3f}" if r["bits_per_value"] is not None else f"{'':>10}"
        lines.append(
            f"{r['frontend']:<8} {r['label'][:34]:<34} {bits} {r['bytes_per_step']:>11,.0f} {ratio} "
            f"{100 * r['accuracy']:>8.2f}% {1000 * r['time_per_step_s']:>8.2f} "
            f"{'same' if r['replicas_identical'] else 'DIFFER':>9}"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parser().parse_args(argv)
    demo = Demo(args.mode, args.epochs, args.batch_size, args.lr)
    runs = split_runs(args.runs) if args.runs else DEFAULT_RUNS[args.mode]
    rows = []
    for idx, run in enumerate(runs):
        rows.append(demo.run(run, idx))
        if demo.rank == 0:
            r = rows[-1]
            print(f"[{idx + 1}/{len(runs)}] {run}: accuracy {100 * r['accuracy']:.2f}%", flush=True)
    if demo.rank == 0:
        print(
            f"\nhvd_compress TensorFlow demo ({args.mode}, Keras {demo.keras_version()}): MLP 64-256-256-10 on "
            f"digits, {demo.size} workers, {args.epochs} epochs, batch {args.batch_size}/worker"
        )
        print(format_table(rows))
        print(
            "bits/value: payload bits per compressed value (scales included); bytes/step: bytes this worker "
            "sent per step, all tensors (ring-allreduce model for Horovod's own fp32/fp16)"
        )
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)) or ".", exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(
                    {"world_size": demo.size, "mode": args.mode, "epochs": args.epochs, "rows": rows},
                    f,
                    indent=1,
                    default=str,
                )
    demo.hvd.shutdown()


if __name__ == "__main__":
    main()
