"""Ray Train ``HorovodTrainer`` with an hvd_compress codec in Horovod's stock optimizer.

Ray Train's default implementation (V2, Ray >= 2.50) no longer runs Horovod: ``HorovodTrainer``
raises unless ``RAY_TRAIN_V2_ENABLED=0`` is set before Ray Train is imported. This script sets it
(for itself and the Ray workers it starts), then trains the demo's digits MLP on 2 CPU workers::

    python examples/ray_train_horovod.py --codecs fp32,onebit,qsgd:bits=4 --workers 2

``fp32`` is Horovod without compression; anything else is an hvd_compress spec string passed as
``hvd.DistributedOptimizer(..., compression=codec)`` exactly like ``hvd.Compression.fp16``.
For new code prefer ``TorchTrainer`` with the DDP hook (``examples/ray_train_torch.py``): it runs
on Ray Train's maintained path.
"""

import os

os.environ["RAY_TRAIN_V2_ENABLED"] = "0"  # before any ray.train import; Ray workers inherit it

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_func(config):
    """Runs on every Ray worker; HorovodTrainer has set up Horovod's Gloo rendezvous."""
    import torch
    import horovod.torch as hvd
    from ray import train

    import hvd_compress.torch as hc
    from hvd_compress.demo import load_digits_split, make_model

    hvd.init()
    torch.set_num_threads(1)
    rank, size = hvd.rank(), hvd.size()
    xtr, ytr, xte, yte = load_digits_split(config["seed"])
    model = make_model(config["seed"], config["hidden"])
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    codec = None if config["codec"] == "fp32" else hc.from_spec(config["codec"])
    opt = hvd.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9),
        named_parameters=model.named_parameters(),
        compression=codec if codec is not None else hvd.Compression.none,
    )
    hc.reset_wire_stats()
    n, steps, busy = xtr.shape[0], 0, 0.0
    for epoch in range(config["epochs"]):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(config["seed"] * 1000 + epoch))
        shard = perm[rank::size]
        model.train()
        for b in range(len(perm[0::size]) // config["batch_size"]):
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
        label = codec.describe() if codec is not None else None
        train.report(
            {
                "epoch": epoch,
                "accuracy": acc,
                "ms_per_step": 1000 * busy / max(steps, 1),
                "bits_per_value": stats[label]["bits_per_value"] if label in stats else 32.0,
            }
        )


def run(codec, args, storage):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.horovod import HorovodConfig, HorovodTrainer

    config = {
        "codec": codec,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "hidden": args.hidden,
        "seed": args.seed,
    }
    trainer = HorovodTrainer(
        train_func,
        train_loop_config=config,
        horovod_config=HorovodConfig(timeout_s=120),
        # V1 trainers hold a CPU for the trainer actor unless told otherwise; it only coordinates
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=False, trainer_resources={"CPU": 0}),
        run_config=RunConfig(
            name=f"hvdc-hvd-{codec.replace(':', '_').replace(',', '_').replace('=', '')}",
            storage_path=storage,
            verbose=0,
        ),
    )
    result = trainer.fit()
    return dict(result.metrics, codec=codec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codecs", default="fp32,onebit")
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

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    from hvd_compress.demo import split_codecs
    import ray

    if args.address:
        ray.init(address=args.address, runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "0"}})
    else:
        ray.init(num_cpus=args.workers, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="hvdc-ray-") as tmp:
            for codec in split_codecs(args.codecs):
                rows.append(run(codec, args, args.storage or tmp))
    finally:
        ray.shutdown()
    print(f"\nRay Train HorovodTrainer (RAY_TRAIN_V2_ENABLED=0), {args.workers} CPU workers, digits MLP")
    print(f"{'codec':<30} {'accuracy':>9} {'bits/value':>10} {'ms/step':>8}")
    for r in rows:
        print(f"{r['codec']:<30} {100 * r['accuracy']:>8.2f}% {r['bits_per_value']:>10.3f} {r['ms_per_step']:>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"workers": args.workers, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
