"""Worker: codec state round-trips through a checkpoint. Training 8 steps straight and training
4 steps, checkpointing, rebuilding everything, restoring and training 4 more must give
bit-identical parameters (residuals and RNG streams resume exactly)."""

from common import parse_args, write_result

args = parse_args({"--frontend": {"default": "ours"}, "--codec": {"default": "onebit"}})

import io  # noqa: E402

import horovod.torch as hvd  # noqa: E402
import torch  # noqa: E402

import hvd_compress.torch as hc  # noqa: E402

hvd.init()
rank = hvd.rank()


def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    codec = hc.from_spec(args.codec)
    if args.frontend == "ours":
        opt = hc.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=codec)
    else:
        opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=codec)
    return model, opt, codec


def train(model, opt, steps):
    for s in steps:
        g = torch.Generator().manual_seed(1000 * s + rank)
        x, y = torch.randn(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


model, opt, _ = build()
train(model, opt, range(8))
straight = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

model, opt, codec = build()
train(model, opt, range(4))
buf = io.BytesIO()
torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
buf.seek(0)
ckpt = torch.load(buf, weights_only=False)
has_codec_state = "hvd_compress" in ckpt["opt"]

model, opt, codec = build()
model.load_state_dict(ckpt["model"])
opt.load_state_dict(ckpt["opt"])
if args.frontend == "stock":
    # the stock optimizer learns about the codec only at its first step: restore it directly
    codec.load_state_dict(ckpt["opt"]["hvd_compress"])
train(model, opt, range(4, 8))
resumed = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
write_result(
    args.out,
    rank,
    {
        "has_codec_state": has_codec_state,
        "identical": bool(torch.equal(straight, resumed)),
        "max_diff": float((straight - resumed).abs().max()),
    },
)
hvd.shutdown()
