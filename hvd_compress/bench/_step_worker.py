"""Worker of ``python -m hvd_compress.bench step`` (run under ``horovodrun``; not a command itself).

Every rank trains the same model on synthetic data, once per codec, through the stock
``hvd.DistributedOptimizer(compression=...)``: a few warm-up steps, a barrier, then timed steps.
Rank 0 reads the interface's byte counter (``/sys/class/net/<iface>/statistics/tx_bytes``) before
and after the timed steps and writes one JSON row per codec to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

MODELS = ("mlp", "deepmlp", "cnn", "resnet")
UNFUSED = "@unfused"  # spec suffix: the same codec exchanged tensor by tensor (HVD_COMPRESS_BUCKET_BYTES=0)
HC = "@hc"  # spec suffix: through hc.DistributedOptimizer (buckets started from gradient hooks)
BASELINES = ["none", "hvd-fp16"]  # Horovod's own fp32 and fp16 paths, not hvd_compress codecs


def make_model(name: str, seed: int = 0, width: int = 0):
    """``mlp``: 1024-4096-4096-1024-10, about 25.2M parameters (three large dense layers: the
    communication-bound case). ``cnn``: a small conv net on 3x32x32 inputs (about 2.2M parameters,
    most in its first dense layer). ``deepmlp``: 50 dense layers, 1024-372x49-10, 100 parameter
    tensors and about 7.0M parameters (issue #13's many-layer model: per-tensor latency and fusion
    matter, compute is small). Returns (model, input shape without batch, classes)."""
    import torch

    torch.manual_seed(seed)
    nn = torch.nn
    if name == "mlp":
        w = width or 4096
        model = nn.Sequential(
            nn.Linear(1024, w),
            nn.ReLU(),
            nn.Linear(w, w),
            nn.ReLU(),
            nn.Linear(w, 1024),
            nn.ReLU(),
            nn.Linear(1024, 10),
        )
        return model, (1024,), 10
    if name == "deepmlp":
        w = width or 372
        layers = [nn.Linear(1024, w), nn.ReLU()]
        for _ in range(48):
            layers += [nn.Linear(w, w), nn.ReLU()]
        layers.append(nn.Linear(w, 10))
        return nn.Sequential(*layers), (1024,), 10
    if name == "cnn":
        c = width or 64
        model = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 4 * c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * c * 16, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )
        return model, (3, 32, 32), 10
    if name == "resnet":
        return resnet50(width or 64), (3, 32, 32), 10
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def resnet50(width: int = 64):
    """A ResNet-50-shaped stack: bottleneck blocks [3, 4, 6, 3], expansion 4, batch norm, 161
    parameter tensors (53 convolutions, 53 batch norms, the classifier), 23.5M parameters at
    ``width=64``, for 3x32x32 inputs (a stride-2 3x3 stem instead of ImageNet's 7x7 and max-pool,
    so the compute stays within what a CPU core does in a benchmark step)."""
    import torch

    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            cout = 4 * mid
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
                nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
                nn.Conv2d(mid, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            skip = x if self.down is None else self.down(x)
            return torch.relu(self.body(x) + skip)

    layers = [nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    cin = width
    for i, blocks in enumerate([3, 4, 6, 3]):
        mid = width * 2**i
        for b in range(blocks):
            layers.append(Bottleneck(cin, mid, 2 if (b == 0 and i > 0) else 1))
            cin = 4 * mid
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)


def split_spec(spec: str):
    """``(codec spec, fused, frontend)`` of a row's spec: the suffixes :data:`UNFUSED` and
    :data:`HC` (in any order) pick tensor-by-tensor exchange and ``hc.DistributedOptimizer``; the
    default is the stock ``hvd.DistributedOptimizer(compression=...)``, fused."""
    fused, frontend = True, "stock"
    while True:
        if spec.endswith(UNFUSED):
            spec, fused = spec[: -len(UNFUSED)], False
        elif spec.endswith(HC):
            spec, frontend = spec[: -len(HC)], "hc"
        else:
            return spec, fused, frontend


def count_params(name: str, width: int = 0) -> int:
    model, _, _ = make_model(name, 0, width)
    return sum(p.numel() for p in model.parameters())


class CodecTimer:
    """Wall time spent inside a codec's entry points (encode, decode, aggregate, ...), counted
    once per outermost call, so a codec calling its own ``encode`` is not counted twice."""

    METHODS = (
        "local_scale",
        "worker_encode",
        "server_encode",
        "aggregate",
        "decode",
        "encode",
        "to_summable",
        "from_summable",
    )

    def __init__(self, codec):
        self.total = 0.0
        self.depth = 0
        for name in self.METHODS:
            fn = getattr(codec, name, None)
            if fn is not None:
                setattr(codec, name, self._wrap(fn))

    def _wrap(self, fn):
        def timed(*args, **kwargs):
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.total += time.perf_counter() - t0

        return timed


def read_tx(iface: str) -> int:
    return int(Path(f"/sys/class/net/{iface}/statistics/tx_bytes").read_text())


def inter_host_bytes(hvd, torch, args, my_delta: int, spec: str) -> float:
    """Bytes per step that crossed hosts: each host's first rank contributes its eth0 tx delta."""
    mine = float(my_delta) if hvd.local_rank() == 0 else 0.0
    total = hvd.allreduce(torch.tensor([mine], dtype=torch.float64), op=hvd.Sum, name=f"bench.inter.{spec}")
    return float(total) / args.steps


def nominal_inter_host(compression, model, size: int, local_size: int, stats: dict, steps: int):
    """What the exchange patterns predict (``bench.cluster.inter_host_factor``); ``None`` for codecs
    with their own exchange or mixed patterns."""
    from hvd_compress.bench.cluster import inter_host_factor

    hosts = size // local_size
    params = [p for p in model.parameters()]
    if not hasattr(compression, "pattern"):  # Horovod's none/fp16: one ring allreduce
        width = 4 if compression.__name__.endswith("NoneCompressor") else 2
        return inter_host_factor("allreduce", hosts, local_size) * width * sum(p.numel() for p in params)
    patterns = {compression.pattern(size, p.numel()) for p in params if p.dim() >= 2}
    from hvd_compress.torch.codecs.base import Codec

    if len(patterns) != 1 or type(compression).custom_exchange is not Codec.custom_exchange:
        return None
    if getattr(compression, "hierarchical", False) is True:
        # each local position's shard crosses among the hosts' ranks at that position (one per
        # host); the intra-host legs stay inside; uncompressed tensors take the flat fp32 ring
        from hvd_compress.torch.hierarchical import INTRA_HOST

        shard_patterns = {compression.pattern(hosts, p.numel() // local_size) for p in params if p.dim() >= 2}
        if len(shard_patterns) != 1:
            return None
        (pattern,) = shard_patterns
        factors = {"uncompressed": inter_host_factor("allreduce", hosts, local_size), INTRA_HOST: 0.0}
        return sum(
            factors.get(d, local_size * inter_host_factor(pattern, hosts, 1)) * r["payload_bytes"] / steps
            for d, r in stats.items()
        )
    (pattern,) = patterns
    return sum(
        inter_host_factor("allreduce" if d == "uncompressed" else pattern, hosts, local_size)
        * r["payload_bytes"]
        / steps
        for d, r in stats.items()
    )


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="mlp", choices=MODELS)
    ap.add_argument("--width", type=int, default=0)
    ap.add_argument("--codecs", required=True, help="';'-separated: none, hvd-fp16 or hvd_compress specs")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iface", default="lo")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bucket-mb", type=float, default=0.0, help="fused rows' bucket size (0: the default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--per-host-counter",
        action="store_true",
        help="emulated cluster: sum the first rank of each host's --iface counter (inter-host bytes)",
    )
    args = ap.parse_args(argv)

    import torch
    import horovod.torch as hvd
    import hvd_compress.torch as hc
    from hvd_compress.torch.fusion import (
        DEFAULT_BUCKET_BYTES,
        ENV_BUCKET_BYTES,
        collective_stats,
        reset_collective_stats,
    )

    hvd.init()
    torch.set_num_threads(args.threads)
    rank, size = hvd.rank(), hvd.size()
    out = Path(args.out)
    gen = torch.Generator().manual_seed(args.seed * 100 + rank)
    model0, shape, classes = make_model(args.model, args.seed, args.width)
    params = sum(p.numel() for p in model0.parameters())
    x = torch.randn((args.batch,) + shape, generator=gen)
    y = torch.randint(0, classes, (args.batch,), generator=gen)
    barrier_id = [0]

    def barrier():
        barrier_id[0] += 1
        hvd.allreduce(torch.zeros(1), name=f"bench.barrier.{barrier_id[0]}")

    split = []  # (forward+backward, optimizer step) of the last step

    def one_step(model, opt):
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()  # hooks start the exchanges
        t1 = time.perf_counter()
        opt.step()  # waits for the exchanges, decodes
        t2 = time.perf_counter()
        split[:] = [t1 - t0, t2 - t1]
        return t2 - t0

    # compute alone (no communication), every rank at once as in training
    base = torch.optim.SGD(model0.parameters(), lr=1e-3)
    for _ in range(args.warmup):
        one_step(model0, base)
    compute = statistics.median(one_step(model0, base) for _ in range(args.steps))
    barrier()

    for spec in [s for s in args.codecs.split(";") if s]:
        spec_only, fused, frontend = split_spec(spec)
        # read when the codec's stock engine is built, at its first step below
        bucket_bytes = int(args.bucket_mb * 2**20) or DEFAULT_BUCKET_BYTES
        os.environ[ENV_BUCKET_BYTES] = str(bucket_bytes) if fused else "0"
        model, _, _ = make_model(args.model, args.seed, args.width)
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        timer = None
        if spec == "none":
            compression, label, bits = hvd.Compression.none, "fp32 (horovod)", 32.0
        elif spec == "hvd-fp16":
            compression, label, bits = hvd.Compression.fp16, "fp16 (horovod)", 16.0
        else:
            compression = hc.from_spec(spec_only)
            label = compression.describe() + (" [hc]" if frontend == "hc" else "") + ("" if fused else " [unfused]")
            bits = None
            # codecs with their own exchange (PowerSGD, GradiVeQ) interleave math with collectives
            # inside a generator: no entry point to time, so their codec share shows as "-"
            from hvd_compress.torch.codecs.base import Codec

            if type(compression).custom_exchange is Codec.custom_exchange:
                timer = CodecTimer(compression)
        if frontend == "hc":  # buckets of bucket_bytes started from gradient hooks
            dopt = hc.DistributedOptimizer(
                opt,
                named_parameters=model.named_parameters(),
                compression=compression,
                bucket_bytes=bucket_bytes if fused else 0,
            )
        else:
            dopt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters(), compression=compression)
        for _ in range(args.warmup):
            one_step(model, dopt)
        barrier()
        hc.reset_wire_stats()
        reset_collective_stats()
        if timer is not None:
            timer.total = 0.0
        tx0 = read_tx(args.iface)
        times, fb, st = [], [], []
        for _ in range(args.steps):
            times.append(one_step(model, dopt))
            fb.append(split[0])
            st.append(split[1])
        barrier()
        tx1 = read_tx(args.iface)
        inter_host = inter_host_bytes(hvd, torch, args, tx1 - tx0, spec) if args.per_host_counter else None
        codec_s = (timer.total / args.steps) if timer is not None else None
        stats = hc.wire_stats()
        colls = collective_stats()
        if spec in BASELINES:
            nominal = 2.0 * (size - 1) / size * params * (4 if spec == "none" else 2)
        else:
            nominal = sum(r["sent_bytes"] for r in stats.values()) / args.steps
            # over every label: composite codecs (GradiVeQ's fallback) and uncompressed small tensors
            values = sum(r["values"] for r in stats.values())
            bits = 8.0 * sum(r["payload_bytes"] for r in stats.values()) / values if values else None
        # every rank's median, so a straggler shows
        meds = hvd.allgather(torch.tensor([statistics.median(times)], dtype=torch.float64), name=f"bench.times.{spec}")
        if rank == 0:
            step_s = float(meds.max())
            measured_total = (tx1 - tx0) / args.steps
            result = {
                "codec": spec,
                "label": label,
                "step_time_s": step_s,
                "step_times_s": times,
                "rank_median_step_s": meds.tolist(),
                "bytes_per_step": measured_total / size,
                "bytes_per_step_all_workers": measured_total,
                "nominal_bytes_per_step": nominal,
                "bytes_vs_nominal": (measured_total / size) / nominal if nominal else None,
                "bits_per_value": bits,
                "codec_time_s": codec_s,
                "forward_backward_s": statistics.median(fb),
                "optimizer_step_s": statistics.median(st),
                "codec_share": (codec_s / step_s) if codec_s is not None else None,
                "compute_time_s": compute,
                "params": params,
                "world_size": size,
                "tensors": len(list(model.parameters())),
                "fused": fused,
                "frontend": frontend,
                # hvd_compress's own collectives (Horovod's per-parameter allreduces, which it fuses
                # itself, are not counted: placeholders and uncompressed tensors, one per parameter)
                "collectives_per_step": (colls["collectives"] / args.steps) if spec not in BASELINES else None,
                "requested_per_step": (colls["requested"] / args.steps) if spec not in BASELINES else None,
                "model": args.model,
                "batch": args.batch,
                "steps": args.steps,
                "warmup": args.warmup,
            }
            if inter_host is not None:
                result.update(
                    inter_host_bytes_per_step=inter_host,
                    local_size=hvd.local_size(),
                    nominal_inter_host_bytes_per_step=nominal_inter_host(
                        compression, model, size, hvd.local_size(), stats, args.steps
                    ),
                )
            out.mkdir(parents=True, exist_ok=True)
            (out / f"row.{len(list(out.glob('row.*.json'))):02d}.json").write_text(json.dumps(result))
            print(
                f"[bench step] {label:<40} {step_s * 1000:9.1f} ms/step  "
                f"{measured_total / size / 1e6:9.2f} MB/step/worker",
                file=sys.stderr,
                flush=True,
            )
        del dopt, opt, model
        barrier()
    hvd.shutdown()


if __name__ == "__main__":
    main()
