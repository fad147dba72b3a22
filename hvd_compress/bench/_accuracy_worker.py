"""Worker of ``python -m hvd_compress.bench accuracy`` (run under ``horovodrun``; not a command).

Trains the demo's digits MLP (:mod:`hvd_compress.demo`: same data split, model and optimizer)
once per codec through the stock ``hvd.DistributedOptimizer(compression=...)``, evaluating the
loss on the whole training set every few steps, with the bytes this worker has sent so far.
Rank 0 writes one JSON row per codec to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--codecs", required=True, help="';'-separated: fp32, hvd-fp16 or hvd_compress specs")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=5)
    args = ap.parse_args(argv)

    import torch
    import horovod.torch as hvd
    import hvd_compress.torch as hc
    from hvd_compress.demo import load_digits_split, make_cnn, make_model

    hvd.init()
    torch.set_num_threads(1)
    rank, size = hvd.rank(), hvd.size()
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    if args.model == "cnn":  # the digits as 1 x 8 x 8 images
        xtr, xte = xtr.view(-1, 1, 8, 8), xte.view(-1, 1, 8, 8)
    out = Path(args.out)
    for index, spec in enumerate(s for s in args.codecs.split(";") if s):
        model = make_cnn(args.seed) if args.model == "cnn" else make_model(args.seed, args.hidden)
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        base = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        if spec == "fp32":
            compression, label = hvd.Compression.none, "fp32 (horovod)"
        elif spec == "hvd-fp16":
            compression, label = hvd.Compression.fp16, "fp16 (horovod)"
        else:
            compression = hc.from_spec(spec)
            label = compression.describe()
        opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=compression)
        values = sum(p.numel() for p in model.parameters())
        ring_bytes = 2.0 * (size - 1) / size * values * (4 if spec == "fp32" else 2)
        hc.reset_wire_stats()
        curve = []  # (step, bytes sent by this worker, training loss on the whole training set)

        def sent_so_far(steps):
            if spec in ("fp32", "hvd-fp16"):  # Horovod's own compressors bypass our counters
                return ring_bytes * steps
            return sum(r["sent_bytes"] for r in hc.wire_stats().values())

        def train_loss():
            model.eval()
            with torch.no_grad():
                loss = torch.nn.functional.cross_entropy(model(xtr), ytr).item()
            model.train()
            return loss

        steps, t0 = 0, time.perf_counter()
        curve.append((0, 0.0, train_loss()))
        n = xtr.shape[0]
        for epoch in range(args.epochs):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
            shard = perm[rank::size]
            nb = len(perm[0::size]) // args.batch_size
            for b in range(nb):
                idx = shard[b * args.batch_size : (b + 1) * args.batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
                opt.step()
                steps += 1
                if steps % args.eval_every == 0:
                    curve.append((steps, sent_so_far(steps), train_loss()))
        if steps % args.eval_every:
            curve.append((steps, sent_so_far(steps), train_loss()))
        elapsed = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = hvd.allgather(flat.unsqueeze(0), name=f"acc.replicas.{index}")
        identical = bool(all(torch.equal(gathered[0], gathered[i]) for i in range(size)))
        # the stock engine's exchange: hierarchical where the codec's "auto" (or True) turned it on
        engine = getattr(compression, "_stock", None)
        hierarchical = bool(getattr(getattr(engine, "exchange", None), "hierarchical", False))
        stats = hc.wire_stats()
        if spec in ("fp32", "hvd-fp16"):
            bits = 32.0 if spec == "fp32" else 16.0
        else:
            row = stats.get(label)
            bits = 8.0 * row["payload_bytes"] / max(row["values"], 1) if row else None
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"row.{index:02d}.json").write_text(
                json.dumps(
                    {
                        "codec": spec,
                        "label": label,
                        "accuracy": acc,
                        "final_train_loss": curve[-1][2],
                        "bits_per_value": bits,
                        "steps": steps,
                        "world_size": size,
                        "bytes_per_step": curve[-1][1] / max(steps, 1),
                        "time_s": elapsed,
                        "compression": (
                            compression.compression_report() if hasattr(compression, "compression_report") else None
                        ),
                        "replicas_identical": identical,
                        "hierarchical": hierarchical,
                        "curve": curve,
                    }
                )
            )
            print(
                f"[bench accuracy] {label:<40} acc {100 * acc:6.2f}%  loss {curve[-1][2]:.4f}",
                file=sys.stderr,
                flush=True,
            )
    hvd.shutdown()


if __name__ == "__main__":
    main()
