"""Worker: the demo task (digits MLP) trained by synchronous allreduce SGD and by SwarmSGD variants.

Runs ``hvd_compress.bench.swarm.train`` once per method (same initial weights, same data shards,
same local optimizer and step count) and writes each method's row: final accuracy after
``average_models()``, bytes per worker per step, fallbacks, replica agreement.
"""

import argparse
import sys

import torch

from common import write_result

import horovod.torch as hvd

from hvd_compress.bench.swarm import parse_method, train
from hvd_compress.demo import load_digits_split


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", required=True, help="';'-separated methods of hvd_compress.bench.swarm")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--eval-every", type=int, default=10**9)  # final snapshot only: no curve needed
    args = ap.parse_args()
    hvd.init()
    torch.set_num_threads(1)
    data = load_digits_split(args.seed)
    rows = []
    for name in args.methods.split(";"):
        row = train(parse_method(name), data, args, hvd)
        row.pop("curve", None)
        rows.append(row)
        if hvd.rank() == 0:
            print(
                f"{name}: accuracy {100 * row['accuracy']:.2f}%, {row['bytes_per_step']:,.0f} bytes/worker/step",
                file=sys.stderr,
                flush=True,
            )
    write_result(args.out, hvd.rank(), {"rows": rows})
    hvd.shutdown()


if __name__ == "__main__":
    main()
