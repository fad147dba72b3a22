"""Spec: TensorFlow fused compressed buckets (``GradientReducer(bucket_bytes=...)``) change how
many collectives a step takes, never what it computes. In-process, over the simulated ranks of
``tests/local_comm.py`` (eager; 2 ranks: allgather, 3 ranks: reduce-scatter too): for each codec,
averages, error-feedback and server residuals and RNG step counters after a few steps are
bit-identical to ``bucket_bytes=0`` (one exchange per tensor), the wire statistics are the same,
and the fused run issues one collective per bucket and round. Ranks whose buckets differ fail with
the same ``ValueError``. The real-Horovod version (eager and ``tf.function``, Keras optimizer
included) is ``tests/test_tf_fusion_mp.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_comm import run_workers_tf  # noqa: E402

import hvd_compress.tensorflow as hct  # noqa: E402
from hvd_compress.tensorflow.stats import WireStats  # noqa: E402

SPECS = ["onebit", "qsgd:bits=4", "efsign", "topk:ratio=0.05", "terngrad", "doublesqueeze:codec=onebit"]
# weights of several sizes (some too small to compress, biases fused as fp32), 11 compressed
SHAPES = [(64, 48), (48,), (48, 40), (40,), (96, 32), (32,), (33, 7), (7,), (128, 64), (5, 5, 3, 8), (8,)]
SHAPES += [(24, 24), (100, 10), (10,), (3, 3, 8, 16)]
STEPS = 3


class Counting:
    """A collectives backend that counts what the exchange hands it (agreement checks apart)."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.rank, comm.size
        self.counts = {"allreduce": 0, "allgather": 0, "alltoall": 0}

    def _count(self, kind, name):
        if "_check" not in name:
            self.counts[kind] += 1

    def allreduce(self, tensor, name, op="average"):
        self._count("allreduce", name)
        return self.comm.allreduce(tensor, name, op=op)

    def allgather(self, tensor, name):
        self._count("allgather", name)
        return self.comm.allgather(tensor, name)

    def alltoall(self, tensor, splits, name):
        self._count("alltoall", name)
        return self.comm.alltoall(tensor, splits, name)

    def broadcast(self, tensor, root_rank, name):
        return self.comm.broadcast(tensor, root_rank, name)


def _train(spec, bucket_bytes):
    def work(comm):
        counting = Counting(comm)
        reducer = hct.GradientReducer(spec, comm=counting, bucket_bytes=bucket_bytes)
        stats = WireStats()
        exchange = reducer.exchange
        exchange.stats = stats
        variables = [tf.Variable(tf.zeros(s), name=f"layer{i}/w") for i, s in enumerate(SHAPES)]
        reducer.build(variables)
        rng = np.random.default_rng(100 + comm.rank)
        outs, per_step = [], []
        for _ in range(STEPS):
            grads = [tf.constant(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]
            before = sum(counting.counts.values())
            outs.append([g.numpy() for g in reducer(grads, variables)])
            per_step.append(sum(counting.counts.values()) - before)
        state = {
            f"{group}/{key}": var.numpy() for group, table in reducer.codec.state.items() for key, var in table.items()
        }
        return {"outs": outs, "state": state, "per_step": per_step, "wire": stats.raw()}

    return work


@pytest.mark.timeout(600)
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("spec", SPECS)
def test_fused_buckets_are_bit_identical_to_per_tensor(spec, world):
    unfused = run_workers_tf(world, _train(spec, 0), timeout=300)
    fused = run_workers_tf(world, _train(spec, 64 << 20), timeout=300)
    small = run_workers_tf(world, _train(spec, 20_000), timeout=300)  # several buckets
    for rank in range(world):
        u = unfused[rank]
        for f in (fused[rank], small[rank]):
            for step in range(STEPS):
                for a, b in zip(u["outs"][step], f["outs"][step]):
                    assert a.dtype == b.dtype and a.shape == b.shape
                    assert np.array_equal(a, b, equal_nan=True), (spec, world, rank, step)
            assert sorted(u["state"]) == sorted(f["state"]) and u["state"]
            for k, v in u["state"].items():
                assert np.array_equal(v, f["state"][k]), (spec, k)
            assert u["wire"] == f["wire"]
        # fewer collectives: one per bucket and round instead of one per tensor and round
        assert fused[rank]["per_step"][-1] < small[rank]["per_step"][-1] < u["per_step"][-1], (
            u["per_step"],
            small[rank]["per_step"],
            fused[rank]["per_step"],
        )
        assert fused[rank]["per_step"][-1] <= 5  # scale + ag + a2a + ag, + the fp32 allreduce
    for rank in range(1, world):  # every rank holds the same average
        for a, b in zip(fused[0]["outs"][-1], fused[rank]["outs"][-1]):
            assert np.array_equal(a, b)


def test_different_buckets_on_different_ranks_are_a_clear_error():
    def work(comm):
        reducer = hct.GradientReducer("onebit", comm=comm, bucket_bytes=64 << 20)
        shape = (64, 48) if comm.rank == 0 else (64, 40)
        v = tf.Variable(tf.zeros(shape), name="w")
        try:
            reducer([tf.ones(shape)], [v])
        except ValueError as exc:
            return str(exc)
        return None

    messages = run_workers_tf(2, work, timeout=60)
    assert all(m and "ranks form different fused buckets" in m for m in messages), messages


def test_bucket_bytes_knob(monkeypatch):
    monkeypatch.setenv("HVD_COMPRESS_BUCKET_BYTES", "1234")
    assert hct.GradientReducer("onebit", comm=object()).bucket_bytes == 1234
    monkeypatch.delenv("HVD_COMPRESS_BUCKET_BYTES")
    assert hct.GradientReducer("onebit", comm=object()).bucket_bytes == 64 << 20
    assert hct.GradientReducer("onebit", comm=object(), bucket_bytes=0).bucket_bytes == 0
    with pytest.raises(ValueError, match="bucket_bytes"):
        hct.GradientReducer("onebit", comm=object(), bucket_bytes=-1)
