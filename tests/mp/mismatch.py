"""Worker: ranks construct different codecs; both must get the same clear error, no hang."""
from common import parse_args, write_result

args = parse_args({"--frontend": {"default": "stock"}})

import horovod.torch as hvd  # noqa: E402
import torch  # noqa: E402

import hvd_compress.torch as hc  # noqa: E402

hvd.init()
rank = hvd.rank()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
codec = hc.QSGD(bits=4) if rank == 0 else hc.QSGD(bits=2)
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
