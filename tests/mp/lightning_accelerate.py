"""Train the demo's digits MLP through PyTorch Lightning or Hugging Face Accelerate, twice from the
same init and data order: plain DDP (the baseline), then DDP with hvd_compress's comm hook.

    torchrun --nproc_per_node=2 tests/mp/lightning_accelerate.py --out DIR --framework lightning --codec qsgd:bits=4

Writes DIR/rank{R}.json: {"rows": [{"run", "accuracy", "digest", "wire_stats"}, ...]}. Run by
tests/test_lightning_accelerate_mp.py (Gloo, CPU).
"""

import os

from common import close_process_group, parse_args, write_result

import torch
import torch.distributed as dist
import torch.nn.functional as F

import hvd_compress.torch as hc
from hvd_compress.data import load_digits_arrays
from hvd_compress.demo import make_model

args = parse_args(
    {
        "--framework": {"choices": ["lightning", "accelerate"], "required": True},
        "--codec": {"default": "qsgd:bits=4"},
        "--epochs": {"type": int, "default": 8},
        "--batch-size": {"type": int, "default": 32},
        "--lr": {"type": float, "default": 0.05},
    }
)
torch.set_num_threads(1)
xtr, ytr, xte, yte = (torch.from_numpy(a) for a in load_digits_arrays())
train_set = torch.utils.data.TensorDataset(xtr, ytr)


def evaluate(model):
    with torch.no_grad():
        accuracy = (model(xte).argmax(1) == yte).float().mean().item()
    digest = float(sum(p.detach().double().sum() * (i + 1) for i, p in enumerate(model.parameters())))
    return accuracy, digest


def run_lightning(codec):
    import lightning.pytorch as pl

    from hvd_compress.torch.frontends.lightning import DDPStrategy

    class Digits(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = make_model(0)

        def training_step(self, batch, _):
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=args.lr, momentum=0.9)

    pl.seed_everything(0, verbose=False)
    module = Digits()
    hook_args = {}
    if codec:
        state, hook = hc.ddp_comm_hook(codec, named_parameters=module.model.named_parameters())
        hook_args = {"ddp_comm_state": state, "ddp_comm_hook": hook}
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo", **hook_args),
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    trainer.fit(module, loader)  # Lightning adds the DistributedSampler
    return evaluate(module.model)


def run_accelerate(codec):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    set_seed(0)
    accelerator = Accelerator(cpu=True)
    model = make_model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    ddp, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if codec:  # accelerate's DistributedDataParallelKwargs(comm_hook=) takes only torch's built-in hooks
        state, hook = hc.ddp_comm_hook(codec, named_parameters=model.named_parameters())
        ddp.register_comm_hook(state, hook)
    for _ in range(args.epochs):
        for x, y in loader:
            optimizer.zero_grad()
            accelerator.backward(F.cross_entropy(ddp(x), y))
            optimizer.step()
    return evaluate(accelerator.unwrap_model(ddp))


rows = []
for codec in (None, args.codec):
    hc.reset_wire_stats()
    accuracy, digest = (run_lightning if args.framework == "lightning" else run_accelerate)(codec)
    rows.append({"run": codec or "ddp", "accuracy": accuracy, "digest": digest, "wire_stats": hc.wire_stats()})
rank = dist.get_rank() if dist.is_initialized() else int(os.environ["RANK"])
write_result(args.out, rank, {"rows": rows})
close_process_group()
