"""Spec: a rank that fails mid-step ends the whole job with the cause in the log, never a hang.

``horovodrun -np 2 --gloo`` runs tests/mp/failing_rank.py; rank 1 fails at step 3 while rank 0 is
in (or entering) that step's compressed exchange. Nothing in the script catches the error, as in
a user's training loop. We check, per frontend and codec:

* ``--fault user`` (rank 1 raises ``RuntimeError``): the job exits non-zero; rank 1's traceback
  names the injected error; rank 0 leaves its pending collective with Horovod's shutdown error
  (``HorovodInternalError: Horovod has been shut down ... caused by an exception on one of the
  ranks``) instead of waiting for a peer that is gone.
* ``--fault nan`` (rank 1's loss is NaN, ``nonfinite="raise"`` by default): *both* ranks raise
  ``FloatingPointError`` naming the same parameter, so the rank with finite gradients does not
  step on NaN-averaged values.
* both ranks reached step 3 and neither finished.

The stall check is set short (HOROVOD_STALL_CHECK_TIME_SECONDS=5, shutdown at 20 s) so that even
a rank that never reaches the collective would be shut down well within the job's 120 s limit.
"""

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from launch import BIN, PYTHON, ROOT, _env

JOB_LIMIT_S = 120
CASES = [
    ("user", "stock", "onebit"),
    ("user", "hc", "qsgd:bits=4"),
    ("nan", "stock", "onebit"),
    ("nan", "hc", "doublesqueeze:codec=onebit"),
    ("nan", "hc", "powersgd:rank=2"),
]


def _run_failing_job(fault, frontend, codec):
    out = Path(tempfile.mkdtemp(prefix="hvdc-fail-"))
    env = {**_env(), "HOROVOD_STALL_CHECK_TIME_SECONDS": "5", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "20"}
    cmd = [
        str(BIN / "horovodrun"),
        "-np",
        "2",
        "--gloo",
        PYTHON,
        str(ROOT / "tests/mp/failing_rank.py"),
        "--out",
        str(out),
        "--fault",
        fault,
        "--frontend",
        frontend,
        "--codec",
        codec,
    ]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=JOB_LIMIT_S, env=env, cwd=str(ROOT))
    except subprocess.TimeoutExpired as exc:
        tail = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"job hung past {JOB_LIMIT_S}s after an injected {fault} fault:\n{tail[-6000:]}")
    return proc, out, time.monotonic() - start


def _rank_lines(log, rank):
    prefix = f"[{rank}]<stderr>:"
    return "\n".join(line[len(prefix) :] for line in log.splitlines() if line.startswith(prefix))


@pytest.mark.timeout(JOB_LIMIT_S + 30)
@pytest.mark.parametrize("fault,frontend,codec", CASES, ids=[f"{f}-{fe}-{c}" for f, fe, c in CASES])
def test_failing_rank_ends_every_rank_with_the_cause(fault, frontend, codec):
    proc, out, seconds = _run_failing_job(fault, frontend, codec)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"job succeeded despite an injected {fault} fault:\n{log[-4000:]}"
    for rank in (0, 1):
        assert (out / f"rank{rank}.step").read_text() == "3", f"rank {rank} did not reach step 3:\n{log[-4000:]}"
        assert not (out / f"rank{rank}.done").exists(), f"rank {rank} finished training"
    failed, peer = _rank_lines(log, 1), _rank_lines(log, 0)
    if fault == "user":
        assert "RuntimeError: injected failure on rank 1 at step 3" in failed, log[-4000:]
        assert "Horovod has been shut down" in peer and "exception on one of the ranks" in peer, log[-4000:]
    else:
        for rank, text in ((1, failed), (0, peer)):
            assert "FloatingPointError: hvd_compress: gradient '" in text, f"rank {rank}:\n{log[-4000:]}"
            assert "nonfinite='propagate'" in text, f"rank {rank}:\n{log[-4000:]}"
        name = failed.split("FloatingPointError: hvd_compress: gradient '")[1].split("'")[0]
        assert f"gradient '{name}'" in peer, f"ranks name different tensors:\n{log[-4000:]}"
    print(f"{fault}/{frontend}/{codec}: every rank exited in {seconds:.1f}s")
