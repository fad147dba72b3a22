"""Ray Train ``TorchTrainer`` with 2 CPU workers and the hvd_compress DDP hook (a separate file:
it starts a local Ray, which takes tens of seconds).

Runs ``examples/ray_train_torch.py`` as a subprocess in its own process group: the example shuts
Ray down in a ``finally``; if it hangs or dies, the test kills the whole group it started, so no
Ray process outlives the test.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("ray.train.torch", reason="Ray Train is not installed (pip install 'ray[train]')")


def _run_example(script, args, tmp_path, timeout):
    out = tmp_path / "rows.json"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        RAY_USAGE_STATS_ENABLED="0",
    )
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / script), *args, "--json", str(out), "--storage", str(tmp_path / "ray_results")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=str(tmp_path),
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"{script} timed out after {timeout}s:\n{output[-6000:]}")
    finally:
        try:  # anything of Ray's left in the group we started
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{output[-6000:]}"
    return json.loads(out.read_text()), output


def test_ray_torch_trainer_2_cpu_workers_onebit_within_1_point_of_uncompressed(tmp_path):
    result, output = _run_example(
        "examples/ray_train_torch.py", ["--codecs", "ddp,onebit", "--workers", "2"], tmp_path, timeout=600
    )
    rows = {r["codec"]: r for r in result["rows"]}
    base, onebit = rows["ddp"], rows["onebit"]
    assert base["accuracy"] > 0.95, output[-3000:]  # plain DDP reaches ~97% on digits
    assert 100 * (base["accuracy"] - onebit["accuracy"]) <= 1.0, (onebit, base)
    assert abs(onebit["bits_per_value"] - 1.0625) < 0.1  # 1 bit + two fp32 means per 1024 values
    # the checkpoint Ray merged from both workers holds each rank's hook state
    assert {"model.pt", "comm_hook.rank0.pt", "comm_hook.rank1.pt"} <= set(result["last_checkpoint"]["files"])
