"""Worker: one rank fails mid-training; the job must end (non-zero) instead of hanging.

``--fault user``: rank 1 raises a ``RuntimeError`` of its own at step 3 (before its backward), so
the other rank is left waiting in the gradient exchange. ``--fault nan``: rank 1's input at step 3
holds a NaN, so its gradients do; with ``nonfinite="raise"`` (the codecs' default) every rank
raises ``FloatingPointError`` naming the tensor. Each rank records the exception it saw in
``rank{R}.json`` before re-raising it (so the test can check the cause even if the launcher
then kills the job).
"""
from common import parse_args, write_result

args = parse_args({"--fault": {"choices": ["user", "nan"], "required": True},
                   "--frontend": {"choices": ["stock", "ours"], "default": "stock"},
                   "--codec": {"default": "onebit"}})

import horovod.torch as hvd  # noqa: E402
import torch  # noqa: E402

import hvd_compress.torch as hc  # noqa: E402

hvd.init()
rank = hvd.rank()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
base = torch.optim.SGD(model.parameters(), lr=0.05)
codec = hc.from_spec(args.codec)
if args.frontend == "stock":
    opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=codec)
else:
    opt = hc.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=codec)
hvd.broadcast_parameters(model.state_dict(), root_rank=0)
data = torch.Generator().manual_seed(rank)

try:
    for step in range(20):
        x = torch.randn(16, 32, generator=data)
        y = torch.randint(0, 4, (16,), generator=data)
        if step == 3 and rank == 1:
            if args.fault == "user":
                raise RuntimeError("injected user failure on rank 1 at step 3")
            x[0, 0] = float("nan")
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
except BaseException as exc:
    write_result(args.out, rank, {"rank": rank, "step": step, "type": type(exc).__name__,
                                  "message": str(exc)[:2000]})
    raise
write_result(args.out, rank, {"rank": rank, "type": None, "message": "finished without an error"})
