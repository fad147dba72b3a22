"""Spec: the GPU setup (ci/setup.sh + ci/setup_gpu.sh) and the one-shot GPU check (ci/gpu_check.sh)
work where they can be checked without a GPU.

* The scripts parse (``bash -n``).
* ci/setup.sh on a CPU machine is what it was: with a matching stamp it says "environment up to
  date" and installs nothing; the stamp has no GPU part. On a machine whose ``nvidia-smi -L`` lists
  a GPU it takes the GPU branch (simulated here with stand-ins for nvidia-smi, the venv's python
  and horovodrun that log their arguments): the CUDA build of torch (``torch===V``, never a
  ``+cpu`` wheel), no Triton pin, nvcc from pip when there is none, the NCCL paths exported, the
  Horovod build with ``--gpu``, a stamp ending in ``gpu=nccl``, and a clear failure when
  ``horovodrun --check-build`` shows ``[ ] NCCL``. HVD_COMPRESS_CPU_ONLY=1 opts out.
* ci/gpu_check.sh without CUDA stops at once with exit status 77 and "skipped: no CUDA"; a bad
  GPU_CHECK_DEVICE is exit status 2.
* Its CPU dry mode runs the DDP driver end to end (2 Gloo ranks; marked ``mp``).
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["ci/setup.sh", "ci/setup_gpu.sh", "ci/gpu_check.sh", "ci/test.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    out = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$FAKE_LOG"
prev=""
for a in "$@"; do [ "$prev" = -r ] && echo "requirements: $(tr '\\n' ' ' < "$a")" >> "$FAKE_LOG"; prev=$a; done
case "$*" in
  -) cat >/dev/null; echo "cuda-toolkit[nvcc,cccl]==13.0.3" ;;
  *find_cuda_home*) exit 1 ;;  # no CUDA toolkit on this machine
  *--print-env*) printf 'export HOROVOD_NCCL_INCLUDE=/fake/nvidia/nccl/include\\nexport HOROVOD_NCCL_LIB=/fake/links\\n'
                 printf 'export HOROVOD_NCCL_LINK=SHARED\\nexport HOROVOD_CUDA_HOME=/fake/nvidia/cu13\\n' ;;
esac
exit 0
"""


def _fake_setup_tree(tmp_path, check_build):
    """A copy of ci/ whose .venv holds logging stand-ins, and a bin/ to put first on PATH."""
    root = tmp_path / "repo"
    (root / "ci").mkdir(parents=True)
    for name in ("setup.sh", "setup_gpu.sh", "requirements.txt"):
        (root / "ci" / name).write_text((ROOT / "ci" / name).read_text())
    _exe(root / ".venv/bin/python", FAKE_PYTHON)
    _exe(root / ".venv/bin/horovodrun", f"#!/usr/bin/env bash\nprintf '{check_build}'\n")
    return root


def _run_setup(root, tmp_path, gpus, extra_env=None):
    """``bash ci/setup.sh`` in ``root``; ``gpus``: what the stand-in ``nvidia-smi -L`` prints."""
    bindir = tmp_path / "bin"
    _exe(bindir / "nvidia-smi", f"#!/usr/bin/env bash\nprintf '{gpus}'\n")
    log = tmp_path / "calls.log"
    log.write_text("")
    env = dict(
        os.environ,
        PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
        FAKE_LOG=str(log),
        HVD_COMPRESS_CACHE=str(tmp_path / "cache"),
        **(extra_env or {}),
    )
    for k in ("HOROVOD_CUDA_HOME", "HOROVOD_NCCL_HOME", "HOROVOD_NCCL_INCLUDE", "HVD_COMPRESS_CPU_ONLY"):
        if not extra_env or k not in extra_env:
            env.pop(k, None)
    out = subprocess.run(["bash", str(root / "ci/setup.sh")], capture_output=True, text=True, env=env, timeout=120)
    return out, log.read_text()


CHECK_OK = "[X] PyTorch\\n[X] TensorFlow\\n[X] Gloo\\n"
CHECK_NCCL = CHECK_OK + "[X] NCCL\\n"


def _cpu_stamp(root):
    reqs = subprocess.run(
        f"cat {root}/ci/requirements.txt | md5sum | cut -c1-8", shell=True, capture_output=True, text=True
    ).stdout.strip()
    mpi = int(subprocess.run(["bash", "-c", "command -v mpicxx"], capture_output=True).returncode == 0)
    return f"torch=2.13.0 tf=2.21.0 horovod=0.28.1 mpi={mpi} reqs={reqs}"


def test_setup_on_a_cpu_machine_is_unchanged(tmp_path):
    root = _fake_setup_tree(tmp_path, CHECK_OK)
    stamp = _cpu_stamp(root)
    (root / ".venv/.hvd_compress_setup").write_text(stamp + "\n")
    out, calls = _run_setup(root, tmp_path, gpus="")  # nvidia-smi present, no GPU listed
    assert out.returncode == 0, out.stderr
    assert f"environment up to date ({stamp})" in out.stderr
    assert "pip" not in calls and "horovod_build" not in calls  # nothing installed or built
    assert "-m hvd_compress._native --build" in calls


def test_setup_on_a_gpu_machine_installs_cuda_torch_and_builds_horovod_with_nccl(tmp_path):
    root = _fake_setup_tree(tmp_path, CHECK_NCCL)
    (root / ".venv/.hvd_compress_setup").write_text(_cpu_stamp(root) + "\n")  # a CPU stamp does not pass
    out, calls = _run_setup(root, tmp_path, gpus="GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-x)\\n")
    assert out.returncode == 0, out.stderr + calls
    assert "environment up to date" not in out.stderr
    installs = [c for c in calls.splitlines() if "pip install" in c and "torch" in c]
    assert installs and "torch===2.13.0" in installs[0] and "torch==2.13.0" not in installs[0]
    reqs = [c for c in calls.splitlines() if c.startswith("requirements: ")]
    assert reqs and "pytest" in reqs[0] and "triton" not in reqs[0]  # torch's CUDA wheel pins its Triton
    assert any("cuda-toolkit[nvcc,cccl]==13.0.3" in c for c in calls.splitlines())  # no nvcc on this machine
    assert "hvd_compress.horovod_build --gpu" in calls and "--print-env" in calls
    build = [c for c in calls.splitlines() if "horovod_build" in c and "--print-env" not in c]
    assert build and "--gpu" in build[-1]
    assert "HOROVOD_NCCL_INCLUDE=/fake/nvidia/nccl/include" in out.stderr
    assert (root / ".venv/.hvd_compress_setup").read_text().strip().endswith(" gpu=nccl")


def test_setup_fails_clearly_when_horovod_lacks_nccl_on_a_gpu_machine(tmp_path):
    root = _fake_setup_tree(tmp_path, CHECK_OK)
    out, _ = _run_setup(root, tmp_path, gpus="GPU 0: NVIDIA H200 (UUID: GPU-y)\\n")
    assert out.returncode != 0
    assert "built without NCCL on a GPU machine" in out.stderr
    assert not (root / ".venv/.hvd_compress_setup").exists()


def test_cpu_only_opts_out_on_a_gpu_machine(tmp_path):
    root = _fake_setup_tree(tmp_path, CHECK_OK)
    out, calls = _run_setup(root, tmp_path, gpus="GPU 0: NVIDIA H100\\n", extra_env={"HVD_COMPRESS_CPU_ONLY": "1"})
    assert out.returncode == 0, out.stderr
    assert "torch==2.13.0" in calls and "torch===" not in calls and "--gpu" not in calls
    assert "gpu=" not in (root / ".venv/.hvd_compress_setup").read_text()


def _gpu_check(env_extra, tmp_path, timeout=60):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, **env_extra)
    return subprocess.run(
        ["bash", str(ROOT / "ci/gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(tmp_path),
    )


def test_gpu_check_without_cuda_stops_at_once_with_status_77(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the check would run")
    out = _gpu_check({}, tmp_path)
    assert out.returncode == 77, out.stdout + out.stderr
    assert "skipped: no CUDA" in out.stdout
    assert "skipped: no CUDA" in (tmp_path / "out/summary.txt").read_text()
    # with an nvidia-smi on PATH it asks torch, which sees no GPU: the same answer
    _exe(tmp_path / "bin/nvidia-smi", "#!/usr/bin/env bash\nexit 9\n")
    out = _gpu_check({"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}, tmp_path)
    assert out.returncode == 77 and "skipped: no CUDA" in out.stdout


def test_gpu_check_rejects_an_unknown_device(tmp_path):
    out = _gpu_check({"GPU_CHECK_DEVICE": "tpu"}, tmp_path)
    assert out.returncode == 2 and "must be cuda or cpu" in out.stdout


def test_gpu_check_dry_mode_runs_the_ddp_driver_end_to_end(tmp_path):
    """2 Gloo ranks on CPU, none and qsgd:bits=4, 30 steps (the GPU run: 300 on CUDA)."""
    out = _gpu_check(
        {"GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_STEPS": "ddp", "GPU_CHECK_DDP_STEPS": "30", "OMP_NUM_THREADS": "1"},
        tmp_path,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    summary = (tmp_path / "out/summary.txt").read_text()
    assert "ddp-accuracy: PASS" in summary and "exit status: 0" in summary
    import json

    report = json.loads((tmp_path / "out/ddp/ddp.json").read_text())
    assert report["backend"] == "gloo" and [r["codec"] for r in report["rows"]] == ["none", "qsgd:bits=4"]
    qsgd = report["rows"][1]
    assert qsgd["replicas_identical"] and qsgd["compressed_tensors"] == 3
    assert qsgd["sync"]["counted_steps"] == 10 and qsgd["sync"]["sites"]  # the CPU proxy saw the host reads
