"""Elastic worker for tests/test_elastic_cluster.py: hvd.elastic training with a codec, and a log.

Each process appends JSON lines to ``$ELASTIC_LOG/<host>-<pid>.jsonl``: ``start`` (host, pid),
``progress`` after every committed batch (epoch, batch, world size, time), ``reset`` from Horovod's
reset callback, and ``done`` with accuracy and a parameter checksum. The test reads these to pick a
worker to SIGKILL, to time the recovery and to compare replicas. ``--sleep`` paces the batches so
the run lasts long enough for a kill and a re-join, whatever the machine's speed.

``--codec none`` uses Horovod's own ``hvd.DistributedOptimizer`` (the control run: Horovod alone
must survive the kill first); any other codec goes through ``hc.DistributedOptimizer``.
"""

import argparse
import json
import os
import socket
import time

import horovod.torch as hvd
import torch

import hvd_compress.torch as hc
import hvd_compress.torch.frontends.elastic  # noqa: F401  (registers the TorchState handlers for codec state)

ap = argparse.ArgumentParser()
ap.add_argument("--codec", default="onebit")
ap.add_argument("--epochs", type=int, default=6)
ap.add_argument("--batches", type=int, default=20)
ap.add_argument("--sleep", type=float, default=0.1)
args = ap.parse_args()

LOG = os.path.join(os.environ["ELASTIC_LOG"], f"{socket.gethostname()}-{os.getpid()}.jsonl")


def log(event, **fields):
    with open(LOG, "a") as f:
        f.write(
            json.dumps({"event": event, "host": socket.gethostname(), "pid": os.getpid(), "t": time.time(), **fields})
            + "\n"
        )


log("start")
hvd.init()
torch.manual_seed(0)
teacher = torch.randn(32, 10)
test_x = torch.randn(2000, 32)
test_y = (test_x @ teacher).argmax(1)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
if args.codec == "none":
    opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters())
else:
    opt = hc.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=args.codec)
state = hvd.elastic.TorchState(model=model, optimizer=opt, epoch=0, batch=0)
state.register_reset_callbacks([lambda: log("reset", size=hvd.size(), rank=hvd.rank())])


@hvd.elastic.run
def train(state):
    while state.epoch < args.epochs:
        while state.batch < args.batches:
            # every rank draws its own batch, seeded by (epoch, batch, rank): resumable
            g = torch.Generator().manual_seed(10_000 * state.epoch + 100 * state.batch + hvd.rank())
            x = torch.randn(64, 32, generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), (x @ teacher).argmax(1)).backward()
            opt.step()
            state.batch += 1
            state.commit()
            log("progress", epoch=state.epoch, batch=state.batch, size=hvd.size(), rank=hvd.rank())
            time.sleep(args.sleep)
        state.epoch, state.batch = state.epoch + 1, 0
        state.commit()


train(state)
with torch.no_grad():
    accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    checksum = sum(p.double().sum().item() for p in model.parameters())
log("done", accuracy=accuracy, checksum=checksum, size=hvd.size(), rank=hvd.rank())
