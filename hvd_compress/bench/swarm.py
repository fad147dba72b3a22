"""SwarmSGD against synchronous allreduce SGD: time to a target accuracy, bytes per step.

    python -m hvd_compress.bench.swarm [--np 4] [--link 1gbit] [--json PATH] [--quick]

Launches ``horovodrun -np N --gloo`` on this machine (itself, with ``--worker``). Every method
trains the demo model (scikit-learn digits, MLP 64-H-H-10, ``hvd_compress.demo``) from the same
initial weights on the same data shards, with the same local optimizer (SGD, momentum 0.9):

* ``sync-fp32``: Horovod's ``hvd.DistributedOptimizer`` (ring allreduce of fp32 gradients), the
  baseline the paper's 1.5x is measured against (large-batch synchronous SGD);
* ``swarm ...``: :class:`hvd_compress.torch.SwarmSGD` with the codec, H and mode in its name.

Each worker snapshots its model every ``--eval-every`` steps without communicating (the clock
pauses for the copy); after training, the snapshots are averaged exactly over the workers and
evaluated, giving accuracy of the averaged model against training wall time (what
``average_models()`` would give at that moment). Time to target = training time until the first
snapshot whose averaged model reaches ``--target`` test accuracy.

``--link RATE`` (e.g. ``1gbit``, ``100mbit``) runs the job inside a fresh network namespace whose
loopback is shaped to RATE with ``tc`` (``tbf``); it needs root (``unshare -n``). All workers share
that one loopback, so RATE is the aggregate bandwidth of the whole job, like a shared switch
uplink, not a per-worker NIC. Without ``--link`` the job runs on the unshaped loopback, where
compute dominates and the comparison shows convergence per step more than communication.

The paper's number to compare with: Transformer on WMT17 En-De, 1.5x faster than large-batch
SGD to slightly higher BLEU (Nadiradze et al.); this benchmark is a far smaller model on a shared
loopback, so read the ratio as "what gossip buys on this link", not as a reproduction.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PAPER_SPEEDUP = 1.5
DEFAULT_METHODS = [
    "sync-fp32",
    "swarm:lattice:bits=8:H=1",
    "swarm:lattice:bits=8:H=2",
    "swarm:lattice:bits=8:H=2:nonblocking",
    "swarm:lattice:bits=4,safety=3:H=2",
    "swarm:qsgd:bits=8:H=2",
    "swarm:none:H=2",
]


def parse_method(text: str) -> dict:
    """``sync-fp32`` or ``swarm:<codec spec>:H=<h>[:nonblocking][:local-buffers]``."""
    if text == "sync-fp32":
        return {"name": text, "kind": "sync"}
    if not text.startswith("swarm:"):
        raise ValueError(f"method must be 'sync-fp32' or 'swarm:<codec>:H=<h>[:nonblocking]', got {text!r}")
    parts = text[len("swarm:") :].split(":")
    h, nonblocking = 1, False
    codec_parts = []
    for p in parts:
        if p.startswith("H="):
            h = int(p[2:])
        elif p == "nonblocking":
            nonblocking = True
        else:
            codec_parts.append(p)
    codec = ":".join(codec_parts[:2]) if len(codec_parts) >= 2 else codec_parts[0]
    return {"name": text, "kind": "swarm", "codec": codec, "H": h, "nonblocking": nonblocking}


# ---------------------------------------------------------------------------------------- worker
def train(method: dict, data, args, hvd) -> dict:
    """Train one method under Horovod; every rank returns the same summary (rank 0's clock)."""
    import hvd_compress.torch as hc
    from hvd_compress.demo import make_model

    xtr, ytr, xte, yte = data
    rank, size = hvd.rank(), hvd.size()
    model = make_model(args.seed, args.hidden)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    base = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    hc.reset_wire_stats()
    nparams = sum(p.numel() for p in model.parameters())
    if method["kind"] == "sync":
        opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters())
    else:
        opt = hc.SwarmSGD(
            base,
            model,
            local_steps=method["H"],
            codec=method["codec"],
            nonblocking=method["nonblocking"],
            seed=args.seed,
        )
    n = xtr.shape[0]
    snapshots, clock, steps = [], 0.0, 0
    hvd.allreduce(torch.zeros(1), name=f"bench.swarm.start.{method['name']}")  # common start line
    for epoch in range(args.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        shard = perm[rank::size]
        nb = len(perm[0::size]) // args.batch_size  # same step count on every rank
        model.train()
        t0 = time.perf_counter()
        for b in range(nb):
            idx = shard[b * args.batch_size : (b + 1) * args.batch_size]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            steps += 1
            if steps % args.eval_every == 0:
                clock += time.perf_counter() - t0
                snapshots.append(
                    (steps, clock, torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]))
                )
                t0 = time.perf_counter()
        clock += time.perf_counter() - t0
    if not snapshots or snapshots[-1][0] != steps:
        snapshots.append((steps, clock, torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])))
    # training is over: evaluate each snapshot's exact average (not timed)
    curve = []
    for i, (s, t, flat) in enumerate(snapshots):
        avg = hvd.allreduce(flat, name=f"bench.swarm.snap.{i}", op=hvd.Average)
        t = float(hvd.broadcast(torch.tensor([t], dtype=torch.float64), 0, name=f"bench.swarm.t.{i}"))
        curve.append({"step": s, "time_s": t, "accuracy": _accuracy(model, avg, xte, yte)})
    if method["kind"] == "sync":
        sent = 2.0 * (size - 1) / size * 4 * nparams  # ring allreduce of fp32 gradients, per step
        summary = {"bytes_per_step": sent, "fallback_tensors": 0, "rounds": 0}
    else:
        summary = opt.summary()
        opt.average_models()  # the end of training: every replica holds the exact average
    with torch.no_grad():
        model.eval()
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = hvd.allgather(flat.unsqueeze(0), name=f"bench.swarm.replicas.{method['name']}")
    identical = bool(all(torch.equal(gathered[0], gathered[i]) for i in range(size)))
    target_time = next((c["time_s"] for c in curve if c["accuracy"] >= args.target), None)
    target_step = next((c["step"] for c in curve if c["accuracy"] >= args.target), None)
    row = {
        "method": method["name"],
        "accuracy": acc,
        "steps": steps,
        "train_time_s": curve[-1]["time_s"],
        "time_per_step_s": curve[-1]["time_s"] / max(steps, 1),
        "time_to_target_s": target_time,
        "steps_to_target": target_step,
        "bytes_per_step": summary["bytes_per_step"],
        "fp32_allreduce_bytes_per_step": 2.0 * (size - 1) / size * 4 * nparams,
        "replicas_identical_after_average": identical,
        "curve": curve,
        "world_size": size,
        "params": nparams,
    }
    if method["kind"] == "swarm":
        row.update({"codec": str(opt.codec), "H": method["H"], "nonblocking": method["nonblocking"], "swarm": summary})
    return row


def _accuracy(model, flat, xte, yte) -> float:
    with torch.no_grad():
        params = list(model.parameters())
        saved = [p.detach().clone() for p in params]
        pos = 0
        for p in params:
            p.copy_(flat[pos : pos + p.numel()].view_as(p))
            pos += p.numel()
        model.eval()
        acc = (model(xte).argmax(1) == yte).float().mean().item()
        for p, s in zip(params, saved):
            p.copy_(s)
    return acc


def worker(args) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.torch as hvd
    from hvd_compress.demo import load_digits_split

    hvd.init()
    torch.set_num_threads(1)
    data = load_digits_split(args.seed)
    rows = []
    for name in args.methods:
        rows.append(train(parse_method(name), data, args, hvd))
        if hvd.rank() == 0:
            r = rows[-1]
            print(
                f"[bench.swarm] {name}: acc {100 * r['accuracy']:.2f}%  {1000 * r['time_per_step_s']:.2f} ms/step  "
                f"{r['bytes_per_step']:,.0f} B/step",
                file=sys.stderr,
                flush=True,
            )
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"rank{hvd.rank()}.json").write_text(json.dumps({"rows": rows}, default=float))
    hvd.shutdown()


# ---------------------------------------------------------------------------------------- launcher
def format_table(rows, target) -> str:
    base = next((r for r in rows if r["method"] == "sync-fp32"), None)
    head = (
        f"{'method':<38} {'acc':>7} {'ms/step':>8} {'bytes/step':>12} {'vs fp32':>8} "
        f"{'steps->tgt':>10} {'s->tgt':>8} {'speedup':>8} {'fallbk':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r["bytes_per_step"] / r["fp32_allreduce_bytes_per_step"]
        tt = r["time_to_target_s"]
        speed = (base["time_to_target_s"] / tt) if (base and tt and base["time_to_target_s"]) else None
        fb = r.get("swarm", {}).get("fallback_tensors", 0)
        lines.append(
            f"{r['method'][:38]:<38} {100 * r['accuracy']:>6.2f}% {1000 * r['time_per_step_s']:>8.2f} "
            f"{r['bytes_per_step']:>12,.0f} {ratio:>8.3f} "
            f"{(r['steps_to_target'] if r['steps_to_target'] is not None else '-'):>10} "
            f"{(f'{tt:.2f}' if tt is not None else 'never'):>8} "
            f"{(f'{speed:.2f}x' if speed else '-'):>8} {fb:>7}"
        )
    lines.append(
        f"target accuracy {100 * target:.1f}% of the averaged model; speedup = sync-fp32's time to "
        f"target / the method's (the paper: {PAPER_SPEEDUP}x vs large-batch SGD, Transformer/WMT17)"
    )
    return "\n".join(lines)


def _link_wrap(cmd, rate):
    if rate is None:
        return cmd
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("tc") is None:
        raise SystemExit(
            "--link needs root, unshare and tc (a network namespace with a shaped loopback); "
            "run as root or drop --link"
        )
    inner = " ".join(_quote(c) for c in cmd)
    script = (
        f"ip link set lo up && tc qdisc add dev lo root tbf rate {rate} burst 256kb latency 100ms && " f"exec {inner}"
    )
    return ["unshare", "-n", "bash", "-c", script]


def _quote(s):
    import shlex

    return shlex.quote(str(s))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--np", type=int, default=4)
    ap.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated: sync-fp32, swarm:<codec spec>:H=<h>[:nonblocking]",
    )
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--hidden", type=int, default=1024, help="MLP width (1024: 1.1M parameters)")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--link", help="shape the loopback to this rate (tc syntax: 1gbit, 100mbit); needs root")
    ap.add_argument("--quick", action="store_true", help="hidden 256, 6 epochs, 4 methods")
    ap.add_argument("--json", help="write {'rows': [...]} here")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.methods = _split_methods(args.methods)
    if args.worker:
        return worker(args)
    if args.quick:
        args.hidden, args.epochs = 256, 6
        args.methods = [
            "sync-fp32",
            "swarm:lattice:bits=8:H=2",
            "swarm:lattice:bits=8:H=2:nonblocking",
            "swarm:qsgd:bits=8:H=2",
        ]
    out = tempfile.mkdtemp(prefix="hvdc-bench-swarm-")
    horovodrun = Path(sys.executable).parent / "horovodrun"
    cmd = [
        str(horovodrun),
        "-np",
        str(args.np),
        "--gloo",
        sys.executable,
        "-m",
        "hvd_compress.bench.swarm",
        "--worker",
        "--out",
        out,
        "--methods",
        ";".join(args.methods),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--hidden",
        str(args.hidden),
        "--target",
        str(args.target),
        "--eval-every",
        str(args.eval_every),
        "--seed",
        str(args.seed),
    ]
    cmd = _link_wrap(cmd, args.link)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    proc = subprocess.run(
        cmd, env=env, timeout=args.timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    result = Path(out) / "rank0.json"
    if proc.returncode != 0 or not result.exists():
        sys.stderr.write(proc.stdout[-6000:])
        raise SystemExit(f"benchmark job failed (exit {proc.returncode})")
    rows = json.loads(result.read_text())["rows"]
    shutil.rmtree(out, ignore_errors=True)
    print(
        f"SwarmSGD vs synchronous allreduce SGD: MLP 64-{args.hidden}-{args.hidden}-10 "
        f"({rows[0]['params']:,} parameters) on digits, {args.np} workers, {args.epochs} epochs, "
        f"batch {args.batch_size}/worker, link {args.link or 'loopback (unshaped)'}; {time.time() - t0:.0f}s"
    )
    print(format_table(rows, args.target))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        meta = {k: getattr(args, k) for k in ("np", "epochs", "batch_size", "lr", "hidden", "target", "link", "seed")}
        Path(args.json).write_text(
            json.dumps({"config": meta, "paper_speedup": PAPER_SPEEDUP, "rows": rows}, indent=1, default=float)
        )
    return rows


def _split_methods(text):
    if isinstance(text, list):
        return text
    seps = ";" if ";" in text else ","
    out = []
    for tok in (t.strip() for t in text.split(seps)):
        if not tok:
            continue
        # a codec spec's own "key=value" items (e.g. "safety=3") follow their method after a comma
        if seps == "," and out and not tok.startswith(("swarm:", "sync-")):
            out[-1] += "," + tok
        else:
            out.append(tok)
    return out


if __name__ == "__main__":
    main()
