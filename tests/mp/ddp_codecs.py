"""Train the demo's digits MLP with DistributedDataParallel once per codec, from the same init.

``ddp`` is plain DDP (its built-in fp32 allreduce, no hook): the baseline. Every other name is an
hvd_compress spec string run through ``hc.ddp_comm_hook``. Per codec each rank records final test
accuracy, whether all replicas hold bit-identical parameters, the wire statistics, the codec's
nominal bits, the codec state's keys, and the parameter names of each bucket in the first two
iterations (DDP rebuilds its buckets after the first).

Run by tests/test_ddp.py under ``torch.distributed.run --nproc_per_node=2`` (Gloo).
"""

import hashlib
import time

from common import close_process_group, parse_args, write_result

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def train(codec_name, data, args):
    import hvd_compress.torch as hc
    from hvd_compress.demo import make_model

    xtr, ytr, xte, yte = data
    rank, size = dist.get_rank(), dist.get_world_size()
    model = make_model(args.seed, args.hidden)
    ddp = DDP(model, bucket_cap_mb=args.bucket_cap_mb)
    buckets = []  # parameter names per bucket, first two iterations
    state = None
    if codec_name != "ddp":
        state, hook = hc.ddp_comm_hook(
            codec_name, named_parameters=model.named_parameters(), bucket_bytes=args.bucket_bytes
        )

        def spy(st, bucket):
            if st.iteration < 2:
                if len(buckets) <= st.iteration:
                    buckets.append([])
                buckets[st.iteration].append([st.name_of(p) for p in bucket.parameters()])
            return hook(st, bucket)

        ddp.register_comm_hook(state, spy)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    hc.reset_wire_stats()
    from hvd_compress.torch.fusion import collective_stats, reset_collective_stats

    reset_collective_stats()
    n, steps, busy = xtr.shape[0], 0, 0.0
    losses = []
    for epoch in range(args.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        shard = perm[rank::size]
        nb = len(perm[0::size]) // args.batch_size  # same step count on every rank
        ddp.train()
        for b in range(nb):
            idx = shard[b * args.batch_size : (b + 1) * args.batch_size]
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(ddp(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            busy += time.perf_counter() - t0
            steps += 1
            losses.append(loss.item())
    stats = hc.wire_stats()
    ddp.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    everyone = [torch.empty_like(flat) for _ in range(size)]
    dist.all_gather(everyone, flat)
    colls = collective_stats()
    row = {
        "codec": codec_name,
        "accuracy": acc,
        "steps": steps,
        "ms_per_step": 1000 * busy / steps,
        "collectives_per_step": colls["collectives"] / steps,
        "requested_per_step": colls["requested"] / steps,
        "param_digest": hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16],
        "final_loss": sum(losses[-10:]) / 10,
        "replicas_identical": all(torch.equal(everyone[0], e) for e in everyone),
        "wire_stats": stats,
    }
    if state is not None:
        codec = state.codec
        row.update(
            label=codec.describe(),
            nominal_bits=codec.nominal_bits(),
            buckets=buckets,
            iteration=state.iteration,
            state_keys={k: sorted(v) for k, v in codec.state.items() if isinstance(v, dict)},
        )
        inner = getattr(codec, "inner", None)
        if inner is not None:
            row["inner_state_keys"] = {k: sorted(v) for k, v in inner.state.items() if isinstance(v, dict)}
    return row


def main():
    args = parse_args(
        {
            "--codecs": {"default": "ddp,none"},
            "--epochs": {"type": int, "default": 12},
            "--batch-size": {"type": int, "default": 32},
            "--lr": {"type": float, "default": 0.05},
            "--hidden": {"type": int, "default": 256},
            "--seed": {"type": int, "default": 0},
            "--bucket-cap-mb": {"type": float, "default": 0.05},
            "--bucket-bytes": {"type": int, "default": None},
        }
    )
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    from hvd_compress.demo import load_digits_split, split_codecs

    data = load_digits_split(args.seed)
    rows = [train(name, data, args) for name in split_codecs(args.codecs)]
    write_result(args.out, dist.get_rank(), {"rows": rows, "world_size": dist.get_world_size()})
    close_process_group()


if __name__ == "__main__":
    main()
