"""Our PowerSGD through ``hc.ddp_comm_hook`` beside torch's built-in ``powerSGD_hook``.

Same model, seed, data order and settings (rank, start iteration, error feedback, warm start) on
2-process Gloo DDP; plain DDP as a third run for scale. Per run each rank records the loss of
every step, final test accuracy, and bytes handed to allreduce: for torch's hook by counting every
``dist.all_reduce`` it makes (its only collective), for ours from ``hc.wire_stats()``.

``--codec`` overrides our side (a spec string) so the harness can be tried before
``hvd_compress.torch.PowerSGD`` exists; by default it is ``PowerSGD(rank=R, start_iter=S)``.
"""

import time

from common import close_process_group, parse_args, write_result

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def train(kind, data, args, codec=None):
    import hvd_compress.torch as hc
    from hvd_compress.demo import make_model
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_psgd

    xtr, ytr, xte, yte = data
    rank, size = dist.get_rank(), dist.get_world_size()
    model = make_model(args.seed, args.hidden)
    ddp = DDP(model)
    counted = {"bytes": 0, "calls": 0}
    real_all_reduce = dist.all_reduce
    if kind == "torch":
        state = torch_psgd.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=args.rank,
            start_powerSGD_iter=args.start_iter,
            use_error_feedback=True,
            warm_start=True,
            random_seed=args.seed,
        )
        ddp.register_comm_hook(state, torch_psgd.powerSGD_hook)

        def counting_all_reduce(tensor, *a, **kw):
            counted["bytes"] += tensor.numel() * tensor.element_size()
            counted["calls"] += 1
            return real_all_reduce(tensor, *a, **kw)

        dist.all_reduce = counting_all_reduce  # torch's hooks look it up on the module per call
    elif kind == "ours":
        state, hook = hc.ddp_comm_hook(codec, named_parameters=model.named_parameters())
        ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    hc.reset_wire_stats()
    losses, n, steps, busy = [], xtr.shape[0], 0, 0.0
    try:
        for epoch in range(args.epochs):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
            shard = perm[rank::size]
            for b in range(len(perm[0::size]) // args.batch_size):
                idx = shard[b * args.batch_size : (b + 1) * args.batch_size]
                t0 = time.perf_counter()
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(ddp(xtr[idx]), ytr[idx])
                loss.backward()
                opt.step()
                busy += time.perf_counter() - t0
                losses.append(loss.item())
                steps += 1
    finally:
        dist.all_reduce = real_all_reduce
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    row = {"kind": kind, "accuracy": acc, "losses": losses, "steps": steps, "ms_per_step": 1000 * busy / steps}
    if kind == "torch":
        row.update(bytes=counted["bytes"], collectives=counted["calls"])
    elif kind == "ours":
        stats = hc.wire_stats()
        row.update(
            bytes=sum(r["payload_bytes"] for r in stats.values()), wire_stats=stats, label=state.codec.describe()
        )
    return row


def main():
    args = parse_args(
        {
            "--rank": {"type": int, "default": 2},
            "--start-iter": {"type": int, "default": 10},
            "--epochs": {"type": int, "default": 6},
            "--batch-size": {"type": int, "default": 32},
            "--lr": {"type": float, "default": 0.05},
            "--hidden": {"type": int, "default": 256},
            "--seed": {"type": int, "default": 0},
            "--codec": {"default": None},
        }
    )
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    import hvd_compress.torch as hc
    from hvd_compress.demo import load_digits_split

    data = load_digits_split(args.seed)
    codec = args.codec or hc.PowerSGD(rank=args.rank, start_iter=args.start_iter)
    rows = [train(kind, data, args, codec) for kind in ("ddp", "torch", "ours")]
    write_result(args.out, dist.get_rank(), {"rows": rows, "rank": args.rank, "start_iter": args.start_iter})
    close_process_group()


if __name__ == "__main__":
    main()
