"""Worker: train the demo MLP per codec across emulated hosts, counting the bytes that leave this host.

Usage (inside an EmulatedCluster, via horovodrun -H host1:2,host2:2 ... --network-interface eth0):
    python tests/mp/cluster_train.py --out DIR --codecs fp32,onebit,... [--epochs E] [--iface eth0]

A codec name ending in ``@ours`` trains with ``hvd_compress.torch.DistributedOptimizer`` instead of
the stock ``hvd.DistributedOptimizer(compression=codec)``.

The first rank on each host (local_rank 0) reads its host's ``/sys/class/net/<iface>`` tx counter:
first over an idle pause (Horovod's control plane alone), then after the first and the last epoch
of every codec, so the initial broadcast and the final replica check are left out of the count.
"""

import socket
import time
from pathlib import Path

from common import parse_args, write_result

args = parse_args(
    {
        "--codecs": {"required": True},
        "--epochs": {"type": int, "default": 12},
        "--hidden": {"type": int, "default": 256},
        "--lr": {"type": float, "default": 0.05},
        "--bytes-hidden": {"type": int, "default": 0},
        "--bytes-epochs": {"type": int, "default": 3},
        "--iface": {"default": "eth0"},
        "--idle": {"type": float, "default": 2.0},
    }
)

import types  # noqa: E402

import horovod.torch as hvd  # noqa: E402
import torch  # noqa: E402

import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.demo import load_digits_split, make_model, split_codecs, train_one  # noqa: E402

hvd.init()
torch.set_num_threads(1)
counter = Path(f"/sys/class/net/{args.iface}/statistics/tx_bytes")


def tx() -> int:
    return int(counter.read_text())


def barrier(tag: str) -> None:
    hvd.allreduce(torch.zeros(1), name=f"cluster.barrier.{tag}")


barrier("idle.start")
idle0, t0 = tx(), time.perf_counter()
time.sleep(args.idle)
idle_rate = (tx() - idle0) / (time.perf_counter() - t0)
barrier("idle.end")

data = load_digits_split(0)


def train_all(hidden: int, epochs: int):
    rows = []
    for entry in split_codecs(args.codecs):
        name, _, frontend = entry.partition("@")
        opts = types.SimpleNamespace(
            seed=0, hidden=hidden, lr=args.lr, batch_size=32, epochs=epochs, frontend=frontend or "stock"
        )
        marks = []  # (tx bytes, time) after every epoch
        row = train_one(name, data, opts, hvd, progress=lambda: marks.append((tx(), time.perf_counter())))
        row.update({"codec": entry, "frontend": opts.frontend})
        (b0, s0), (b1, s1) = marks[0], marks[-1]
        row.update(
            {
                "host_tx_bytes": b1 - b0,
                "counted_seconds": s1 - s0,
                "hidden": hidden,
                "counted_steps": row["steps"] * (len(marks) - 1) // len(marks),
            }
        )
        if name not in ("fp32", "hvd-fp16"):  # the exchange pattern of the compressed (weight) tensors
            codec = hc.from_spec(name)
            hier = codec.hierarchical is True  # the rows name it explicitly (flat rows: hierarchical=false)
            ranks = hvd.cross_size() if hier else hvd.size()  # who runs the compressed exchange
            row["patterns"] = sorted(
                {
                    codec.pattern(ranks, p.numel() // (hvd.local_size() if hier else 1))
                    for p in make_model(0, hidden).parameters()
                    if p.dim() == 2
                }
            )
            row["describe"] = codec.describe()
            row["hierarchical"] = hier
        rows.append(row)
    return rows


# accuracy at the demo's size; bytes (optionally) on a wider MLP, where payloads outweigh the
# per-message TCP/IP and Horovod negotiation overhead of the few-KB compressed tensors
rows = train_all(args.hidden, args.epochs)
byte_rows = train_all(args.bytes_hidden, args.bytes_epochs) if args.bytes_hidden else rows
write_result(
    args.out,
    hvd.rank(),
    {
        "rank": hvd.rank(),
        "size": hvd.size(),
        "local_rank": hvd.local_rank(),
        "cross_rank": hvd.cross_rank(),
        "hostname": socket.gethostname(),
        "idle_tx_bytes_per_s": idle_rate,
        "rows": rows,
        "byte_rows": byte_rows,
    },
)
hvd.shutdown()
