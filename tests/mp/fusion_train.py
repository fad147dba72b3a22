"""Worker for test_fusion_mp.py (run under horovodrun): trains a 100-tensor model a few steps with
one codec, through hc.DistributedOptimizer or the stock hvd.DistributedOptimizer, fused and unfused
(bucket_bytes 0), from the same start, and writes each run's final parameters' digest, collective
counts per step and wire bytes."""

import argparse
import hashlib
import json
import os
from pathlib import Path

import torch

import horovod.torch as hvd
import hvd_compress.torch as hc
from hvd_compress.torch.fusion import collective_stats, reset_collective_stats

LAYERS = 50  # 100 parameter tensors (weight + bias)


def model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        *[torch.nn.Sequential(torch.nn.Linear(48, 48), torch.nn.Tanh()) for _ in range(LAYERS)], torch.nn.Linear(48, 4)
    )


def digest(m) -> str:
    h = hashlib.sha256()
    for name, p in sorted(m.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().numpy().tobytes())
    return h.hexdigest()


def train(spec, frontend, bucket_bytes, steps, rank):
    m = model()
    hvd.broadcast_parameters(m.state_dict(), root_rank=0)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    if frontend == "hc":
        dopt = hc.DistributedOptimizer(
            opt, named_parameters=m.named_parameters(), compression=spec, bucket_bytes=bucket_bytes
        )
    else:
        os.environ["HVD_COMPRESS_BUCKET_BYTES"] = str(bucket_bytes)  # read when the engine is built
        dopt = hvd.DistributedOptimizer(opt, named_parameters=m.named_parameters(), compression=hc.from_spec(spec))
    g = torch.Generator().manual_seed(100 + rank)
    x, y = torch.randn(32, 48, generator=g), torch.randint(0, 4, (32,), generator=g)
    per_step = []
    hc.reset_wire_stats()
    for step in range(steps):
        before = collective_stats()
        dopt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        dopt.step()
        after = collective_stats()
        per_step.append(
            {k: after[k] - before[k] for k in ("collectives", "requested", "allgather", "alltoall", "allreduce")}
        )
    stats = hc.wire_stats()
    return {
        "digest": digest(m),
        "per_step": per_step,
        "payload_bytes": sum(r["payload_bytes"] for r in stats.values()),
        "values": sum(r["values"] for r in stats.values()),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--specs", required=True)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    hvd.init()
    torch.set_num_threads(1)
    reset_collective_stats()
    results = {}
    for spec in args.specs.split(";"):
        for frontend in ("hc", "stock"):
            for bucket in (0, 64 << 20):
                results[f"{spec}|{frontend}|{bucket}"] = train(spec, frontend, bucket, args.steps, hvd.rank())
    Path(args.out, f"rank{hvd.rank()}.json").write_text(json.dumps(results))
    hvd.shutdown()


if __name__ == "__main__":
    main()
