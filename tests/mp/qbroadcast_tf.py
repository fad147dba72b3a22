"""Worker script: hvd_compress.tensorflow.frontends.broadcast.broadcast_variables under horovodrun.

Rank-dependent starting values (Keras model + plain tf.Variables of several dtypes); records
digests, deviations against the root's exact values, and the errors the bad-input cases raise.
"""

import hashlib

from common import parse_args, write_result

import numpy as np
import tensorflow as tf

import horovod.tensorflow as hvd
from hvd_compress.tensorflow.frontends.broadcast import BroadcastState, broadcast_variables


def digest(variables):
    h = hashlib.sha256()
    for v in variables:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


def root_values(variables, tag):
    out = []
    for i, v in enumerate(variables):
        t = tf.constant(v.numpy())
        if t.dtype == tf.bool:
            out.append(hvd.broadcast(tf.cast(t, tf.uint8), 0, name=f"{tag}.{i}").numpy().astype(bool))
        else:
            out.append(hvd.broadcast(t, 0, name=f"{tag}.{i}").numpy())
    return out


def max_excess(before, after, bits, bucket_size, reference=None):
    s = 2 ** (bits - 1) - 1
    worst = -1.0
    for k, (b, a) in enumerate(zip(before, after)):
        if not np.issubdtype(b.dtype, np.floating):
            continue
        b = b.astype(np.float64).reshape(-1)
        v = b - (reference[k].astype(np.float64).reshape(-1) if reference is not None else 0)
        pad = (-v.size) % bucket_size
        vb = np.concatenate([v, np.zeros(pad)]).reshape(-1, bucket_size)
        step = np.repeat(np.abs(vb).max(axis=1) / s, bucket_size)[: v.size]
        err = np.abs(a.astype(np.float64).reshape(-1) - b)
        worst = max(worst, float((err - step * (1 + 1e-5) - 1e-6 * np.abs(b)).max()))
    return worst


def main():
    args = parse_args()
    hvd.init()
    rank = hvd.rank()
    out = {"rank": rank}
    tf.random.set_seed(10 + rank)
    model = tf.keras.Sequential(
        [tf.keras.Input((64,)), tf.keras.layers.Dense(256, activation="relu"), tf.keras.layers.Dense(10)]
    )
    extra = [
        tf.Variable(np.full((7,), 3 + rank, np.int64)),
        tf.Variable(np.arange(5) % (2 + rank) == 0),
        tf.Variable(tf.random.normal((1000,), dtype=tf.float16)),
    ]
    variables = list(model.variables) + extra
    ref = root_values(variables, "ref")
    stats = broadcast_variables(variables, root_rank=0, bits=8)
    after = [np.asarray(v.numpy()) for v in variables]
    out["full"] = {
        "digest": digest(variables),
        "stats": stats,
        "excess": max_excess(ref[: len(model.variables)], after, 8, 512),
        "int_exact": bool(np.array_equal(after[-3], ref[-3])),
        "bool_exact": bool(np.array_equal(after[-2], ref[-2])),
        "dtypes": [str(a.dtype) for a in after[-3:]],
    }

    sync = BroadcastState()
    broadcast_variables(model.variables, bits=8, state=sync)
    for v in model.variables:  # rank-dependent drift, then a delta re-sync at 4 bits
        v.assign_add(tf.random.normal(v.shape) * 1e-3)
    last = [sync.synced[i].copy() for i in range(len(model.variables))]
    ref2 = root_values(model.variables, "ref2")
    s2 = broadcast_variables(model.variables, bits=4, delta=True, state=sync)
    after2 = [np.asarray(v.numpy()) for v in model.variables]
    out["delta"] = {
        "digest": digest(model.variables),
        "stats": s2,
        "excess": max_excess(ref2, after2, 4, 512, reference=last),
        "max_err": max(float(np.abs(a - b).max()) for a, b in zip(after2, ref2)),
    }

    errors = {}
    try:
        broadcast_variables([tf.Variable(tf.zeros((3 + rank,)))])
    except ValueError as e:
        errors["shape"] = str(e)
    try:
        broadcast_variables([tf.Variable(tf.fill((4,), np.nan if rank == 0 else 0.0))])
    except FloatingPointError as e:
        errors["nan"] = str(e)
    out["errors"] = errors
    write_result(args.out, rank, out)


if __name__ == "__main__":
    main()
