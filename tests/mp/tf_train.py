"""Worker: the TensorFlow demo's runs (hvd_compress.tensorflow.demo) plus bad-input and checkpoint checks.

One launch trains every run in one process per rank (TF imports once), like hvd_compress.demo::

    horovodrun -np 2 --gloo python tests/mp/tf_train.py --out DIR --mode tfkeras \
        --runs "hvd:fp32;hvd:qsgd:bits=4;ours:onebit;tape:topk:ratio=0.01" [--checks]

Writes DIR/rank{R}.json: {"rows": [demo rows], "checks": {...}}.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

from hvd_compress.tensorflow.demo import Demo, parser, split_runs  # no TF import yet

ap = parser()
ap.add_argument("--out", required=True)
ap.add_argument("--checks", action="store_true")
args = ap.parse_args()
demo = Demo(args.mode, args.epochs, args.batch_size, args.lr)  # sets TF_USE_LEGACY_KERAS, imports TF

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hvd_compress.tensorflow as hct  # noqa: E402
import hvd_compress.tensorflow.frontends.keras as hck  # noqa: E402

keras, hvd, RANK = demo.keras, demo.hvd, demo.rank


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
            res = fn(tf.constant(g)).numpy().reshape(-1)
            out[f"nan_{policy}"] = {
                "raised": False,
                "all_nan_bucket": bool(np.isnan(res[:512]).all()),
                "finite_elsewhere": bool(np.isfinite(res[512:]).all()),
            }
        except tf.errors.InvalidArgumentError as exc:
            out[f"nan_{policy}"] = {"raised": True, "message": str(exc).splitlines()[0][:400]}
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

    # quantized broadcast: every rank (root included) ends identical, within the 8-bit bound of
    # the root's values; integers exact; about 8/32 of the fp32 bytes
    model = demo.make_model(50 + RANK)
    counter = tf.Variable(tf.constant([7 + RANK], tf.int64), name="counter")
    before = [np.array(w) for w in model.weights]
    root_before = [
        hvd.broadcast(tf.convert_to_tensor(w), 0, name=f"root_copy_{i}").numpy() for i, w in enumerate(model.weights)
    ]
    hct.reset_wire_stats()
    hct.broadcast_variables(list(model.weights) + [counter], root_rank=0, bits=8, name="check_bcast")
    after = [np.array(w) for w in model.weights]
    flat = np.concatenate([a.reshape(-1) for a in after])
    gathered = hvd.allgather(tf.constant(flat[None]), name="check_bcast_same").numpy()
    bound_ok = True
    for a, r in zip(after, root_before):  # per value: at most one level, max-abs(bucket) / 127
        a, r = a.reshape(-1), r.reshape(-1)
        pad = (-r.size) % 512
        scale = np.abs(np.concatenate([r, np.zeros(pad, r.dtype)])).reshape(-1, 512).max(1)
        bound_ok &= bool(np.all(np.abs(a - r) <= np.repeat(scale / 127, 512)[: r.size] * (1 + 1e-6)))
    stats = hct.wire_stats()
    values = sum(int(np.prod(w.shape)) for w in model.weights)
    out["broadcast"] = {
        "identical": bool(all(np.array_equal(gathered[0], g) for g in gathered)),
        "changed_here": bool(any(not np.array_equal(b, a) for b, a in zip(before, after))),
        "within_bound": bound_ok,
        "counter": int(counter.numpy()[0]),
        "payload_bits_per_value": sum(r["payload_bytes"] for r in stats.values()) * 8.0 / values,
    }

    # checkpoint: residuals named after their variables, saved and restored by tf.train.Checkpoint
    model = demo.make_model(7)
    opt = hck.DistributedOptimizer(keras.optimizers.SGD(0.05), compression="onebit")
    model.compile(optimizer=opt, loss=demo.loss())
    model.fit(demo.x[:64], demo.y[:64], batch_size=32, epochs=1, verbose=0)
    codec = opt.compression
    residuals = {k: r.numpy() for k, r in codec.state["residual"].items()}
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(os.path.join(args.out, f"ckpt_r{RANK}", "c"))
    names = [n for n, _ in tf.train.list_variables(path)]
    model2 = demo.make_model(7)
    opt2 = hck.DistributedOptimizer(keras.optimizers.SGD(0.05), compression="onebit")
    model2.compile(optimizer=opt2, loss=demo.loss())
    opt2.build(model2.trainable_variables)  # residuals exist before the first step: restore into them
    tf.train.Checkpoint(model=model2, optimizer=opt2).restore(path).assert_existing_objects_matched()
    restored = {k: r.numpy() for k, r in opt2.compression.state["residual"].items()}
    out["checkpoint"] = {
        "residual_keys": sorted(residuals),
        "residual_variable_names": sorted(r.name for r in codec.state["residual"].values()),
        "checkpoint_residual_entries": sorted(n for n in names if "residual" in n),
        "nonzero": bool(any(np.abs(r).sum() > 0 for r in residuals.values())),
        "restored_equal": sorted(residuals) == sorted(restored)
        and all(np.array_equal(residuals[k], restored[k]) for k in residuals),
    }
    return out


def main():
    result = {
        "rank": RANK,
        "size": demo.size,
        "mode": args.mode,
        "keras_version": demo.keras_version(),
        "per_rank_samples": demo.per_rank,
        "rows": [],
    }
    for idx, run in enumerate(split_runs(args.runs or "")):
        row = demo.run(run, idx)
        result["rows"].append(row)
        if RANK == 0:
            print(
                f"{args.mode:8s} {run:36s} acc={row['accuracy']:.4f} identical={row['replicas_identical']} "
                f"bytes/step={row['bytes_per_step']:.0f} {row['seconds']:.1f}s cpu {row['cpu_seconds']:.1f}s",
                flush=True,
            )
    if args.checks:
        result["checks"] = checks()
    write_result(args.out, RANK, result)
    hvd.shutdown()


if __name__ == "__main__":
    main()
