"""Worker: a small CNN on synthetic 8x8 images under horovodrun, once per codec (fp32, GradiVeQ,
PowerSGD) and frontend.

Data: 10 classes, each a fixed pattern of two soft bars, shifted by up to one pixel, scaled in
contrast and buried in Gaussian noise (sigma 0.4); 3000 training and 3000 test images. Chosen over
sklearn's digits because its 450 test images put two equally good models about a point apart,
which a "within 1 point of fp32" check cannot tell from a codec's effect; here fp32 settles near
99% and runs of different seeds agree within a few tenths. ``--data digits`` uses the digits.

Writes ``{out}/rank{R}.json`` with, per codec: test accuracy, whether all replicas hold identical
parameters, wire stats, and for GradiVeQ the achieved compression ratio K/d per layer; rank 0 prints
a table.
"""

import math
import time

from common import parse_args, write_result  # sets sys.path

import torch


def synthetic_images(n, seed, sigma=0.4):
    """``(x, y)``: ``n`` images ``1 x 8 x 8`` of 10 classes (see the module docstring)."""
    g = torch.Generator().manual_seed(1234)  # the class patterns are fixed
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    patterns = []
    for _ in range(10):
        t = torch.zeros(8, 8)
        for _ in range(2):
            angle = torch.rand(1, generator=g).item() * math.pi
            offset = (torch.rand(1, generator=g).item() - 0.5) * 4
            dist = (xx - 3.5) * math.cos(angle) + (yy - 3.5) * math.sin(angle) - offset
            t += torch.exp(-(dist**2) / 1.5)
        patterns.append(t / t.norm() * 8)
    patterns = torch.stack(patterns)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    shifts = torch.randint(-1, 2, (n, 2), generator=g).tolist()
    x = torch.stack([torch.roll(patterns[c], tuple(s), (0, 1)) for c, s in zip(y.tolist(), shifts)])
    x = x * (0.7 + 0.6 * torch.rand(n, 1, 1, generator=g)) + sigma * torch.randn(n, 8, 8, generator=g)
    return x.unsqueeze(1), y


def train(codec_name, frontend, data, args, hvd):
    import hvd_compress.torch as hc
    from hvd_compress.demo import make_cnn

    xtr, ytr, xte, yte = data
    model = make_cnn(args.seed)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    base = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    if codec_name == "fp32":
        codec, compression = None, hvd.Compression.none
    else:
        codec = compression = hc.from_spec(codec_name)
    if frontend == "ours" and codec is not None:
        opt = hc.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=codec)
    else:
        opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters(), compression=compression)
    hc.reset_wire_stats()
    rank, size, n = hvd.rank(), hvd.size(), xtr.shape[0]
    per_epoch = len(range(0, n, size)) // args.batch_size
    t0, step, epoch = time.perf_counter(), 0, 0
    values = sum(p.numel() for p in model.parameters())
    early = None  # bytes on the wire after --bytes-at steps (warm-up and sampling included)
    while step < args.steps:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        shard = perm[rank::size]
        for b in range(per_epoch):
            if step >= args.steps:
                break
            idx = shard[b * args.batch_size : (b + 1) * args.batch_size]
            for group in base.param_groups:  # cosine decay: a settled final accuracy to compare
                group["lr"] = 0.5 * args.lr * (1 + math.cos(math.pi * step / args.steps))
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            step += 1
            if step == args.bytes_at:
                early = wire_bytes_vs_fp32(hc.wire_stats(), values, step)
        epoch += 1
    elapsed = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = hvd.allgather(flat.unsqueeze(0), name=f"replicas.{codec_name}.{frontend}")
    row = {
        "codec": codec_name,
        "frontend": frontend,
        "accuracy": acc,
        "steps": step,
        "time_per_step_s": elapsed / max(step, 1),
        "replicas_identical": bool(all(torch.equal(gathered[0], g) for g in gathered)),
        "wire_stats": hc.wire_stats(),
        "loss": loss.item(),
        "bytes_vs_fp32": 1.0 if codec is None else wire_bytes_vs_fp32(hc.wire_stats(), values, step),
        "bytes_vs_fp32_early": 1.0 if codec is None else early,
    }
    if codec is not None and hasattr(codec, "compression_report"):
        row["compression"] = codec.compression_report()
        row["phases"] = dict(codec.state.get("phase", {}))
    if codec is not None and hasattr(codec, "compression_ratio"):
        row["compression"] = {
            name: {"shape": list(p.shape), "ratio": codec.compression_ratio(p.shape)}
            for name, p in model.named_parameters()
            if codec.should_compress(p)
        }
    if codec is not None:  # the checkpoint carries the codec state
        sd = opt.state_dict()
        row["state_keys"] = sorted(sd.get("hvd_compress", {}).get("state", {}).keys())
    return row


def wire_bytes_vs_fp32(stats, values, steps):
    """Payload bytes handed to the collectives against fp32's (4 bytes per value per step); values
    no codec row counts (tensors below ``min_numel``, which Horovod sends uncompressed) as fp32."""
    counted = sum(r["values"] for r in stats.values())
    sent = sum(r["payload_bytes"] for r in stats.values()) + 4 * max(values * steps - counted, 0)
    return sent / (4.0 * values * steps)


def format_rows(rows, size):
    fp32 = next((r["accuracy"] for r in rows if r["codec"] == "fp32"), None)
    lines = [
        f"CNN on 8x8 images, {size} workers",
        f"{'codec':<62} {'frontend':<8} {'accuracy':>8} {'vs fp32':>8} {'K/d or n*m/((n+m)r)':>20} {'replicas':>8}",
    ]
    for r in rows:
        comp = r.get("compression") or {}
        ratio = (
            comp.get("_total", {}).get("ratio")
            if "_total" in comp
            else (sum(v["ratio"] for v in comp.values()) / len(comp) if comp else None)
        )
        delta = f"{100 * (r['accuracy'] - fp32):+8.2f}" if fp32 is not None else ""
        lines.append(
            f"{r['codec'][:62]:<62} {r['frontend']:<8} {100 * r['accuracy']:>7.2f}% {delta:>8} "
            f"{'' if ratio is None else f'{ratio:.2f}':>20} {'same' if r['replicas_identical'] else 'DIFFER':>8}"
        )
    return "\n".join(lines)


def main():
    args = parse_args(
        {
            "--codecs": {"required": True},
            "--frontends": {"default": "stock"},
            "--steps": {"type": int, "default": 400},
            "--batch-size": {"type": int, "default": 32},
            "--lr": {"type": float, "default": 0.03},
            "--seed": {"type": int, "default": 0},
            "--bytes-at": {"type": int, "default": 150},
            "--data": {"default": "synthetic", "choices": ["synthetic", "digits"]},
        }
    )
    import horovod.torch as hvd
    from hvd_compress.demo import load_digits_split

    hvd.init()
    torch.set_num_threads(1)
    if args.data == "digits":
        xtr, ytr, xte, yte = load_digits_split(args.seed)
        data = (xtr.view(-1, 1, 8, 8), ytr, xte.view(-1, 1, 8, 8), yte)
    else:
        data = synthetic_images(3000, 1) + synthetic_images(3000, 2)
    rows = []
    for name in [c for c in args.codecs.split(";") if c]:
        for frontend in ["stock"] if name == "fp32" else args.frontends.split("+"):
            rows.append(train(name, frontend, data, args, hvd))
    if hvd.rank() == 0:
        print(format_rows(rows, hvd.size()), flush=True)
    write_result(args.out, hvd.rank(), {"world_size": hvd.size(), "rows": rows})
    hvd.shutdown()


if __name__ == "__main__":
    main()
