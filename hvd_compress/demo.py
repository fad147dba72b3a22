"""The main job: train a small model with Horovod once per codec and compare.

Run it (``ci/demo.sh`` does this); it launches ``horovodrun -np N --gloo`` itself, draws a progress
bar and prints the table::

    python -m hvd_compress.demo --np 2 --codecs fp32,hvd-fp16,qsgd:bits=4,onebit

or launch the workers yourself (then rank 0 prints the table)::

    horovodrun -np 2 --gloo python -m hvd_compress.demo --codecs fp32,qsgd:bits=4

Every codec trains the same MLP on scikit-learn's digits from the same initial weights, the
training set sharded across ranks. Rank 0 prints a table (codec, bits per value on the wire,
bytes sent per step, final accuracy, time per step) and can write it as JSON. Each run also checks
that all replicas hold bit-identical parameters at the end.

Codec names: ``fp32`` (Horovod, no compression) and ``hvd-fp16`` (Horovod's own
``Compression.fp16``) are the baselines; anything else is an hvd_compress spec string
(``qsgd:bits=4``), separated by commas.

``--tensorboard DIR`` writes, per codec and epoch, the wire statistics and the compression error
as TensorBoard scalars (:mod:`hvd_compress.torch.frontends.tensorboard`); ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from hvd_compress.core.registry import every_builtin_codec

# fp32 and Horovod's fp16, then every built-in codec: these settings first, the others (a codec
# added later) with their defaults; SKIPPED says why a codec is left out.
PREFERRED = [
    "fp16",
    "bf16",
    "qsgd:bits=8",
    "qsgd:bits=4",
    "terngrad",
    "onebit",
    "efsign",
    "signsgd",
    "topk:ratio=0.01",
    "doublesqueeze:codec=onebit",
    "powersgd:rank=4,start_iter=10",
]
SKIPPED = {
    "none": "the fp32 row (Horovod's own allreduce)",
    "gradiveq": "compresses conv kernels (3-D and up) only: the demo's MLP has none",
    "lattice": "SwarmSGD's gossip codec, not a gradient exchange",
}
DEFAULT_CODECS = ["fp32", "hvd-fp16"] + every_builtin_codec(PREFERRED, SKIPPED)


def load_digits_split(seed: int = 0):
    from hvd_compress.data import load_digits_arrays  # numpy, shared with the TensorFlow demo

    xtr, ytr, xte, yte = load_digits_arrays(seed)
    return (torch.from_numpy(xtr), torch.from_numpy(ytr).long(), torch.from_numpy(xte), torch.from_numpy(yte).long())


def make_model(seed: int = 0, hidden: int = 256) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    )


def make_cnn(seed: int = 0) -> torch.nn.Module:
    """The small CNN of the linear codecs' tests and ``bench accuracy --model cnn``, for ``1 x 8 x 8``
    inputs: two conv kernels big enough for GradiVeQ (4608 and 9216 values), one below ``min_numel``."""
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),  # 144 values: plain fp32
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 4608: GradiVeQ
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 9216: GradiVeQ
        nn.Flatten(),
        nn.Linear(128, 64),
        nn.ReLU(),  # 8192: fallback codec
        nn.Linear(64, 10),
    )


def split_codecs(text: str):
    """Split a codec list on ',' or ';', keeping ``key=value`` items with the codec before them:
    ``"fp32,qsgd:bits=4,bucket_size=128,onebit"`` -> ``["fp32", "qsgd:bits=4,bucket_size=128", "onebit"]``."""
    out = []
    for token in (t.strip() for t in text.replace(";", ",").split(",")):
        if not token:
            continue
        if "=" in token and ":" not in token and out:
            out[-1] += "," + token
        else:
            out.append(token)
    return out


def train_one(codec_name: str, data, args, hvd, progress=None):
    """Train one codec from the shared initial weights; ``progress()`` after each epoch."""
    import hvd_compress.torch as hc

    xtr, ytr, xte, yte = data
    model = make_model(args.seed, args.hidden)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    base = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    if codec_name == "fp32":
        compression, label = hvd.Compression.none, "fp32 (horovod)"
    elif codec_name == "hvd-fp16":
        compression, label = hvd.Compression.fp16, "fp16 (horovod)"
    else:
        compression = hc.from_spec(codec_name)
        label = compression.describe()
    if args.frontend == "ours" and codec_name not in ("fp32", "hvd-fp16"):
        opt = hc.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=compression)
    else:
        opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=compression)
    hc.reset_wire_stats()
    rank, size = hvd.rank(), hvd.size()
    writer = tensorboard_writer(args, codec_name, rank)
    n = xtr.shape[0]
    steps, step_time = 0, 0.0
    for epoch in range(args.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        shard = perm[rank::size]
        nb = len(perm[0::size]) // args.batch_size  # same step count on every rank
        model.train()
        for b in range(nb):
            idx = shard[b * args.batch_size : (b + 1) * args.batch_size]
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            step_time += time.perf_counter() - t0
            steps += 1
        if writer is not None:  # after each epoch; the error is of the last step's averaged gradients
            hc.tensorboard.log_wire_stats(writer, epoch)
            hc.tensorboard.log_compression_error(writer, epoch, compression, model.named_parameters())
        if progress is not None:
            progress()
    if writer is not None:
        writer.close()
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = hvd.allgather(flat.unsqueeze(0), name=f"demo.replicas.{codec_name}")
    identical = bool(all(torch.equal(gathered[0], gathered[i]) for i in range(size)))
    stats = hc.wire_stats()
    if codec_name in ("fp32", "hvd-fp16"):
        # Horovod's own compressors bypass our counters: every tensor rides a ring allreduce.
        values = sum(p.numel() for p in model.parameters())
        nbytes = values * (4 if codec_name == "fp32" else 2)
        sent = 2.0 * (size - 1) / size * nbytes * steps
        codec_row = {"values": values * steps, "payload_bytes": nbytes * steps, "sent_bytes": sent}
        total_sent = sent
    else:
        codec_row = stats.get(compression.describe(), {"values": 0, "payload_bytes": 0, "sent_bytes": 0})
        total_sent = sum(r["sent_bytes"] for r in stats.values())
    bits = 8.0 * codec_row["payload_bytes"] / max(codec_row["values"], 1)
    return {
        "codec": codec_name,
        "label": label,
        "accuracy": acc,
        "bits_per_value": bits,
        "compressed_values_per_step": codec_row["values"] / max(steps, 1),
        "codec_bytes_per_step": codec_row["sent_bytes"] / max(steps, 1),
        "bytes_per_step": total_sent / max(steps, 1),
        "time_per_step_s": step_time / max(steps, 1),
        "steps": steps,
        "replicas_identical": identical,
        "world_size": size,
        "wire_stats": stats,
    }


def tensorboard_writer(args, codec_name: str, rank: int):
    """A SummaryWriter under ``--tensorboard DIR``, one run folder per hvd_compress codec (Horovod's
    own fp32 / fp16 bypass the counters), on rank 0 only."""
    if not getattr(args, "tensorboard", None) or rank != 0 or codec_name in ("fp32", "hvd-fp16"):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(os.path.join(args.tensorboard, codec_name.replace(":", "_").replace(",", "_")))


def format_table(rows) -> str:
    head = f"{'codec':<34} {'bits/value':>10} {'bytes/step':>12} {'vs fp32':>8} {'accuracy':>9} {'ms/step':>8} {'replicas':>9}"
    fp32 = next((r["bytes_per_step"] for r in rows if r["codec"] == "fp32"), None)
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r['bytes_per_step'] / fp32:8.3f}" if fp32 else f"{'':>8}"
        lines.append(
            f"{r['label'][:34]:<34} {r['bits_per_value']:>10.3f} {r['bytes_per_step']:>12,.0f} {ratio} "
            f"{100 * r['accuracy']:>8.2f}% {1000 * r['time_per_step_s']:>8.2f} "
            f"{'same' if r['replicas_identical'] else 'DIFFER':>9}"
        )
    return "\n".join(lines)


def _worker(args):
    import horovod.torch as hvd

    hvd.init()
    torch.set_num_threads(1)
    codecs = split_codecs(args.codecs)
    data = load_digits_split(args.seed)
    done = [0]

    def progress():
        done[0] += 1
        if hvd.rank() == 0 and args.progress_file:
            with open(args.progress_file, "w") as f:
                f.write(f"{done[0]} {len(codecs) * args.epochs} {codecs[min(done[0] // args.epochs, len(codecs) - 1)]}")

    rows = [train_one(name, data, args, hvd, progress) for name in codecs]
    if hvd.rank() == 0:
        result = {
            "world_size": hvd.size(),
            "frontend": args.frontend,
            "epochs": args.epochs,
            "hidden": args.hidden,
            "batch_size": args.batch_size,
            "rows": rows,
        }
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        if not args.quiet_table:
            print(_report(result))
    hvd.shutdown()


def _report(result) -> str:
    return (
        f"\nhvd_compress demo: MLP 64-{result['hidden']}-{result['hidden']}-10 on digits, "
        f"{result['world_size']} workers, {result['epochs']} epochs, batch {result['batch_size']}/worker, "
        f"frontend={result['frontend']}\n"
        + format_table(result["rows"])
        + "\nbits/value: payload bits per compressed value (scales included); bytes/step: bytes this "
        "worker sent per step, all tensors (ring-allreduce model for fp32 and fp16)"
    )


def _launch(args, argv):
    """Run the workers under horovodrun, draw a progress bar from rank 0's progress file."""
    import subprocess
    import tempfile
    from pathlib import Path

    from tqdm import tqdm

    tmp = Path(tempfile.mkdtemp(prefix="hvdc-demo-"))
    progress_file, json_path, log_path = tmp / "progress", Path(args.json or tmp / "result.json"), tmp / "workers.log"
    horovodrun = Path(sys.executable).with_name("horovodrun")
    cmd = [
        str(horovodrun if horovodrun.exists() else "horovodrun"),
        "-np",
        str(args.np),
        "--gloo",
        sys.executable,
        "-m",
        "hvd_compress.demo",
        *argv,
        "--progress-file",
        str(progress_file),
        "--json",
        str(json_path),
        "--quiet-table",
    ]
    total = len(split_codecs(args.codecs)) * args.epochs
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    with (
        open(log_path, "w") as log,
        tqdm(total=total, unit="epoch", disable=args.no_progress, desc=f"{args.np} workers") as bar,
    ):
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            time.sleep(0.3)
            try:
                done, _, name = progress_file.read_text().split(" ", 2)
                if int(done) != bar.n:
                    bar.set_postfix_str(name, refresh=False)
                    bar.update(int(done) - bar.n)
            except (OSError, ValueError):
                pass
        if proc.returncode == 0:
            bar.update(total - bar.n)
    if proc.returncode != 0:
        sys.stderr.write(log_path.read_text()[-6000:])
        sys.exit(f"hvd_compress demo: workers failed (exit {proc.returncode}); full log: {log_path}")
    print(_report(json.loads(json_path.read_text())))
    if args.json:
        print(f"rows written to {args.json}")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--np", type=int, default=2, help="workers to launch with horovodrun (launcher mode)")
    ap.add_argument(
        "--codecs",
        default=",".join(DEFAULT_CODECS),
        help="codecs to compare (fp32, hvd-fp16 or hvd_compress spec strings)",
    )
    ap.add_argument(
        "--frontend",
        choices=["stock", "ours"],
        default="stock",
        help="stock: hvd.DistributedOptimizer(compression=codec); ours: hvd_compress.torch.DistributedOptimizer",
    )
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write wire stats and compression error per epoch "
        "as TensorBoard scalars under DIR/<codec> (rank 0; view with `tensorboard --logdir DIR`)",
    )
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--progress-file", help=argparse.SUPPRESS)
    ap.add_argument("--quiet-table", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    under_horovod = any(k in os.environ for k in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"))
    if under_horovod:
        _worker(args)
    else:
        launcher_argv = [
            a
            for i, a in enumerate(argv)
            if not (a == "--np" or (i and argv[i - 1] == "--np"))
            and not a.startswith("--np=")
            and a != "--json"
            and not (i and argv[i - 1] == "--json")
        ]
        _launch(args, launcher_argv)


if __name__ == "__main__":
    main()
