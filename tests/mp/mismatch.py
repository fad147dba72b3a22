"""Worker: ranks construct different codecs (or, with ``--codec``, the same codec over weights of
different shapes under the same names); all must get the same clear error, no hang."""

from common import parse_args, write_result

args = parse_args({"--frontend": {"default": "stock"}, "--codec": {"default": None}})

import horovod.torch as hvd  # noqa: E402
import torch  # noqa: E402

import hvd_compress.torch as hc  # noqa: E402

hvd.init()
rank = hvd.rank()
torch.manual_seed(0)
if args.codec is None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    codec = hc.QSGD(bits=4) if rank == 0 else hc.QSGD(bits=2)
else:  # no biases: only the compressed weights differ (Horovod itself rejects unequal allreduces)
    hidden = 64 if rank == 0 else 72
    model = torch.nn.Sequential(
        torch.nn.Linear(64, hidden, bias=False), torch.nn.ReLU(), torch.nn.Linear(hidden, 32, bias=False)
    )  # both large enough to compress
    codec = hc.from_spec(args.codec)
base = torch.optim.SGD(model.parameters(), lr=0.1)
if args.frontend == "stock":
    opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=codec)
else:
    opt = hc.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=codec)
result = {"rank": rank}
try:
    loss = model(torch.randn(8, 64)).sum()
    loss.backward()
    opt.step()
    result["error"] = None
except Exception as exc:
    result["error"] = f"{type(exc).__name__}: {exc}"
write_result(args.out, rank, result)
