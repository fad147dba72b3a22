"""Worker: one rank fails mid-training; nothing is caught, so the process exits as a user's would.

``--fault user``: rank 1 raises ``RuntimeError("injected failure ...")`` before its step 3 exchange
(the other rank is then waiting in that step's collectives). ``--fault nan``: rank 1's gradient
holds a NaN at step 3; with ``nonfinite="raise"`` (the default) every rank raises
``FloatingPointError`` naming the tensor. Each rank writes ``rank{R}.started`` and, at each step,
``rank{R}.step`` so the test can tell how far every rank got.
"""

from pathlib import Path

from common import parse_args

args = parse_args(
    {
        "--fault": {"choices": ["user", "nan"], "required": True},
        "--frontend": {"choices": ["stock", "hc"], "default": "stock"},
        "--codec": {"default": "onebit"},
        "--fail-step": {"type": int, "default": 3},
    }
)

import atexit  # noqa: E402
import time  # noqa: E402

import horovod.torch as hvd  # noqa: E402
import torch  # noqa: E402

import hvd_compress.torch as hc  # noqa: E402

# horovodrun (non-elastic Gloo) terminates the other workers as soon as one exits non-zero. Linger
# after Horovod's own shutdown (atexit runs last-registered first, and hvd.init registers it), so
# the test sees how the other rank reacts instead of a race with the launcher's SIGTERM (lost once
# in CI on a loaded machine). A rank that hung would still be cut off: the test's limit is 120 s.
atexit.register(time.sleep, 5.0)
hvd.init()
rank = hvd.rank()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.started").write_text("")
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
hvd.broadcast_parameters(model.state_dict(), root_rank=0)
codec = hc.from_spec(args.codec)
base = torch.optim.SGD(model.parameters(), lr=0.05)
if args.frontend == "stock":
    opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=codec)
else:
    opt = hc.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=codec)
g = torch.Generator().manual_seed(rank)
for step in range(20):
    (out / f"rank{rank}.step").write_text(str(step))
    x, y = torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g)
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    if step == args.fail_step and rank == 1:
        if args.fault == "user":
            raise RuntimeError(f"injected failure on rank {rank} at step {step}")
        loss = loss * float("nan")
    loss.backward()
    opt.step()
(out / f"rank{rank}.done").write_text("")
