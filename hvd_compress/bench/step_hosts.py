"""``python -m hvd_compress.bench step --hosts H --per-host P --link RATE``: the step benchmark
across emulated hosts (``hvd_compress.bench.cluster``), launched by ``horovodrun -H`` over ssh.

``--link`` is each host's NIC (tbf on both ends of its veth); ranks inside a host talk over their
own unshaped ``lo``. Per codec one row ``{"codec", "hierarchical", "step_time_s",
"inter_host_bytes_per_step", "nominal_inter_host_bytes_per_step", ...}``:

* ``none`` / ``hvd-fp16``: Horovod's fp32 and fp16 ring allreduce (``hierarchical: false``);
* ``none`` with ``hierarchical: "horovod"``: a second job with ``HOROVOD_HIERARCHICAL_ALLREDUCE=1``;
* hvd_compress codecs, flat (``hierarchical: false``): one compressed exchange among all ranks;
* the same codecs with ``hierarchical: true`` (``hvd_compress.torch.hierarchical``): fp32 average
  inside each host, the compressed exchange of a ``1/per_host`` shard across hosts, allgather
  inside the host (the first job runs with ``HOROVOD_DYNAMIC_PROCESS_SETS=1`` for its process sets).
  A codec given with an explicit ``hierarchical=`` runs as given, once.

``inter_host_bytes_per_step`` is measured: the sum over hosts of eth0's tx counter over the timed
steps (it includes Horovod's control plane, ~0.2-0.5 MB/s, negligible at the default 25M-parameter
model). ``nominal_inter_host_bytes_per_step`` is what the codec's payload and its exchange pattern
predict (``bench.cluster.inter_host_factor``).

Example::

    python -m hvd_compress.bench step --hosts 2 --per-host 2 --link 1gbit \\
        --codecs "onebit;qsgd:bits=4;topk:ratio=0.01" --json bench/results/step-hosts-1gbit.json
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import List

from hvd_compress.bench._step_worker import BASELINES
from hvd_compress.bench.common import write_json
from hvd_compress.bench.netns import NamespaceUnavailable
from hvd_compress.bench.step_job import run_job

HOST_DEFAULT_CODECS = ["onebit", "qsgd:bits=4", "topk:ratio=0.01"]


def flat_and_hierarchical(spec: str) -> List[str]:
    """``onebit`` -> ``["onebit:hierarchical=false", "onebit:hierarchical=true"]``; Horovod's own
    baselines and specs that already say ``hierarchical=`` stay as they are."""
    if spec in BASELINES or "hierarchical=" in spec:
        return [spec]
    sep = "," if ":" in spec else ":"
    return [f"{spec}{sep}hierarchical=false", f"{spec}{sep}hierarchical=true"]


def codec_is_hierarchical(spec: str) -> bool:
    """Whether the row's hvd_compress codec ran hierarchical (an explicit ``hierarchical=true``;
    ``auto`` rows are flat unless they say so, since the bench sets the mode explicitly)."""
    return "hierarchical=true" in spec.replace(" ", "").lower()


def format_hosts_table(result: dict) -> str:
    lines = []
    for link in result["links"]:
        rows = [r for r in result["rows"] if r["link"] == link]
        if not rows:
            continue
        lines.append(
            f"{result['hosts']} hosts x {result['per_host']} workers, each host's link {link}, model "
            f"{result['model']} ({rows[0]['params'] / 1e6:.1f}M params, batch {rows[0]['batch']}/worker), "
            f"compute alone {1000 * rows[0]['compute_time_s']:.0f} ms/step, horovodrun --{result.get('controller', 'gloo')}"
        )
        head = (
            f"{'codec':<34} {'hierarchical':>12} {'ms/step':>9} {'vs fp32':>8} {'inter-host MB/step':>18} "
            f"{'nominal':>9} {'meas/nom':>8}"
        )
        lines += [head, "-" * len(head)]
        fp32 = next((r for r in rows if r["codec"] == "none" and not r["hierarchical"]), None)
        for r in rows:
            nom = r.get("nominal_inter_host_bytes_per_step")
            ratio = r["inter_host_bytes_per_step"] / nom if nom else None
            vs = fp32["step_time_s"] / r["step_time_s"] if fp32 else None
            lines.append(
                f"{r['label'][:34]:<34} {str(r['hierarchical']).lower():>12} {1000 * r['step_time_s']:9.1f} "
                f"{(f'{vs:7.2f}x' if vs else '-'):>8} {r['inter_host_bytes_per_step'] / 1e6:18.2f} "
                f"{(f'{nom / 1e6:9.2f}' if nom else '-'):>9} "
                f"{(f'{ratio:8.3f}' if ratio else '-'):>8}"
            )
        lines.append("")
    lines.append(
        "inter-host MB/step: bytes that crossed hosts per step, all hosts' eth0 tx counters summed "
        "(includes Horovod's control plane); nominal: payload x exchange pattern."
    )
    return "\n".join(lines)


def main_hosts(args, rates, codecs: List[str], argv) -> int:
    from hvd_compress.bench.cluster import EmulatedCluster, check_available

    try:
        check_available()
    except NamespaceUnavailable as exc:
        print(f"hvd_compress.bench step: {exc}", file=sys.stderr)
        return 2
    if args.codecs is None:
        codecs = BASELINES + HOST_DEFAULT_CODECS
    codecs = [c for c in BASELINES if c not in codecs] + [v for c in codecs for v in flat_and_hierarchical(c)]
    result = {
        "hosts": args.hosts,
        "per_host": args.per_host,
        "controller": getattr(args, "controller", "gloo"),
        "np": args.np,
        "model": args.model,
        "links": [r[0] for r in rates],
        "steps": args.steps,
        "warmup": args.warmup,
        "command": "python -m hvd_compress.bench step " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": [],
    }
    jobs = [
        (codecs, {"HOROVOD_DYNAMIC_PROCESS_SETS": "1"}, False),
        (["none"], {"HOROVOD_HIERARCHICAL_ALLREDUCE": "1"}, "horovod"),
    ]
    try:
        for text, _bits in rates:
            with EmulatedCluster(hosts=args.hosts, link=text) as cluster:
                for job_codecs, env, hierarchical in jobs:
                    if not args.quiet:
                        print(
                            f"== {args.hosts} hosts, link {text}, hierarchical={hierarchical}",
                            file=sys.stderr,
                            flush=True,
                        )
                    with tempfile.TemporaryDirectory(prefix="hvdc-step-") as tmp:
                        rows = run_job(None, args, job_codecs, Path(tmp), cluster=cluster, extra_env=env)
                    for r in rows:
                        r.update({"link": text, "hierarchical": hierarchical or codec_is_hierarchical(r["codec"])})
                        if hierarchical:
                            r["label"] += " (HOROVOD_HIER.)"
                    result["rows"] += rows
    except NamespaceUnavailable as exc:
        print(f"hvd_compress.bench step: {exc}", file=sys.stderr)
        return 2
    print(format_hosts_table(result))
    write_json(args.json, result)
    return 0
