"""One ``horovodrun`` of the step benchmark's worker (``hvd_compress.bench._step_worker``) over a
list of codecs: in a shaped network namespace (``bench step``) or across an emulated cluster's
hosts (``bench step --hosts``, :mod:`hvd_compress.bench.step_hosts`). Both commands import it from
here.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

from hvd_compress.bench.netns import ShapedNamespace

REPO = Path(__file__).resolve().parents[2]


def horovodrun_path() -> str:
    cand = Path(sys.executable).parent / "horovodrun"
    if cand.exists():
        return str(cand)
    found = shutil.which("horovodrun")
    if not found:
        raise SystemExit("horovodrun not found next to this Python or on PATH")
    return found


def run_job(ns: ShapedNamespace, args, codecs: List[str], out_dir: Path, cluster=None, extra_env=None) -> List[dict]:
    """One ``horovodrun`` over every codec: in ``ns`` (shaped lo), or across ``cluster``'s hosts."""
    worker = [
        sys.executable,
        "-m",
        "hvd_compress.bench._step_worker",
        "--out",
        str(out_dir),
        "--model",
        args.model,
        "--codecs",
        ";".join(codecs),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--iface",
        "lo",
        "--threads",
        str(args.threads),
    ]
    if args.width:
        worker += ["--width", str(args.width)]
    if getattr(args, "bucket_mb", 0):
        worker += ["--bucket-mb", str(args.bucket_mb)]
    if cluster is None:
        cmd = ns.command([horovodrun_path(), "-np", str(args.np), "--gloo", "--network-interface", "lo"] + worker)
    else:
        worker += ["--iface", "eth0", "--per-host-counter"]
        launch = cluster.horovodrun_args(args.per_host, controller=getattr(args, "controller", "gloo"))
        cmd = cluster.command("host1", [horovodrun_path(), *launch] + worker)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(
        {
            "HOROVOD_GLOO_IFACE": "lo",
            "OMP_NUM_THREADS": str(args.threads),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if args.thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    if cluster is not None:
        env = cluster.env(env)
    env.update(extra_env or {})
    proc = subprocess.Popen(
        cmd, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    tail: List[str] = []
    deadline = time.monotonic() + args.timeout
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"horovodrun ran past --timeout {args.timeout}s")
            if not sel.select(timeout=1.0):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None:
                    break
                continue
            tail = (tail + [line])[-60:]
            if "[bench step]" in line and not args.quiet:
                print(line.rstrip().split("[bench step] ", 1)[-1], file=sys.stderr, flush=True)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"horovodrun failed (exit {proc.returncode}):\n" + "".join(tail))
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob("row.*.json"))]
