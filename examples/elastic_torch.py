"""Elastic Horovod training with a compressed exchange (hvd_compress) and committed codec state.

Runs as a plain job or as an elastic one:

    horovodrun -np 2 --gloo python examples/elastic_torch.py --codec onebit
    horovodrun -np 3 --min-np 2 --max-np 3 --host-discovery-script ./discover.sh --gloo \\
        python examples/elastic_torch.py --codec "doublesqueeze:codec=onebit"

``import hvd_compress.torch.frontends.elastic`` registers the state handlers, so ``hvd.elastic.TorchState``
commits and restores the codec's state (error-feedback residuals, DoubleSqueeze's server
residual, RNG steps, PowerSGD's Q, GradiVeQ's basis) together with the model and optimizer, and
after a reset the exchange re-derives everything from the new world size (see docs/elastic.md).
"""

import argparse

import horovod.torch as hvd
import torch

import hvd_compress.torch as hc
import hvd_compress.torch.frontends.elastic  # noqa: F401  (registers the TorchState handlers)

ap = argparse.ArgumentParser()
ap.add_argument("--codec", default="onebit")
ap.add_argument("--epochs", type=int, default=4)
ap.add_argument("--batches", type=int, default=40, help="batches per epoch")
ap.add_argument("--commit-every", type=int, default=5, help="commit state every N batches")
args = ap.parse_args()

hvd.init()
torch.manual_seed(0)
# a fixed synthetic task: 10 classes from a random linear teacher
teacher = torch.randn(64, 10)
test_x = torch.randn(2000, 64)
test_y = (test_x @ teacher).argmax(1)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
opt = hc.DistributedOptimizer(
    torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
    named_parameters=model.named_parameters(),
    compression=args.codec,
)
state = hvd.elastic.TorchState(model=model, optimizer=opt, epoch=0, batch=0)


@hvd.elastic.run
def train(state):
    while state.epoch < args.epochs:
        while state.batch < args.batches:
            # every rank draws its own batch, seeded by (epoch, batch, rank): resumable
            g = torch.Generator().manual_seed(10_000 * state.epoch + 100 * state.batch + hvd.rank())
            x = torch.randn(64, 64, generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), (x @ teacher).argmax(1)).backward()
            opt.step()
            state.batch += 1
            if state.batch % args.commit_every == 0:
                state.commit()
        state.epoch, state.batch = state.epoch + 1, 0
        state.commit()


train(state)
with torch.no_grad():
    accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    checksum = sum(p.double().sum().item() for p in model.parameters())
print(
    f"rank {hvd.rank()} of {hvd.size()}: codec {args.codec}, accuracy {accuracy:.4f}, "
    f"parameter checksum {checksum:.10f}"
)
