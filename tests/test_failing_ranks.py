"""A rank that fails mid-step ends the whole ``horovodrun`` job with an error, never a hang.

Real ``horovodrun -np 2 --gloo`` jobs (tests/mp/failing_rank.py). Each job runs under a
wall-clock limit; Horovod's stall check is shortened so a rank stuck in a collective would be
reported within seconds rather than minutes.
"""
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from launch import BIN, PYTHON, ROOT, _collect, _env

JOB_LIMIT_S = 90  # a hang fails the test after this, with the job's output


def run_failing_job(fault, frontend, codec="onebit"):
    out = Path(tempfile.mkdtemp(prefix="hvdc-fail-"))
    env = {**_env(), "HOROVOD_STALL_CHECK_TIME_SECONDS": "5", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "20"}
    cmd = [str(BIN / "horovodrun"), "-np", "2", "--gloo", PYTHON, str(ROOT / "tests/mp/failing_rank.py"),
           "--out", str(out), "--fault", fault, "--frontend", frontend, "--codec", codec]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=JOB_LIMIT_S, env=env, cwd=str(ROOT))
    except subprocess.TimeoutExpired as exc:
        tail = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"job hung past {JOB_LIMIT_S}s: {' '.join(cmd)}\n{tail[-6000:]}")
    return proc, _collect(out, 2, proc), time.monotonic() - start


@pytest.mark.timeout(JOB_LIMIT_S + 30)
@pytest.mark.parametrize("frontend", ["stock", "ours"])
def test_user_exception_on_one_rank_ends_every_rank(frontend):
    proc, ranks, _ = run_failing_job("user", frontend)
    assert proc.returncode != 0
    assert ranks[1]["type"] == "RuntimeError" and "injected user failure on rank 1" in ranks[1]["message"]
    # The waiting rank cannot know the other's exception; Horovod shuts it down and says where to look.
    assert ranks[0]["type"] == "HorovodInternalError", ranks[0]
    assert "exception on one of the ranks" in ranks[0]["message"]
    assert "injected user failure on rank 1" in proc.stdout + proc.stderr


@pytest.mark.timeout(JOB_LIMIT_S + 30)
@pytest.mark.parametrize("frontend,codec", [("stock", "onebit"), ("ours", "onebit"), ("stock", "qsgd:bits=4"),
                                            ("ours", "doublesqueeze:codec=onebit")])
def test_nan_on_one_rank_raises_the_same_error_on_every_rank(frontend, codec):
    proc, ranks, _ = run_failing_job("nan", frontend, codec)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert ranks[rank]["type"] == "FloatingPointError", ranks[rank]
        assert ranks[rank]["step"] == 3
        assert "holds NaN or Inf on at least one rank" in ranks[rank]["message"]
    assert ranks[0]["message"] == ranks[1]["message"]  # both name the same tensor
