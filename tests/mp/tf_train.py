"""Worker: train the digits MLP with Keras under horovodrun, once per (frontend, codec) run.

One launch trains every run in one process per rank (TF imports once), like hvd_compress.demo.

    horovodrun -np 2 --gloo python tests/mp/tf_train.py --out DIR --mode tfkeras \
        --runs "hvd:fp32;hvd:qsgd:bits=4;ours:onebit;tape:topk" [--checks]

Modes: ``tfkeras`` sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported (tf.keras is tf-keras);
``keras3`` leaves Keras 3. Frontends: ``hvd`` (Horovod's keras DistributedOptimizer with
compression=codec; tf-keras only), ``ours`` (hvd_compress.tensorflow.keras.DistributedOptimizer),
``tape`` (a tf.function GradientTape loop with hvd.DistributedGradientTape(compression=codec)),
``reducer`` (a GradientTape loop with hvd_compress.tensorflow.GradientReducer). Codec ``fp32`` is
Horovod's Compression.none, ``hvd-fp16`` Horovod's Compression.fp16, anything else a spec string.
``--checks`` adds the bad-input and checkpoint checks. Writes DIR/rank{R}.json.
"""
import argparse
import os
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--mode", choices=["tfkeras", "keras3"], required=True)
ap.add_argument("--runs", required=True)
ap.add_argument("--epochs", type=int, default=10)
ap.add_argument("--batch-size", type=int, default=32)
ap.add_argument("--lr", type=float, default=0.05)
ap.add_argument("--checks", action="store_true")
args = ap.parse_args()
if args.mode == "tfkeras":
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(2)
tf.config.threading.set_intra_op_parallelism_threads(1)

import horovod.tensorflow as hvd  # noqa: E402

import hvd_compress.tensorflow as hct  # noqa: E402
import hvd_compress.tensorflow.keras as hck  # noqa: E402
from hvd_compress.data import load_digits_arrays  # noqa: E402
from hvd_compress.tensorflow.keras.callbacks import CompressionStatsCallback, QuantizedBroadcastCallback  # noqa: E402
from common import write_result  # noqa: E402

keras = tf.keras
hvd.init()
RANK, SIZE = hvd.rank(), hvd.size()
XTR, YTR, XTE, YTE = load_digits_arrays(0)
PER = (len(XTR) // SIZE) // args.batch_size * args.batch_size  # same steps on every rank
XS, YS = XTR[RANK::SIZE][:PER], YTR[RANK::SIZE][:PER]


def keras_version():
    import importlib
    return importlib.import_module("tf_keras" if args.mode == "tfkeras" else "keras").__version__


def make_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(256, activation="relu", name="d1"),
                             keras.layers.Dense(256, activation="relu", name="d2"),
                             keras.layers.Dense(10, name="out")], name="mlp")


def codec_of(name):
    if name == "fp32":
        return hvd.Compression.none
    if name == "hvd-fp16":
        return hvd.Compression.fp16
    return hct.from_spec(name)


def replicas_identical(model, tag):
    flat = tf.concat([tf.reshape(tf.convert_to_tensor(w), [-1]) for w in model.trainable_weights], 0)
    gathered = hvd.allgather(flat[None], name=f"check_replicas_{tag}").numpy()
    return bool(all(np.array_equal(gathered[0], gathered[i]) for i in range(SIZE)))


def accuracy(model):
    logits = model(XTE, training=False)
    return float(np.mean(np.argmax(np.asarray(logits), 1) == YTE))


def train_fit(frontend, codec_name, idx):
    model = make_model(1000 + RANK)  # different weights per rank: the quantized broadcast must fix it
    base = keras.optimizers.SGD(args.lr, momentum=0.9)
    compression = codec_of(codec_name)
    if frontend == "hvd":
        import horovod.tensorflow.keras as hvd_keras
        opt = hvd_keras.DistributedOptimizer(base, compression=compression)
    else:
        opt = hck.DistributedOptimizer(base, compression=compression)
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    stats_cb = CompressionStatsCallback()
    hist = model.fit(XS, YS, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0,
                     callbacks=[QuantizedBroadcastCallback(root_rank=0, bits=8), stats_cb])
    logs = {k: [float(x) for x in v] for k, v in hist.history.items() if k.startswith("hvdc_")}
    return model, opt, compression, logs


def train_tape(frontend, codec_name, idx):
    model = make_model(1000 + RANK)
    model(XS[:1])
    hct.broadcast_variables(model.weights, root_rank=0, bits=8, name=f"tape_bcast{idx}")
    opt = keras.optimizers.SGD(args.lr, momentum=0.9)
    compression = codec_of(codec_name)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    reducer = hct.GradientReducer(compression) if frontend == "reducer" else None

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        if reducer is None:
            tape = hvd.DistributedGradientTape(tape, compression=compression)
            grads = tape.gradient(loss, model.trainable_variables)
        else:
            grads = reducer(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    rng = np.random.default_rng(RANK)
    for _ in range(args.epochs):
        perm = rng.permutation(PER)
        for b in range(PER // args.batch_size):
            sl = perm[b * args.batch_size:(b + 1) * args.batch_size]
            step(tf.constant(XS[sl]), tf.constant(YS[sl]))
    return model, opt, compression, {}


def run_one(frontend, codec_name, idx):
    hct.reset_wire_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    if frontend in ("hvd", "ours"):
        model, opt, compression, logs = train_fit(frontend, codec_name, idx)
    else:
        model, opt, compression, logs = train_tape(frontend, codec_name, idx)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = args.epochs * (PER // args.batch_size)
    stats = hct.wire_stats()
    label = compression.describe() if isinstance(compression, hct.Codec) else None
    training = {k: v for k, v in stats.items() if not k.startswith("broadcast(")}
    if label is None:  # Horovod's own compressors bypass our counters: every tensor rides a ring allreduce
        values = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        nbytes = values * (4 if codec_name == "fp32" else 2)
        training = {codec_name: {"sent_bytes": 2.0 * (SIZE - 1) / SIZE * nbytes * steps}}
    row = {"frontend": frontend, "codec": codec_name, "label": label, "accuracy": accuracy(model),
           "replicas_identical": replicas_identical(model, idx), "steps": steps, "seconds": elapsed, "cpu_seconds": cpu,
           "wire_stats": stats, "epoch_logs": logs,
           "bytes_per_step": sum(r["sent_bytes"] for r in training.values()) / steps,
           "nominal_bits": compression.nominal_bits(65536) if label else None,
           "codec_row": training.get(label) if label else None,
           }
    return row, model, opt, compression


def checks():
    """Bad input and checkpoint checks (every rank runs them; all must agree)."""
    out = {}
    v = tf.Variable(tf.zeros([64, 32]), name="bad/kernel")

    # NaN on one rank only: every rank fails with the tensor's name, then the job goes on.
    for policy in ("raise", "propagate"):
        reducer = hct.GradientReducer(hct.QSGD(bits=4, nonfinite=policy))
        g = np.ones([64, 32], np.float32)
        if RANK == 1:
            g[3, 5] = np.nan
        fn = tf.function(lambda t: reducer([t], [v])[0])
        try:
            res = fn(tf.constant(g)).numpy()
            out[f"nan_{policy}"] = {"raised": False, "all_nan_bucket": bool(np.isnan(res[0:16]).all()),
                                    "finite_elsewhere": bool(np.isfinite(res[16:]).all())}
        except tf.errors.InvalidArgumentError as exc:
            out[f"nan_{policy}"] = {"raised": True, "message": str(exc).splitlines()[0][:400]}
        # the job must still be healthy afterwards
        out[f"after_nan_{policy}"] = float(hvd.allreduce(tf.constant(1.0), name=f"alive_{policy}"))

    # zero and empty tensors exact; fp16 / bf16 / fp64 gradients through a compressed exchange
    vz = tf.Variable(tf.zeros([128, 16]), name="z/kernel")
    reducer = hct.GradientReducer("onebit")
    out["zero_exact"] = bool(np.all(reducer([tf.zeros([128, 16])], [vz])[0].numpy() == 0))
    ve = tf.Variable(tf.zeros([0, 16]), name="e/kernel")
    out["empty_shape"] = list(reducer([tf.zeros([0, 16])], [ve])[0].shape)
    for dt in (tf.float16, tf.bfloat16, tf.float64):
        vd = tf.Variable(tf.zeros([64, 64], dt), name=f"dt_{dt.name}/kernel")
        g = tf.cast(tf.fill([64, 64], 0.5 + RANK), dt)
        r = hct.GradientReducer("qsgd:bits=8")([g], [vd])[0]
        out[f"dtype_{dt.name}"] = {"dtype": r.dtype.name, "mean": float(tf.reduce_mean(tf.cast(r, tf.float64)))}

    # different settings on different ranks: a clear error on every rank at the first step
    spec = "qsgd:bits=4" if RANK == 0 else "qsgd:bits=8"
    try:
        hct.GradientReducer(spec)([tf.ones([64, 32])], [v])
        out["mismatch"] = {"raised": False}
    except ValueError as exc:
        out["mismatch"] = {"raised": True, "message": str(exc)[:400]}

    # checkpoint: residuals named after their variables, saved and restored by tf.train.Checkpoint
    model = make_model(7)
    opt = hck.DistributedOptimizer(keras.optimizers.SGD(0.05), compression="onebit")
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(XS[:64], YS[:64], batch_size=32, epochs=1, verbose=0)
    codec = opt.compression
    residuals = {k: v.numpy() for k, v in codec.state["residual"].items()}
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(os.path.join(args.out, f"ckpt_r{RANK}", "c"))
    names = [n for n, _ in tf.train.list_variables(path)]
    model2 = make_model(7)
    opt2 = hck.DistributedOptimizer(keras.optimizers.SGD(0.05), compression="onebit")
    model2.compile(optimizer=opt2, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    opt2.build(model2.trainable_variables)
    tf.train.Checkpoint(model=model2, optimizer=opt2).restore(path).assert_existing_objects_matched()
    restored = {k: v.numpy() for k, v in opt2.compression.state["residual"].items()}
    out["checkpoint"] = {
        "residual_keys": sorted(residuals),
        "residual_variable_names": sorted(v.name for v in codec.state["residual"].values()),
        "checkpoint_residual_entries": sorted(n for n in names if "residual" in n),
        "nonzero": bool(any(np.abs(r).sum() > 0 for r in residuals.values())),
        "restored_equal": sorted(residuals) == sorted(restored)
        and all(np.array_equal(residuals[k], restored[k]) for k in residuals)}
    return out


def main():
    result = {"rank": RANK, "size": SIZE, "mode": args.mode, "keras_version": keras_version(),
              "per_rank_samples": PER, "rows": []}
    for idx, item in enumerate(filter(None, (s.strip() for s in args.runs.split(";")))):
        frontend, _, codec_name = item.partition(":")
        row, *_ = run_one(frontend, codec_name, idx)
        result["rows"].append(row)
        if RANK == 0:
            print(f"{args.mode:8s} {frontend:7s} {codec_name:30s} acc={row['accuracy']:.4f} "
                  f"identical={row['replicas_identical']} bytes/step={row['bytes_per_step']:.0f} "
                  f"{row['seconds']:.1f}s cpu {row['cpu_seconds']:.1f}s", flush=True)
    if args.checks:
        result["checks"] = checks()
    write_result(args.out, RANK, result)
    hvd.shutdown()


if __name__ == "__main__":
    main()
