"""Launch real multi-process jobs from tests: ``horovodrun`` (Gloo or MPI) and torch.distributed.

Each worker script writes its findings as JSON (one file per rank, ``{out}/rank{R}.json``); the
launcher returns ``{rank: dict}``. A hung job is killed at ``timeout`` and the test fails with the
job's output, so a deadlock shows up as a clear failure, never as a stuck CI run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYTHON = sys.executable


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def mpi_available() -> bool:
    if shutil.which("mpirun") is None:
        return False
    out = subprocess.run([str(BIN / "horovodrun"), "--check-build"], capture_output=True, text=True, env=_env())
    return "[X] MPI" in out.stdout.split("Available Tensor Operations")[0]


def _collect(out_dir: Path, np_: int, proc: subprocess.CompletedProcess):
    results = {}
    for r in range(np_):
        f = out_dir / f"rank{r}.json"
        if not f.exists():
            raise AssertionError(
                f"rank {r} wrote no result (exit {proc.returncode}).\n--- output tail ---\n"
                + (proc.stdout + proc.stderr)[-6000:]
            )
        results[r] = json.loads(f.read_text())
    return results


def _run(cmd, np_, out_dir, timeout, expect_ok=True, env=None):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or _env(), cwd=str(ROOT))
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        out = out.decode() if isinstance(out, bytes) else out
        raise AssertionError(f"job timed out after {timeout}s (a hang): {' '.join(map(str, cmd))}\n{out[-6000:]}")
    if expect_ok and proc.returncode != 0:
        raise AssertionError(
            f"job failed with exit {proc.returncode}: {' '.join(map(str, cmd))}\n" + (proc.stdout + proc.stderr)[-8000:]
        )
    return _collect(out_dir, np_, proc)


def horovodrun(
    np_: int, script: str, *args: str, timeout: float = 300, mpi: bool = False, out_dir: "str | None" = None
):
    """Run ``script`` (a path relative to the repo root) with ``horovodrun -np N``.

    The script receives ``--out DIR`` and must write ``DIR/rank{R}.json``.
    """
    out = Path(out_dir or tempfile.mkdtemp(prefix="hvdc-test-"))
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "horovodrun"), "-np", str(np_)]
    if mpi:
        cmd += ["--mpi", "--mpi-args=--allow-run-as-root --oversubscribe"]
    else:
        cmd += ["--gloo"]
    cmd += [PYTHON, str(ROOT / script), "--out", str(out), *args]
    return _run(cmd, np_, out, timeout)


def cluster_horovodrun(
    cluster,
    per_host: int,
    script: str,
    *args: str,
    timeout: float = 300,
    out_dir: "str | None" = None,
    controller: str = "gloo",
):
    """``horovodrun -H host1:P,host2:P --gloo`` (``controller="mpi"``: ``--mpi``, mpirun starting
    the other hosts' ranks through ssh) launched inside host1 of an
    ``hvd_compress.bench.cluster.EmulatedCluster``: the other hosts' ranks start over ssh."""
    out = Path(out_dir or tempfile.mkdtemp(prefix="hvdc-test-"))
    out.mkdir(parents=True, exist_ok=True)
    launch_args = cluster.horovodrun_args(per_host, controller=controller)
    cmd = cluster.command(
        cluster.hosts[0],
        [
            str(BIN / "horovodrun"),
            *launch_args,
            PYTHON,
            str(ROOT / script),
            "--out",
            str(out),
            *args,
        ],
    )
    return _run(cmd, per_host * len(cluster.hosts), out, timeout, env=cluster.env(_env()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(np_: int, script: str, *args: str, timeout: float = 300, out_dir: "str | None" = None):
    """Run ``script`` under torch.distributed (``torch.distributed.run``, Gloo, localhost)."""
    out = Path(out_dir or tempfile.mkdtemp(prefix="hvdc-test-"))
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={np_}",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(ROOT / script),
        "--out",
        str(out),
        *args,
    ]
    return _run(cmd, np_, out, timeout)


def cluster_torchrun(
    cluster, per_host: int, script: str, *args: str, timeout: float = 300, out_dir: "str | None" = None
):
    """``torchrun --nnodes H --nproc_per_node P`` started in every host of an
    ``hvd_compress.bench.cluster.EmulatedCluster``, as an operator starts it on each node of a
    cluster: one c10d rendezvous served from host1's address, Gloo over the hosts' eth0. Fails with
    every node's output when a node exits non-zero or the job outlives ``timeout`` (a hang)."""
    out = Path(out_dir or tempfile.mkdtemp(prefix="hvdc-test-"))
    out.mkdir(parents=True, exist_ok=True)
    endpoint = f"{cluster.addr[cluster.hosts[0]]}:{free_port()}"
    procs = []
    for host in cluster.hosts:
        cmd = cluster.command(
            host,
            [
                PYTHON,
                "-m",
                "torch.distributed.run",
                f"--nnodes={len(cluster.hosts)}",
                f"--nproc_per_node={per_host}",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint={endpoint}",
                "--rdzv_id=hvdc-test",
                str(ROOT / script),
                "--out",
                str(out),
                *args,
            ],
        )
        procs.append(
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster.env(_env()), cwd=str(ROOT)
            )
        )
    outputs, failed = [], False
    deadline = time.monotonic() + timeout
    for host, proc in zip(cluster.hosts, procs):
        try:
            text, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            text, _ = proc.communicate()
            failed = True
            text = f"[timed out after {timeout}s: a hang]\n{text}"
        failed |= proc.returncode != 0
        outputs.append(f"--- {host} (exit {proc.returncode}) ---\n{text[-4000:]}")
    if failed:
        raise AssertionError("torchrun across hosts failed:\n" + "\n".join(outputs))
    done = subprocess.CompletedProcess([], 0, "\n".join(outputs), "")
    return _collect(out, per_host * len(cluster.hosts), done)


def horovodrun_output(np_: int, argv, timeout: float = 300, env: "dict | None" = None) -> str:
    """``horovodrun -np N --gloo ARGV...`` for a script that writes no rank files (an unchanged user
    script): returns stdout + stderr; fails on a non-zero exit or at ``timeout`` (a hang)."""
    cmd = [str(BIN / "horovodrun"), "-np", str(np_), "--gloo", *map(str, argv)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT), env={**_env(), **(env or {})}
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        out = out.decode() if isinstance(out, bytes) else out
        raise AssertionError(f"job timed out after {timeout}s (a hang): {' '.join(cmd)}\n{out[-6000:]}")
    if proc.returncode != 0:
        raise AssertionError(
            f"job failed with exit {proc.returncode}: {' '.join(cmd)}\n" + (proc.stdout + proc.stderr)[-8000:]
        )
    return proc.stdout + proc.stderr
