"""Ray Train ``TorchTrainer`` with an hvd_compress DDP communication hook.

Trains the demo's digits MLP on Ray workers (CPU, Gloo) once per codec, from the same initial
weights, inside one ``TorchTrainer`` run, and prints a table::

    python examples/ray_train_torch.py --codecs ddp,onebit,qsgd:bits=4 --workers 2

``ddp`` is plain DDP (Ray's ``prepare_model`` alone, fp32 allreduce); anything else is an
hvd_compress spec string. The pattern, inside the training function::

    model = ray.train.torch.prepare_model(model)              # DistributedDataParallel
    state, hook = hc.ddp_comm_hook("onebit", named_parameters=model.named_parameters())
    model.register_comm_hook(state, hook)                      # after prepare_model, before training

Checkpoints: every rank writes its own hook state (error-feedback residuals differ per rank) into
the checkpoint directory it reports; Ray Train merges the workers' files into one checkpoint
(``model.pt`` from rank 0, ``comm_hook.rank{R}.pt`` from each rank).

Ray here runs locally with a small object store and no dashboard; pass ``--address`` to use a
running cluster instead.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_one(codec, config, data):
    """Train the MLP from the same initial weights with one codec (``ddp``: no hook)."""
    import torch
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    import hvd_compress.torch as hc
    from hvd_compress.demo import make_model

    xtr, ytr, xte, yte = data
    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()
    model = make_model(config["seed"], config["hidden"])
    model = ray.train.torch.prepare_model(model)  # DistributedDataParallel when size > 1
    state = None
    if codec != "ddp" and isinstance(model, DistributedDataParallel):
        # the whole integration: a hook built from the codec, registered after prepare_model
        state, hook = hc.ddp_comm_hook(codec, named_parameters=model.named_parameters())
        model.register_comm_hook(state, hook)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)

    hc.reset_wire_stats()
    n, steps, busy = xtr.shape[0], 0, 0.0
    for epoch in range(config["epochs"]):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(config["seed"] * 1000 + epoch))
        shard = perm[rank::size]
        model.train()
        for b in range(len(perm[0::size]) // config["batch_size"]):  # same step count on every rank
            idx = shard[b * config["batch_size"] : (b + 1) * config["batch_size"]]
            t0 = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            busy += time.perf_counter() - t0
            steps += 1
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    stats = hc.wire_stats()
    label = state.codec.describe() if state is not None else None
    row = {
        "codec": codec,
        "accuracy": acc,
        "ms_per_step": 1000 * busy / max(steps, 1),
        "bytes_per_step": sum(r["sent_bytes"] for r in stats.values()) / max(steps, 1),
        "bits_per_value": stats[label]["bits_per_value"] if label in stats else 32.0,
    }
    return row, model, opt, state


def train_func(config):
    """Runs on every Ray Train worker; Ray has set up torch.distributed (Gloo on CPU)."""
    import torch
    import ray.train

    from hvd_compress.demo import load_digits_split

    torch.set_num_threads(1)
    rank = ray.train.get_context().get_world_rank()
    data = load_digits_split(config["seed"])
    rows = []
    for i, codec in enumerate(config["codecs"]):
        row, model, opt, state = train_one(codec, config, data)
        rows.append(row)
        # checkpoint the usual way, plus the hook state: rank 0 writes model and optimizer, every
        # rank its own hook state (per-rank residuals); Ray merges the workers' files into one
        # checkpoint. To resume: model.load_state_dict / opt.load_state_dict from model.pt and
        # state.load_state_dict(torch.load(f"comm_hook.rank{rank}.pt")) before training on.
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                torch.save(
                    {"model": model.state_dict(), "opt": opt.state_dict(), "codec": codec}, os.path.join(d, "model.pt")
                )
            if state is not None:
                torch.save(state.state_dict(), os.path.join(d, f"comm_hook.rank{rank}.pt"))
            ray.train.report(
                {"codec": codec, "accuracy": row["accuracy"], "rows": list(rows)},
                checkpoint=ray.train.Checkpoint.from_directory(d),
                checkpoint_dir_name=f"codec{i}",
            )


def run(codecs, args, storage):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = {
        "codecs": codecs,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "hidden": args.hidden,
        "seed": args.seed,
    }
    trainer = TorchTrainer(
        train_func,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=False),
        run_config=RunConfig(name="hvdc-ray-torch", storage_path=storage),
    )
    result = trainer.fit()
    files = sorted(os.listdir(result.checkpoint.path)) if result.checkpoint else []
    return result.metrics["rows"], {"path": result.checkpoint.path if result.checkpoint else None, "files": files}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--codecs", default="ddp,onebit", help="ddp (no hook) or hvd_compress spec strings, " "separated by ';' or ','"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", help="Ray Train storage path (default: a temporary directory)")
    ap.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)

    # Ray workers inherit this environment: make hvd_compress importable from a plain checkout
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    sys.path.insert(0, str(ROOT))
    from hvd_compress.demo import split_codecs
    import ray

    if args.address:
        ray.init(address=args.address)
    else:  # a small local Ray: one CPU per worker, small object store, no dashboard
        ray.init(num_cpus=args.workers, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="hvdc-ray-") as tmp:
            rows, checkpoint = run(split_codecs(args.codecs), args, args.storage or tmp)
    finally:
        ray.shutdown()
    print(
        f"\nRay Train TorchTrainer, {args.workers} CPU workers, digits MLP, {args.epochs} epochs "
        f"({time.perf_counter() - t0:.0f} s with Ray start-up)"
    )
    print(f"{'codec':<30} {'accuracy':>9} {'bits/value':>10} {'bytes/step':>11} {'ms/step':>8}")
    for r in rows:
        print(
            f"{r['codec']:<30} {100 * r['accuracy']:>8.2f}% {r['bits_per_value']:>10.3f} "
            f"{r['bytes_per_step']:>11,.0f} {r['ms_per_step']:>8.2f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"workers": args.workers, "rows": rows, "last_checkpoint": checkpoint}, indent=1, default=str)
        )


if __name__ == "__main__":
    main()
