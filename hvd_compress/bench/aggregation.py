"""Aggregation time per step (compress + allreduce + decompress) of GradiVeQ beside fp32, 4-bit QSGD
and PowerSGD, on the conv gradients of ResNet-32 (the GradiVeQ paper's CIFAR model).

Run::

    python -m hvd_compress.bench.aggregation --np 2 [--json PATH] [--model-link 1gbit,100mbit]
    python -m hvd_compress.bench.aggregation --np 4 --link 1gbit     # shaped loopback, needs root

The command launches ``horovodrun -np N --gloo`` on this module's worker. Every worker exchanges
the 31 conv kernels of ResNet-32 (0.46M values; fc and biases left out, as GradiVeQ leaves them to
another codec) through hvd_compress's real exchange, ``--steps`` times per codec, and reports the
median time per step over the timed steps (all tensors started, then all finished, as the
optimizers do), the bytes it handed to collectives, and the GradiVeQ ratio K/d reached.

Gradients are synthetic, built so the energy rule lands on the paper's average ratio: each conv
layer's slices (see ``hvd_compress.torch.codecs.gradiveq``) are ``mu + a U^T + noise`` with ``U``
a fixed random ``K x K/8`` orthonormal basis, ``a`` fresh per worker and step, and noise holding
0.3% of the energy, so ``energy=0.99`` picks ``d = K/8``. This measures the cost of the codec at the
published ratio; it is no claim that real gradients have it (the test CNN in
``tests/test_linear_mp.py`` reaches K/d of about 1.3-1.4 at energy 0.99 after 20 warm-up steps).

GradiVeQ rows: ``compressed phase`` is a step that sends ``U_d^T (g - mu/N)``; ``cycle`` amortizes
the paper's schedule (100 sampling steps of 4-bit QSGD aggregation, one PCA, 400 compressed steps)
from the measured QSGD step, the measured PCA fit and the measured compressed step.

Rates: ``--model-link RATE[,RATE]`` adds ``bytes sent / RATE`` to each measured step (a model:
transfer not overlapped with compute, latency ignored); ``--link RATE`` instead runs the whole job
inside a network namespace whose loopback is shaped to RATE with ``tc`` (root; uses
``hvd_compress.bench.netns`` from the step benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hvd_compress.bench.common import write_json

PAPER = {
    "gradiveq_vs_uncompressed": 5.25,
    "gradiveq_vs_qsgd4": 2.0,
    "source": "Yu et al. 2018, ResNet-32/CIFAR-100, 6 CPU nodes: aggregation 850 s -> 162 s per "
    "500 iterations (5.25x); about 2x less than 4-bit QSGD (time to converge 90k s QSGD "
    "vs 76k s GradiVeQ end to end)",
}


def resnet32_conv_shapes():
    """The conv kernels of ResNet-32 for CIFAR (He et al.): 3 stages x 5 blocks x 2 convs + stem."""
    shapes = [(16, 3, 3, 3)]
    c_in = 16
    for width in (16, 32, 64):
        for block in range(5):
            shapes.append((width, c_in, 3, 3))
            shapes.append((width, width, 3, 3))
            c_in = width
    return shapes


def synthetic_gradients(codec, shapes, rank, steps, ratio=8, noise_share=0.003, seed=0):
    """Per step, a dict name -> gradient whose slices live near a ``K/ratio``-dim subspace."""
    from hvd_compress.torch.codecs.gradiveq import from_slices

    layers = []
    for i, shape in enumerate(shapes):
        f, p, d, k, s = codec.geometry(shape)
        g = torch.Generator().manual_seed(seed * 1000 + i)
        dim = max(1, k // ratio)
        basis = torch.linalg.qr(torch.randn(k, dim, generator=g))[0]
        mean = 0.1 * torch.randn(k, generator=g)
        sigma = (noise_share * dim / k) ** 0.5
        layers.append((f"conv{i}", shape, basis, mean, sigma, s, dim))
    out = []
    for step in range(steps):
        g = torch.Generator().manual_seed(10_000 * (rank + 1) + step)
        grads = {}
        for name, shape, basis, mean, sigma, s, dim in layers:
            slices = (
                mean
                + torch.randn(s, dim, generator=g) @ basis.t()
                + sigma * torch.randn(s, basis.shape[0], generator=g)
            )
            grads[name] = from_slices(slices, shape).view(shape)
        out.append(grads)
    return out


def _timed_steps(exchange, grads, steps, offset=0):
    from hvd_compress.torch.exchange import Driver

    times = []
    for t in range(steps):
        batch = grads[(offset + t) % len(grads)]
        t0 = time.perf_counter()
        driver = Driver()
        for name, g in batch.items():
            driver.start(name, exchange.average(name, g))
        driver.finish()
        times.append(time.perf_counter() - t0)
    return times


def worker(args):
    import horovod.torch as hvd
    import hvd_compress.torch as hc
    from hvd_compress.torch.collectives import HorovodCollectives
    from hvd_compress.torch.exchange import Exchange, WireStats

    hvd.init()
    torch.set_num_threads(args.threads)
    comm = HorovodCollectives()
    shapes = resnet32_conv_shapes()
    gvq_spec = (
        f"gradiveq:warmup_steps=0,sample_steps={args.sample_steps},compress_steps=1000000," f"sampler=none,min_numel=0"
    )
    layout = hc.from_spec(gvq_spec)
    grads = synthetic_gradients(layout, shapes, hvd.rank(), args.distinct)
    values = sum(g.numel() for g in grads[0].values())
    rows = []

    def bench(label, spec, warm, note=""):
        codec = hc.from_spec(spec)
        stats = WireStats()
        ex = Exchange(codec, comm, label=label, stats=stats)
        warm_times = _timed_steps(ex, grads, warm)
        stats.reset()
        times = _timed_steps(ex, grads, args.steps, offset=warm)
        snap = stats.snapshot().get(label, {})
        row = {
            "codec": label,
            "spec": spec,
            "note": note,
            "ms_per_step": 1000 * statistics.median(times),
            "ms_per_step_mean": 1000 * statistics.mean(times),
            "sent_bytes_per_step": snap.get("sent_bytes", 0.0) / args.steps,
            "payload_bytes_per_step": snap.get("payload_bytes", 0) / args.steps,
            "bits_per_value": snap.get("bits_per_value"),
            "values": values,
        }
        rows.append(row)
        return codec, row, warm_times

    bench("none (fp32)", "none:min_numel=0", args.warmup)
    _, qsgd_row, _ = bench("qsgd 4-bit", "qsgd:bits=4,bucket_size=512,min_numel=0", args.warmup)
    codec, gvq_row, warm_times = bench("gradiveq compressed phase", gvq_spec, args.sample_steps + args.warmup)
    sampling = warm_times[: args.sample_steps]
    fit_ms = 1000 * (sampling[-1] - statistics.median(sampling[:-1]))  # the step that ran the PCA
    rep = codec.compression_report()
    gvq_row["ratio_k_over_d"] = rep["_total"]["ratio"]
    gvq_row["mean_layer_ratio"] = rep["_total"]["mean_layer_ratio"]
    gvq_row["note"] = f"K/d = {rep['_total']['ratio']:.2f} (values / compressed values)"
    cycle_ms = (100 * qsgd_row["ms_per_step"] + max(fit_ms, 0.0) + 400 * gvq_row["ms_per_step"]) / 500
    cycle_bytes = (100 * qsgd_row["sent_bytes_per_step"] + 400 * gvq_row["sent_bytes_per_step"]) / 500
    rows.append(
        {
            "codec": "gradiveq cycle 100+400",
            "spec": gvq_spec,
            "ms_per_step": cycle_ms,
            "sent_bytes_per_step": cycle_bytes,
            "fit_ms": fit_ms,
            "values": values,
            "note": "100 QSGD-4 sampling steps + PCA + 400 compressed steps, amortized",
        }
    )
    bench(
        f"powersgd rank {args.rank}",
        f"powersgd:rank={args.rank},start_iter=0,min_numel=0",
        args.warmup,
        note="rank-r factors P, Q per kernel (out x in*kh*kw)",
    )
    # every rank took part; rank 0 reports (times differ a little per rank; rank 0's are reported)
    if hvd.rank() == 0:
        Path(args.out).write_text(
            json.dumps({"world_size": hvd.size(), "rows": rows, "layers": len(shapes), "values": values}, indent=1)
        )
    hvd.shutdown()


def _rate(text):
    try:
        from hvd_compress.bench.netns import parse_rate

        return parse_rate(text)
    except ImportError:
        import re

        m = re.fullmatch(r"\s*([0-9.]+)\s*([kmg]?)bit\s*", text.lower())
        if not m:
            raise SystemExit(f"bad link rate {text!r}: use e.g. 1gbit, 100mbit")
        return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def format_table(result, model_links):
    rows = result["rows"]
    base = next(r for r in rows if r["codec"].startswith("none"))
    qsgd = next(r for r in rows if r["codec"].startswith("qsgd"))
    head = f"{'codec':<28} {'bytes sent/step':>15} {'ms/step':>8} {'vs fp32':>8} {'vs QSGD-4':>9}"
    for name, _ in model_links:
        head += f" | {'ms @' + name:>11} {'vs fp32':>8} {'vs QSGD-4':>9}"
    where = f"loopback shaped to {result['link']} (tc)" if result.get("link") else "unshaped loopback"
    lines = [
        f"Aggregation per step: {result['layers']} ResNet-32 conv kernels ({result['values']:,} values), "
        f"{result['world_size']} workers, {where}, median of timed steps",
        head,
        "-" * len(head),
    ]

    def modeled(r, rate):
        return r["ms_per_step"] + 1000 * 8 * r["sent_bytes_per_step"] / rate

    for r in rows:
        line = (
            f"{r['codec']:<28} {r['sent_bytes_per_step']:>15,.0f} {r['ms_per_step']:>8.2f} "
            f"{base['ms_per_step'] / r['ms_per_step']:>7.2f}x {qsgd['ms_per_step'] / r['ms_per_step']:>8.2f}x"
        )
        for _, rate in model_links:
            t = modeled(r, rate)
            line += f" | {t:>11.2f} {modeled(base, rate) / t:>7.2f}x {modeled(qsgd, rate) / t:>8.2f}x"
        lines.append(line)
    lines.append(
        f"paper (GradiVeQ): {PAPER['gradiveq_vs_uncompressed']}x less aggregation time than "
        f"uncompressed, about {PAPER['gradiveq_vs_qsgd4']:g}x less than QSGD-4 ({PAPER['source']})"
    )
    gvq = next(r for r in rows if r["codec"].startswith("gradiveq compressed"))
    lines.append(
        f"GradiVeQ reached K/d = {gvq['ratio_k_over_d']:.2f} on these gradients (paper's average: 8). "
        f"'vs' columns: how many times less time than fp32 / QSGD-4."
    )
    if model_links:
        lines.append("ms @RATE: measured + bytes sent / RATE (modeled transfer, not overlapped, no latency)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--np", type=int, default=2, help="workers (horovodrun -np)")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per codec")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per codec first")
    ap.add_argument("--sample-steps", type=int, default=10, help="GradiVeQ sampling steps before timing")
    ap.add_argument("--rank", type=int, default=2, help="PowerSGD rank")
    ap.add_argument("--distinct", type=int, default=6, help="distinct gradient sets cycled through")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument(
        "--model-link", default="1gbit,100mbit", help="comma-separated rates for the modeled columns ('' for none)"
    )
    ap.add_argument("--link", help="run inside a network namespace with loopback shaped to this rate (root)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model_links = [(t.strip(), _rate(t)) for t in args.model_link.split(",") if t.strip()]
    out = Path(tempfile.mkdtemp(prefix="hvdc-agg-")) / "result.json"
    cmd = [
        str(Path(sys.executable).parent / "horovodrun"),
        "-np",
        str(args.np),
        "--gloo",
        sys.executable,
        "-m",
        "hvd_compress.bench.aggregation",
        "--worker",
        "--out",
        str(out),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--sample-steps",
        str(args.sample_steps),
        "--rank",
        str(args.rank),
        "--distinct",
        str(args.distinct),
        "--threads",
        str(args.threads),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    link = None
    if args.link:
        try:
            from hvd_compress.bench.netns import NamespaceUnavailable, ShapedNamespace
        except ImportError:
            raise SystemExit(
                "--link needs hvd_compress.bench.netns (the shaped-link helper of the step "
                "benchmark), which this installation lacks; use --model-link instead"
            )
        try:
            link = ShapedNamespace(_rate(args.link))
        except NamespaceUnavailable as exc:
            raise SystemExit(f"--link: {exc}")
    if link is not None:
        with link:
            proc = subprocess.run(link.command(cmd), env=env, capture_output=True, text=True, timeout=args.timeout)
    else:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0 or not out.exists():
        sys.stderr.write((proc.stdout + proc.stderr)[-6000:])
        raise SystemExit(f"aggregation benchmark failed (exit {proc.returncode})")
    result = json.loads(out.read_text())
    result.update(
        {
            "command": " ".join(
                ["python -m hvd_compress.bench.aggregation"] + (argv if argv is not None else sys.argv[1:])
            ),
            "link": args.link,
            "model_links": [n for n, _ in model_links],
            "paper": PAPER,
        }
    )
    print(format_table(result, model_links))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    main()
