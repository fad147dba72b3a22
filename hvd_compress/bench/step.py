"""``python -m hvd_compress.bench step``: training step time over a rate-limited link, per codec.

Runs the training step of a communication-bound model (default: an MLP 1024-4096-4096-1024-10,
25.2M parameters; ``--model cnn``: a small conv net) under ``horovodrun -np N --gloo`` inside a
network namespace whose loopback is shaped with ``tc`` (token bucket), once per codec plus
``none`` (Horovod's fp32 allreduce) and ``hvd-fp16`` (Horovod's own ``Compression.fp16``), all
through the stock ``hvd.DistributedOptimizer(compression=...)``. Per codec it reports:

* ``step_time_s``: median of the timed steps after warm-up (the slowest rank's median);
* ``bytes_per_step``: bytes per step per worker measured on the interface (the namespace's
  ``lo`` ``tx_bytes`` over the timed steps, divided by N), beside ``nominal_bytes_per_step`` (what
  the codec's payloads and the collectives' algorithms predict: ``wire_stats()`` for hvd_compress
  codecs, ``2 (N-1)/N x bytes`` for Horovod's ring allreduce);
* ``codec_share``: the fraction of the step spent inside the codec's encode/decode/aggregate.

The link model. All workers share one loopback, so ``tc`` on ``lo`` limits their *total* traffic.
``--link RATE`` shapes ``lo`` to RATE: the N workers share one RATE medium (a busy uplink, one
NIC behind several GPUs). ``--per-worker`` shapes ``lo`` to ``N x RATE`` instead, the aggregate of N
full-duplex RATE links, which is what a ring allreduce, an alltoall or an allgather (every worker
sending and receiving at once) sees on a switch of RATE ports; there the model's compute and the
codecs' CPU time weigh more. No propagation delay is added (this kernel may lack ``netem``).

Needs root (``ip netns``, ``tc``); without it the command says so and exits with status 2. The
namespace is always deleted, also on failure or Ctrl-C.

Examples::

    python -m hvd_compress.bench step --link 1gbit --np 4 --json bench/results/step-1gbit.json
    python -m hvd_compress.bench step --link 1gbit,10gbit --np 4 --plot docs/bench/step-vs-link.png

JSON: ``{"rows": [{"codec": "none", "link": "1gbit", "step_time_s": .., "bytes_per_step": ..,
"nominal_bytes_per_step": .., "codec_share": .., ...}, ...], "np": 4, "model": "mlp", ...}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import List

from hvd_compress.bench._step_worker import BASELINES, HC, UNFUSED, split_spec
from hvd_compress.bench.cluster import add_launch_arguments
from hvd_compress.bench.common import write_json
from hvd_compress.bench.netns import NamespaceUnavailable, ShapedNamespace, check_available, format_rate, parse_rate
from hvd_compress.bench.step_hosts import main_hosts
from hvd_compress.bench.step_job import horovodrun_path, run_job  # noqa: F401 (re-exported)

DEFAULT_CODECS = [
    "fp16",
    "bf16",
    "qsgd",
    "qsgd:bits=8",
    "terngrad",
    "onebit",
    "efsign",
    "signsgd",
    "topk",
    "doublesqueeze",
]


# Codecs whose defaults stay uncompressed for thousands of steps get settings that compress from the
# first steps, so the few warm-up steps of this benchmark reach their compressed phase.
SHORT_SCHEDULE = {
    "powersgd": "powersgd:rank=2,start_iter=0",
    "gradiveq": "gradiveq:warmup_steps=0,sample_steps=1,compress_steps=1000000",
}


SKIPPED = {
    "none": "the fp32 baseline row",
    "lattice": "SwarmSGD's gossip codec: it decodes against the receiver's model, no allreduce step",
}


def default_codecs() -> List[str]:
    """``none``, ``hvd-fp16``, then every built-in codec (our ``none`` is Horovod's fp32 path)."""
    from hvd_compress.core.registry import every_builtin_codec

    return BASELINES + every_builtin_codec(DEFAULT_CODECS + list(SHORT_SCHEDULE.values()), SKIPPED)


def format_table(result: dict) -> str:
    lines = []
    for link in result["links"]:
        rows = [r for r in result["rows"] if r["link"] == link]
        if not rows:
            continue
        fp32 = next((r for r in rows if r["codec"] == "none"), None)
        fp16 = next((r for r in rows if r["codec"] == "hvd-fp16"), None)
        head = (
            f"{'codec':<34} {'ms/step':>9} {'vs fp32':>8} {'vs hvd16':>8} {'MB/step':>9} "
            f"{'nominal':>9} {'meas/nom':>8} {'bits/v':>7} {'codec%':>7} {'coll/step':>9}"
        )
        scope = "per worker" if rows[0]["lo_rate_bits"] != rows[0]["link_bits"] else "shared"
        lines.append(
            f"link {link} {scope} (lo shaped to {format_rate(rows[0]['lo_rate_bits'])}), "
            f"{result['np']} workers, model {result['model']} ({rows[0]['params'] / 1e6:.1f}M params, "
            f"batch {rows[0]['batch']}/worker), compute alone {1000 * rows[0]['compute_time_s']:.0f} ms/step"
        )
        lines.append(head)
        lines.append("-" * len(head))
        for r in rows:
            vs32 = fp32["step_time_s"] / r["step_time_s"] if fp32 else None
            vs16 = fp16["step_time_s"] / r["step_time_s"] if fp16 else None
            share = r.get("codec_share")
            coll = r.get("collectives_per_step")
            lines.append(
                f"{r['label'][:34]:<34} {1000 * r['step_time_s']:9.1f} "
                f"{(f'{vs32:7.2f}x' if vs32 else '-'):>8} {(f'{vs16:7.2f}x' if vs16 else '-'):>8} "
                f"{r['bytes_per_step'] / 1e6:9.2f} {r['nominal_bytes_per_step'] / 1e6:9.2f} "
                f"{r['bytes_vs_nominal']:8.3f} {(r['bits_per_value'] or 0):7.2f} "
                f"{(f'{100 * share:6.1f}%' if share is not None else '-'):>7} "
                f"{(f'{coll:9.0f}' if coll is not None else '-'):>9}"
            )
        best = min((r for r in rows if r["codec"] not in BASELINES), key=lambda r: r["step_time_s"], default=None)
        if best and fp32 and fp16:
            lines.append(
                f"best: {best['label']}: {fp32['step_time_s'] / best['step_time_s']:.2f}x faster than "
                f"fp32, {fp16['step_time_s'] / best['step_time_s']:.2f}x faster than Horovod fp16"
            )
        lines.append("")
    lines.append(
        "MB/step: bytes each worker sent per step, measured on the interface (lo tx_bytes / N); "
        "nominal: payload bytes x collective algorithm; codec%: share of the step inside encode/decode; "
        "coll/step: hvd_compress's collectives per step ([unfused]: one per tensor and round)."
    )
    return "\n".join(lines)


def short_label(spec: str) -> str:
    """A legend-sized name: the spec, or just the codec's name when the spec is long."""
    return spec if len(spec) <= 18 else spec.split(":", 1)[0]


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    links = sorted(set(r["link_bits"] for r in rows))
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    if len(links) > 1:
        colors = plt.get_cmap("tab20").colors
        markers = "osD^v<>p*hX"
        for i, c in enumerate(codecs):
            pts = sorted((r["link_bits"], r["step_time_s"]) for r in rows if r["codec"] == c)
            label = next(r["label"] for r in rows if r["codec"] == c) if c in BASELINES else short_label(c)
            style = "--" if c in BASELINES else "-"
            ax.plot(
                [p[0] / 1e9 for p in pts],
                [p[1] for p in pts],
                style,
                marker=markers[i % len(markers)],
                color="black" if c == "none" else colors[i % len(colors)],
                label=label,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(
            "link rate (Gbit/s)" + (" per worker" if result.get("link_model", "").startswith("per") else ", shared")
        )
        ax.set_ylabel("step time (s)")
    else:
        labels = [next(r["label"] for r in rows if r["codec"] == c) for c in codecs]
        times = [next(r["step_time_s"] for r in rows if r["codec"] == c) for c in codecs]
        ax.barh(labels, times, color=["grey" if c in BASELINES else "C0" for c in codecs])
        ax.invert_yaxis()
        ax.set_xlabel("step time (s)")
    ax.set_title(f"{result['model']} step, {result['np']} workers (horovodrun --gloo, tc-shaped loopback)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if len(links) > 1:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hvd_compress.bench step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--link", required=True, help="link rate, e.g. 1gbit; several: 1gbit,10gbit")
    ap.add_argument("--np", type=int, default=4, help="workers (default 4)")
    add_launch_arguments(
        ap,
        "emulated hosts (netns + sshd each, bench/cluster.py); > 1: horovodrun -H over ssh, "
        "--link is each host's NIC, bytes counted between hosts",
    )
    ap.add_argument(
        "--model",
        choices=["mlp", "deepmlp", "cnn", "resnet"],
        default="mlp",
        help="resnet: a ResNet-50-shaped stack, 161 parameter tensors (see --unfused); deepmlp: "
        "50 dense layers, 100 parameter tensors, 7.0M parameters, little compute",
    )
    ap.add_argument(
        "--unfused",
        action="store_true",
        help="also run every hvd_compress codec tensor by tensor (HVD_COMPRESS_BUCKET_BYTES=0), "
        "beside its fused row",
    )
    ap.add_argument(
        "--hc",
        action="store_true",
        help="also run every hvd_compress codec through hc.DistributedOptimizer (buckets "
        "started from gradient hooks during backward), beside the stock-API row; a "
        "single spec can ask for it with the suffix @hc",
    )
    ap.add_argument("--width", type=int, default=0, help="hidden width (mlp 4096, deepmlp 372) or channels (cnn, 64)")
    ap.add_argument(
        "--codecs", default=None, help="';'-separated: none, hvd-fp16 and hvd_compress specs (default: all)"
    )
    ap.add_argument("--steps", type=int, default=5, help="timed steps per codec (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per codec first")
    ap.add_argument("--batch", type=int, default=16, help="samples per worker per step")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    ap.add_argument(
        "--bucket-mb",
        type=float,
        default=0.0,
        help="fused rows: bucket size in MB of fp32 gradient (default: HVD_COMPRESS_BUCKET_BYTES's 25 MB)",
    )
    ap.add_argument(
        "--per-worker",
        action="store_true",
        help="RATE is each worker's link: shape lo to N x RATE (default: lo = RATE, shared)",
    )
    ap.add_argument(
        "--no-thp",
        dest="thp",
        action="store_false",
        help="do not set THP_MEM_ALLOC_ENABLE=1 (torch's huge pages for large tensors) in workers",
    )
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per horovodrun job")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--plot", help="write a PNG: step time against link rate (bars for one rate)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.hosts > 1:
        args.np = args.hosts * args.per_host
    if args.np < 2:
        ap.error("--np must be >= 2")
    try:
        rates = [(t.strip(), parse_rate(t)) for t in args.link.split(",") if t.strip()]
    except ValueError as exc:
        ap.error(str(exc))
    codecs = [c.strip() for c in args.codecs.split(";") if c.strip()] if args.codecs else default_codecs()
    from hvd_compress.torch import from_spec

    for c in codecs:
        if c not in BASELINES:
            if getattr(
                from_spec(split_spec(c)[0]), "needs_reference", False
            ):  # bad specs fail before any namespace exists
                ap.error(
                    f"{c!r} is a gossip codec (decodes against the receiver's model); benchmark it "
                    "with `python -m hvd_compress.bench swarm`"
                )
    if args.hc:
        codecs = [v for c in codecs for v in ([c] if c in BASELINES or HC in c else [c, c + HC])]
    if args.unfused:
        codecs = [v for c in codecs for v in ([c] if c in BASELINES or c.endswith(UNFUSED) else [c, c + UNFUSED])]
    if args.hosts > 1:
        return main_hosts(args, rates, codecs, argv)
    try:
        check_available()
    except NamespaceUnavailable as exc:
        print(f"hvd_compress.bench step: {exc}", file=sys.stderr)
        return 2
    result = {
        "np": args.np,
        "model": args.model,
        "links": [r[0] for r in rates],
        "link_model": "per-worker (lo = N x RATE)" if args.per_worker else "shared (lo = RATE)",
        "steps": args.steps,
        "warmup": args.warmup,
        "threads_per_worker": args.threads,
        "bucket_mb": args.bucket_mb,
        "cpu_count": os.cpu_count(),
        "thp": args.thp,
        "command": "python -m hvd_compress.bench step " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": [],
    }
    try:
        lo0 = rates[0][1] * (args.np if args.per_worker else 1)
        with ShapedNamespace(lo0) as ns:
            for text, bits in rates:
                lo = bits * (args.np if args.per_worker else 1)
                ns.set_rate(lo)
                if not args.quiet:
                    print(f"== link {text}: {ns.qdisc}", file=sys.stderr, flush=True)
                with tempfile.TemporaryDirectory(prefix="hvdc-step-") as tmp:
                    rows = run_job(ns, args, codecs, Path(tmp))
                for r in rows:
                    r.update({"link": text, "link_bits": bits, "lo_rate_bits": lo})
                result["rows"] += rows
    except NamespaceUnavailable as exc:
        print(f"hvd_compress.bench step: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    write_json(args.json, result)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
