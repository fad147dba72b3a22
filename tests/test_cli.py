"""`hvd-compress doctor` reports every piece with a fix for what is missing; `build-horovod --dry-run`
shows the plan and the cache key that ci/setup.sh's wheel cache uses, and the source patches apply."""

import io
import os
import sys
from pathlib import Path

import pytest

from hvd_compress import cli, horovod_build

SECTIONS = ["python", "torch", "tensorflow", "horovod", "native kernels", "triton", "nccl", "mpi"]


def test_doctor_lists_every_section():
    out = io.StringIO()
    sections = cli.doctor(out)
    text = out.getvalue()
    for name in SECTIONS:
        assert f"== {name}" in text
    assert [s.name.split(" (")[0] for s in sections] == SECTIONS
    horovod = next(s for s in sections if s.name == "horovod")
    if horovod.ok:  # the CI environment: Horovod built with Gloo, its flags printed
        assert any("gloo yes" in line for line in horovod.lines)


def test_doctor_names_the_fix_for_a_missing_horovod(monkeypatch):
    monkeypatch.setitem(sys.modules, "horovod", None)  # `import horovod` raises ImportError
    section = cli.check_horovod()
    assert not section.ok
    assert any(fix.startswith("hvd-compress build-horovod") for fix in section.fixes)
    assert "fix: hvd-compress build-horovod" in section.render()


def test_build_horovod_dry_run_prints_the_plan_and_cache_key(tmp_path, capsys):
    assert cli.main(["build-horovod", "--dry-run", "--wheel-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    plan = horovod_build.make_plan(wheel_dir=str(tmp_path))
    assert f"cache key:  {plan.key}" in text
    assert str(tmp_path / plan.key) in text
    assert "cached:     no -> build from the sdist" in text
    assert "HOROVOD_WITH_GLOO=1" in text
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_cache_key_names_every_version_the_binary_depends_on(tmp_path):
    plan = horovod_build.BuildPlan(
        python=sys.executable, torch="2.13.0", tensorflow="2.21.0", mpi=True, gpu=False, cache_root=tmp_path, jobs=2
    )
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert plan.key == f"horovod-0.28.1-torch2.13.0-tf2.21.0-{tag}-mpi1"  # ci/setup.sh's key, unchanged
    gpu = horovod_build.BuildPlan(**{**plan.__dict__, "gpu": True, "tensorflow": None, "mpi": False})
    assert gpu.key == f"horovod-0.28.1-torch2.13.0-tfnone-{tag}-mpi0-nccl"
    assert gpu.build_env()["HOROVOD_GPU_OPERATIONS"] == "NCCL"
    assert gpu.build_env()["HOROVOD_WITHOUT_TENSORFLOW"] == "1"
    (plan.wheel_dir).mkdir()
    (plan.wheel_dir / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    assert plan.cached_wheel().name.startswith("horovod-0.28.1")


def test_local_version_part_does_not_change_the_key(monkeypatch):
    monkeypatch.setattr(horovod_build.metadata, "version", lambda dist: "2.13.0+cpu")
    assert horovod_build.installed_version("torch") == "2.13.0"


def test_source_patches_apply_and_fail_loudly_when_the_sdist_changes(tmp_path):
    (tmp_path / "horovod/torch").mkdir(parents=True)
    (tmp_path / "horovod/tensorflow").mkdir(parents=True)
    (tmp_path / "CMakeLists.txt").write_text("set(CMAKE_CXX_STANDARD 14)\n")
    (tmp_path / "horovod/torch/CMakeLists.txt").write_text("set(CMAKE_CXX_STANDARD 14)\n")
    (tmp_path / "horovod/tensorflow/CMakeLists.txt").write_text("list(APPEND SOURCES a.cc\n  xla_mpi_ops.cc)\n")
    horovod_build.patch_sources(tmp_path)
    assert (tmp_path / "CMakeLists.txt").read_text() == "set(CMAKE_CXX_STANDARD 17)\n"
    assert "xla_mpi_ops" not in (tmp_path / "horovod/tensorflow/CMakeLists.txt").read_text()
    (tmp_path / "horovod/torch/CMakeLists.txt").write_text("set(CMAKE_CXX_STANDARD 20)\n")
    with pytest.raises(RuntimeError, match="C\\+\\+17 patch"):
        horovod_build.patch_sources(tmp_path)


def _fake_pip_gpu_tree(site):
    """What torch's CUDA 13 wheel and ``cuda-toolkit[nvcc,cccl]`` put in site-packages (layout as
    measured in the wheels: nvidia/nccl/{include,lib}, nvidia/cu13/{bin,include,lib})."""
    (site / "nvidia/nccl/include").mkdir(parents=True)
    (site / "nvidia/nccl/lib").mkdir()
    (site / "nvidia/nccl/include/nccl.h").write_text("#define NCCL_MAJOR 2\n")
    (site / "nvidia/nccl/lib/libnccl.so.2").write_bytes(b"")
    for d in ("bin", "include", "lib"):
        (site / "nvidia/cu13" / d).mkdir(parents=True)
    nvcc = site / "nvidia/cu13/bin/nvcc"
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    (site / "nvidia/cu13/include/cuda_runtime.h").write_text("")
    (site / "nvidia/cu13/lib/libcudart.so.13").write_bytes(b"")


def test_gpu_build_finds_nccl_and_nvcc_in_pip_packages_and_links_the_libraries(tmp_path, monkeypatch):
    site, cache = tmp_path / "site", tmp_path / "cache"
    _fake_pip_gpu_tree(site)
    monkeypatch.setattr(horovod_build, "find_system_cuda_home", lambda environ: None)
    tool = horovod_build.gpu_toolchain(cache, sites=[site], environ={"PATH": "/usr/bin"})
    assert not tool.notes
    env = tool.env
    assert env["HOROVOD_NCCL_INCLUDE"] == str(site / "nvidia/nccl/include")
    assert env["HOROVOD_NCCL_LINK"] == "SHARED"  # the wheel ships no libnccl_static.a
    assert env["HOROVOD_CUDA_HOME"] == env["CUDA_HOME"] == str(site / "nvidia/cu13")
    assert env["PATH"].startswith(str(site / "nvidia/cu13/bin"))
    assert f"-Wl,-rpath,{site / 'nvidia/nccl/lib'}" in env["LDFLAGS"]
    link_dir = Path(env["HOROVOD_NCCL_LIB"])
    assert env["CMAKE_LIBRARY_PATH"] == str(link_dir)
    assert not cache.exists()  # finding writes nothing (the plan of --dry-run)
    tool.make_links()
    tool.make_links()  # idempotent
    assert os.readlink(link_dir / "libnccl.so") == str(site / "nvidia/nccl/lib/libnccl.so.2")
    assert os.readlink(link_dir / "libcudart.so") == str(site / "nvidia/cu13/lib/libcudart.so.13")
    assert "export HOROVOD_NCCL_LINK=SHARED" in tool.export_lines().splitlines()


def test_gpu_build_keeps_what_the_user_set_and_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(horovod_build, "find_system_cuda_home", lambda environ: None)
    mine = {"HOROVOD_NCCL_HOME": "/opt/nccl", "HOROVOD_CUDA_HOME": "/opt/cuda"}
    site = tmp_path / "site"
    _fake_pip_gpu_tree(site)
    assert horovod_build.gpu_toolchain(tmp_path, sites=[site], environ=mine).env == {}
    empty = horovod_build.gpu_toolchain(tmp_path, sites=[tmp_path / "nothing"], environ={})
    assert empty.env == {} and len(empty.notes) == 2
    assert "nvidia-nccl-cu12/-cu13" in empty.notes[0] and "cuda-toolkit[nvcc,cccl]" in empty.notes[1]
    system = tmp_path / "cuda"  # a system toolkit wins over pip's; one with libcudart.so needs no link
    for d in ("bin", "include", "lib64"):
        (system / d).mkdir(parents=True)
    (system / "bin/nvcc").write_text("")
    (system / "bin/nvcc").chmod(0o755)
    (system / "include/cuda_runtime.h").write_text("")
    (system / "lib64/libcudart.so").write_bytes(b"")
    monkeypatch.undo()
    system_env = horovod_build.gpu_toolchain(tmp_path, sites=[site], environ={"CUDA_HOME": str(system)}).env
    assert system_env["HOROVOD_CUDA_HOME"] == str(system)
    assert system_env["PATH"].startswith(str(system / "bin"))
    assert "CMAKE_LIBRARY_PATH" not in system_env


def test_gpu_dry_run_lists_the_nccl_build_and_the_cache_key(tmp_path, capsys):
    assert cli.main(["build-horovod", "--gpu", "--dry-run", "--wheel-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in text and "-nccl" in text
    assert not list(tmp_path.iterdir())
