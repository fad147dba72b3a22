"""Build and install Horovod 0.28.1 into the *current* Python environment, with the fixes today's
stack needs, cached by versions.

Usage::

    hvd-compress build-horovod                 # CPU: Gloo (+ MPI when mpicxx is on PATH)
    hvd-compress build-horovod --gpu           # + NCCL allreduce (HOROVOD_GPU_OPERATIONS=NCCL)
    hvd-compress build-horovod --dry-run       # print the plan and the cache key, do nothing
    python -m hvd_compress.horovod_build ...   # the same without the console script

Why a build command at all: ``pip install horovod==0.28.1`` downloads an sdist that does not
build against what is current (measured on Python 3.11 / torch 2.13 / TF 2.21):

* Horovod pins C++14 in ``CMakeLists.txt`` and ``horovod/torch/CMakeLists.txt``; torch >= 2.1
  headers need C++17. We rewrite both to 17.
* ``horovod/tensorflow/xla_mpi_ops.cc`` does not compile against TF 2.21; it only serves GPU XLA
  (``HOROVOD_ENABLE_XLA_OPS``), so we drop it from the TF build.
* pip's cmake 4.x refuses Horovod's bundled gloo, so the build uses a system cmake 3.x (>= 3.13,
  ``apt-get install cmake``) put first on ``PATH``, and runs without build isolation so it
  compiles against the torch / TF that are installed here, not fresh copies.

The frameworks compiled in are the ones installed (torch, TF; MXNet never). MPI is compiled in
when ``mpicxx`` is on ``PATH`` (``apt-get install libopenmpi-dev openmpi-bin``), else Gloo only.

The cache: the wheel is kept in ``<wheel-dir>/<key>/`` where ``<wheel-dir>`` defaults to
``$HVD_COMPRESS_CACHE`` or ``~/.cache/hvd_compress`` and the key names every version the binary
depends on, e.g. ``horovod-0.28.1-torch2.13.0-tf2.21.0-cp311-mpi1`` (``-nccl`` appended for
``--gpu``). A second environment with the same versions installs the cached wheel in seconds;
changing torch, TF, Python or MPI builds anew. ``--rebuild`` ignores a cached wheel. When this
environment's Horovod was installed from the cached wheel already, nothing is reinstalled.

How to tune: the build takes 10-20 minutes on 2 cores. ``--jobs N`` (or ``HVD_BUILD_JOBS``,
default 2) is the parallel compile count; each job needs about 2 GB of memory, so use fewer on a
small machine. The log goes to a temporary folder and its tail is printed on failure. Any
``HOROVOD_*`` variable you set is passed through to Horovod's build.

GPU (``--gpu``): Horovod needs NCCL's header and library and ``nvcc`` (it compiles a few CUDA
kernels). What you set wins: ``HOROVOD_NCCL_HOME`` (or ``HOROVOD_NCCL_INCLUDE`` /
``HOROVOD_NCCL_LIB``) for NCCL, ``HOROVOD_CUDA_HOME`` for the toolkit. Otherwise
:func:`gpu_toolchain` finds them in this environment: NCCL from the ``nvidia-nccl-cu12`` /
``-cu13`` pip package that torch's CUDA wheel depends on (``site-packages/nvidia/nccl``, linked
shared: the wheel ships no static library), ``nvcc`` on ``PATH`` / in ``$CUDA_HOME`` /
``/usr/local/cuda``, else from the CUDA 13 pip packages (``pip install "cuda-toolkit[nvcc,cccl]==V"``
with torch's ``cuda-toolkit`` version V, laid out as one toolkit in ``site-packages/nvidia/cu13``).
CMake looks for unversioned ``libnccl.so`` / ``libcudart.so``, which the pip packages do not ship,
so links to the versioned files are made in ``<wheel-dir>/gpu-links/``. ``--print-env`` makes
those links and prints the variables as ``export`` lines (``ci/setup.sh`` evaluates them); the
plan (``--dry-run``) lists what was found. Horovod builds its CUDA kernels for every
architecture that ``nvcc`` supports unless ``HOROVOD_BUILD_CUDA_CC_LIST`` says otherwise (e.g.
``90`` for H100/H200 only: a faster build, a wheel for those GPUs only; the cache key does not
record it).

This module imports neither torch nor TF (versions come from package metadata), so
``--dry-run`` is instant.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

HOROVOD_VERSION = "0.28.1"
MIN_CMAKE = (3, 13)
# Horovod's runtime dependencies: the wheel is installed --no-deps (its metadata would pull
# cmake 4.x and friends), so these are installed explicitly. A wheel built with PyTorch also
# declares cffi (Horovod's setup.py adds it; nothing imports it today): installed too, so that pip
# does not report the environment as broken ("horovod 0.28.1 requires cffi").
RUNTIME_DEPS = ["cloudpickle", "psutil", "pyyaml", "packaging"]
TORCH_RUNTIME_DEPS = ["cffi>=1.4.0"]
# The machine's pip config may list local mirror folders that are absent; pip warns about each.
_PIP_NOISE = "is ignored: it is neither a file nor a directory"


def log(msg: str) -> None:
    print(f"[build-horovod] {msg}", file=sys.stderr, flush=True)


def installed_version(*dists: str) -> Optional[str]:
    """The version of the first installed distribution among ``dists``, without its local part
    (``2.13.0+cpu`` -> ``2.13.0``: the CPU and the default wheel share an ABI)."""
    for dist in dists:
        try:
            return metadata.version(dist).split("+")[0]
        except metadata.PackageNotFoundError:
            continue
    return None


def default_cache_root() -> Path:
    return Path(os.environ.get("HVD_COMPRESS_CACHE") or "~/.cache/hvd_compress").expanduser()


@dataclass
class BuildPlan:
    """Everything the build depends on; ``key`` names the cached wheel."""

    python: str
    torch: Optional[str]
    tensorflow: Optional[str]
    mpi: bool
    gpu: bool
    cache_root: Path
    jobs: int
    horovod: str = HOROVOD_VERSION
    gpu_env: Dict[str, str] = field(default_factory=dict)  # NCCL / CUDA paths found (gpu_toolchain)
    gpu_notes: List[str] = field(default_factory=list)  # what was not found, and how to fix it

    @property
    def pytag(self) -> str:
        return f"cp{sys.version_info[0]}{sys.version_info[1]}"

    @property
    def key(self) -> str:
        key = (
            f"horovod-{self.horovod}-torch{self.torch or 'none'}-tf{self.tensorflow or 'none'}"
            f"-{self.pytag}-mpi{int(self.mpi)}"
        )
        return key + ("-nccl" if self.gpu else "")

    @property
    def wheel_dir(self) -> Path:
        return self.cache_root / self.key

    def cached_wheel(self) -> Optional[Path]:
        wheels = sorted(self.wheel_dir.glob("horovod-*.whl"))
        return wheels[-1] if wheels else None

    def build_env(self) -> dict:
        """Horovod's build switches: the frameworks that are installed, Gloo always, MPI if found."""
        env = {
            "HOROVOD_WITH_GLOO": "1",
            "HOROVOD_WITHOUT_MXNET": "1",
            ("HOROVOD_WITH_PYTORCH" if self.torch else "HOROVOD_WITHOUT_PYTORCH"): "1",
            ("HOROVOD_WITH_TENSORFLOW" if self.tensorflow else "HOROVOD_WITHOUT_TENSORFLOW"): "1",
            ("HOROVOD_WITH_MPI" if self.mpi else "HOROVOD_WITHOUT_MPI"): "1",
            "MAKEFLAGS": f"-j{self.jobs}",
        }
        if self.gpu:
            env["HOROVOD_GPU_OPERATIONS"] = "NCCL"
            env.update(self.gpu_env)
        return env

    def describe(self) -> str:
        wheel = self.cached_wheel()
        lines = [
            f"python:     {self.python} ({self.pytag})",
            f"horovod:    {self.horovod}",
            f"torch:      {self.torch or 'not installed (built without PyTorch)'}",
            f"tensorflow: {self.tensorflow or 'not installed (built without TensorFlow)'}",
            f"mpi:        {'yes (mpicxx on PATH)' if self.mpi else 'no (Gloo only; mpicxx not on PATH)'}",
            f"gpu:        {'NCCL' if self.gpu else 'no (CPU)'}",
            f"cache key:  {self.key}",
            f"wheel dir:  {self.wheel_dir}",
            f"cached:     {wheel if wheel else 'no -> build from the sdist'}",
            "build env:  " + " ".join(f"{k}={v}" for k, v in sorted(self.build_env().items())),
        ]
        lines += [f"gpu note:   {note}" for note in (self.gpu_notes if self.gpu else [])]
        return "\n".join(lines)


def make_plan(gpu: bool = False, wheel_dir: Optional[str] = None, jobs: Optional[int] = None) -> BuildPlan:
    plan = BuildPlan(
        python=sys.executable,
        torch=installed_version("torch"),
        tensorflow=installed_version("tensorflow", "tensorflow-cpu"),
        mpi=shutil.which("mpicxx") is not None,
        gpu=gpu,
        cache_root=Path(wheel_dir).expanduser() if wheel_dir else default_cache_root(),
        jobs=jobs or int(os.environ.get("HVD_BUILD_JOBS") or 2),
    )
    if gpu:
        tool = gpu_toolchain(plan.cache_root)
        plan.gpu_env, plan.gpu_notes = tool.env, tool.notes
    return plan


# ----------------------------------------------------------------------------- GPU toolchain
NCCL_VARS = ("HOROVOD_NCCL_HOME", "HOROVOD_NCCL_INCLUDE", "HOROVOD_NCCL_LIB")


def site_dirs() -> List[Path]:
    """This environment's site-packages folders (where pip puts ``nvidia/...``)."""
    paths = sysconfig.get_paths()
    out: List[Path] = []
    for key in ("purelib", "platlib"):
        p = Path(paths[key])
        if p not in out:
            out.append(p)
    return out


def find_pip_nccl(sites: Sequence[Path]) -> Optional[tuple]:
    """``(include dir, library file)`` of the ``nvidia-nccl-cu1x`` pip package, or ``None``."""
    for site in sites:
        base = site / "nvidia" / "nccl"
        libs = sorted((base / "lib").glob("libnccl.so*"))
        if (base / "include" / "nccl.h").is_file() and libs:
            return base / "include", libs[0]
    return None


def find_pip_cuda_home(sites: Sequence[Path]) -> Optional[Path]:
    """A CUDA 13+ toolkit assembled by pip (``site-packages/nvidia/cu13``: bin/nvcc, include, lib)."""
    for site in sites:
        for home in sorted((site / "nvidia").glob("cu[0-9]*"), reverse=True):
            if is_cuda_home(home):
                return home
    return None


def is_cuda_home(home: Path) -> bool:
    return os.access(home / "bin" / "nvcc", os.X_OK) and (home / "include" / "cuda_runtime.h").is_file()


def find_system_cuda_home(environ: Mapping[str, str]) -> Optional[Path]:
    """A CUDA toolkit (``bin/nvcc`` and ``include/cuda_runtime.h``): ``$CUDA_HOME``, ``$CUDA_PATH``,
    ``/usr/local/cuda``, then the folder above the ``nvcc`` on ``PATH`` (which may be a wrapper
    script elsewhere, hence last)."""
    candidates = [environ.get("CUDA_HOME"), environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc", path=environ.get("PATH"))
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for home in candidates:
        if home and is_cuda_home(Path(home)):
            return Path(home)
    return None


def find_cuda_home(environ: Mapping[str, str], sites: Sequence[Path]) -> Optional[Path]:
    """``$HOROVOD_CUDA_HOME``, a system toolkit, or pip's CUDA 13 toolkit (see the module docstring)."""
    if environ.get("HOROVOD_CUDA_HOME"):
        return Path(environ["HOROVOD_CUDA_HOME"])
    return find_system_cuda_home(environ) or find_pip_cuda_home(sites)


@dataclass
class GpuToolchain:
    """What :func:`gpu_toolchain` found: ``env`` (the ``HOROVOD_*`` and CMake variables to add),
    ``links`` (link name -> versioned library it must point to, made by :meth:`make_links`) and
    ``notes`` (what is missing and how to fix it)."""

    env: Dict[str, str] = field(default_factory=dict)
    links: Dict[Path, Path] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def make_links(self) -> None:
        for link, target in self.links.items():
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            tmp = link.with_name(link.name + f".tmp{os.getpid()}")
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            tmp.symlink_to(target)
            os.replace(tmp, link)  # atomic: a concurrent build never sees a missing link

    def export_lines(self) -> str:
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))


def gpu_toolchain(
    cache_root: Path, sites: Optional[Sequence[Path]] = None, environ: Optional[Mapping[str, str]] = None
) -> GpuToolchain:
    """NCCL and CUDA toolkit locations for Horovod's NCCL build (see the module docstring): the
    user's ``HOROVOD_*`` settings win; otherwise pip's ``nvidia`` packages in this environment.
    Pure: finds paths and plans links, writes nothing (:meth:`GpuToolchain.make_links` does)."""
    environ = os.environ if environ is None else environ
    sites = site_dirs() if sites is None else list(sites)
    tool = GpuToolchain()
    link_dir = cache_root / "gpu-links" / hashlib.sha256("|".join(str(s) for s in sites).encode()).hexdigest()[:12]
    lib_path: List[str] = []
    if not any(environ.get(k) for k in NCCL_VARS):
        nccl = find_pip_nccl(sites)
        if nccl is None:
            tool.notes.append(
                "NCCL not found: pip install the nvidia-nccl-cu12/-cu13 package matching torch's "
                "CUDA (torch's CUDA wheel depends on it), or set HOROVOD_NCCL_HOME"
            )
        else:
            include, lib = nccl
            tool.env.update(
                HOROVOD_NCCL_INCLUDE=str(include), HOROVOD_NCCL_LIB=str(link_dir), HOROVOD_NCCL_LINK="SHARED"
            )
            if lib.name != "libnccl.so":
                tool.links[link_dir / "libnccl.so"] = lib
            # the extension finds the versioned library where pip put it, even before torch loads it
            tool.env["LDFLAGS"] = " ".join(filter(None, [environ.get("LDFLAGS", ""), f"-Wl,-rpath,{lib.parent}"]))
    if not environ.get("HOROVOD_CUDA_HOME"):
        home = find_system_cuda_home(environ) or find_pip_cuda_home(sites)
        if home is None:
            tool.notes.append(
                "nvcc not found: install the CUDA toolkit, or for CUDA 13: pip install "
                '"cuda-toolkit[nvcc,cccl]==V" (V: the cuda-toolkit version torch requires), '
                "or set HOROVOD_CUDA_HOME"
            )
        else:
            tool.env.update(HOROVOD_CUDA_HOME=str(home), CUDA_HOME=str(home))
            # this nvcc first: Horovod's build asks `nvcc` on PATH for the architectures it supports
            tool.env["PATH"] = f"{home / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
            # pip's toolkit ships cudart versioned only; CMake's FindCUDAToolkit wants libcudart.so
            libs = [d for d in (home / "lib64", home / "lib") if d.is_dir()]
            cudart = sorted(f for d in libs for f in d.glob("libcudart.so.*"))
            if cudart and not any((d / "libcudart.so").exists() for d in libs):
                tool.links[link_dir / "libcudart.so"] = cudart[0]
                lib_path.append(str(link_dir))
    if lib_path:
        tool.env["CMAKE_LIBRARY_PATH"] = os.pathsep.join(
            lib_path + [p for p in [environ.get("CMAKE_LIBRARY_PATH")] if p]
        )
    return tool


def pip(args: Iterable[str], python: Optional[str] = None) -> None:
    """``python -m pip ...`` in this environment, quiet, without the mirror-folder warnings."""
    cmd = [python or sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = "\n".join(line for line in out.stdout.splitlines() if _PIP_NOISE not in line).strip()
    if text:
        print(text, file=sys.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"pip failed ({out.returncode}): {' '.join(cmd)}")


def patch_sources(src: Path) -> None:
    """The two source fixes (see the module docstring); fails loudly if the sdist changed."""
    for rel in ("CMakeLists.txt", "horovod/torch/CMakeLists.txt"):
        path = src / rel
        text = path.read_text()
        path.write_text(text.replace("set(CMAKE_CXX_STANDARD 14)", "set(CMAKE_CXX_STANDARD 17)"))
    if "CMAKE_CXX_STANDARD 17" not in (src / "horovod/torch/CMakeLists.txt").read_text():
        raise RuntimeError("C++17 patch did not apply to horovod/torch/CMakeLists.txt")
    tf_cmake = src / "horovod/tensorflow/CMakeLists.txt"
    kept = [line for line in tf_cmake.read_text().splitlines(keepends=True) if "xla_mpi_ops.cc" not in line]
    tf_cmake.write_text("".join(kept))
    if "xla_mpi_ops" in tf_cmake.read_text():
        raise RuntimeError("could not drop xla_mpi_ops.cc from horovod/tensorflow/CMakeLists.txt")


def cmake_version(cmake: str) -> Optional[tuple]:
    try:
        out = subprocess.run([cmake, "--version"], capture_output=True, text=True, timeout=60).stdout
    except OSError:
        return None
    m = re.search(r"version\s*(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_system_cmake() -> Path:
    """A cmake 3.x >= 3.13 (Horovod's gloo does not configure under cmake 4); its folder goes
    first on PATH so that a pip-installed cmake in the environment does not shadow it."""
    candidates: List[str] = []
    for d in ("/usr/bin", "/usr/local/bin", *os.environ.get("PATH", "").split(os.pathsep)):
        c = os.path.join(d, "cmake")
        if os.access(c, os.X_OK) and c not in candidates:
            candidates.append(c)
    for c in candidates:
        v = cmake_version(c)
        if v and MIN_CMAKE <= v < (4, 0):
            return Path(c).parent
    raise RuntimeError(
        "no cmake 3.x >= 3.13 found (pip's cmake 4.x cannot build Horovod's gloo); "
        "fix: apt-get install cmake   (or: pip install 'cmake<4')"
    )


def build_wheel(plan: BuildPlan) -> Path:
    """Download the sdist, patch it, build the wheel into ``plan.wheel_dir``; returns its path."""
    cmake_dir = find_system_cmake()
    with tempfile.TemporaryDirectory(prefix="hvd_build_") as tmp:
        build = Path(tmp)
        log(f"building Horovod {plan.horovod} ({plan.key}); takes 10-20 minutes, log: {build}/build.log")
        pip(["download", "-q", "--no-deps", "--no-binary", ":all:", f"horovod=={plan.horovod}", "-d", str(build)])
        with tarfile.open(build / f"horovod-{plan.horovod}.tar.gz") as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse odd members
                tar.extractall(build, filter="data")
            else:
                tar.extractall(build)
        src = build / f"horovod-{plan.horovod}"
        patch_sources(src)
        env = dict(os.environ, **plan.build_env())
        env["PATH"] = f"{cmake_dir}{os.pathsep}{env.get('PATH', '')}"  # after gpu_env's PATH: cmake first
        cmd = [
            plan.python,
            "-m",
            "pip",
            "wheel",
            "-v",
            "--no-deps",
            "--no-build-isolation",
            ".",
            "-w",
            str(build / "out"),
        ]
        with open(build / "build.log", "w") as logf:
            rc = subprocess.run(cmd, cwd=src, env=env, stdout=logf, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = (build / "build.log").read_text(errors="replace").splitlines()[-60:]
            print("\n".join(tail), file=sys.stderr)
            raise RuntimeError(f"Horovod build failed (exit {rc}; log tail above)")
        built = sorted((build / "out").glob("horovod-*.whl"))
        if not built:
            raise RuntimeError("Horovod build produced no wheel")
        plan.wheel_dir.mkdir(parents=True, exist_ok=True)
        # Copy then rename: a concurrent reader never sees a half-written wheel.
        dest = plan.wheel_dir / built[0].name
        part = dest.with_suffix(".part")
        shutil.copyfile(built[0], part)
        os.replace(part, dest)
        return dest


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def installed_from(wheel: Path) -> bool:
    """Whether this environment's Horovod was installed from exactly ``wheel`` (pip records the
    archive's hash in ``direct_url.json``). A Horovod visible from outside ``sys.prefix`` (a
    parent environment on the path) does not count."""
    try:
        dist = metadata.distribution("horovod")
    except metadata.PackageNotFoundError:
        return False
    location = Path(str(dist.locate_file(""))).resolve()
    if not location.is_relative_to(Path(sys.prefix).resolve()):
        return False
    try:
        recorded = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    return recorded.get("archive_info", {}).get("hashes", {}).get("sha256") == sha256(wheel)


def install(plan: BuildPlan, wheel: Path, force: bool = False) -> None:
    """Install ``wheel`` (no-deps) and Horovod's runtime deps; a no-op when both are already there,
    so re-running the command (or ci/setup.sh) does not disturb processes using Horovod."""
    if not force and installed_from(wheel):
        log(f"already installed from {wheel}")
    else:
        log(f"installing {wheel}")
        pip(["install", "-q", "--force-reinstall", "--no-deps", str(wheel)], plan.python)
    deps = RUNTIME_DEPS + (TORCH_RUNTIME_DEPS if plan.torch else [])
    missing = [dep for dep in deps if installed_version(re.split(r"[<>=!]", dep)[0]) is None]
    if missing:
        pip(["install", "-q", *missing], plan.python)


def build_horovod(
    gpu: bool = False,
    wheel_dir: Optional[str] = None,
    jobs: Optional[int] = None,
    rebuild: bool = False,
    dry_run: bool = False,
    print_env: bool = False,
) -> int:
    """The ``build-horovod`` command: cached wheel if there is one, else build; then install."""
    plan = make_plan(gpu=gpu, wheel_dir=wheel_dir, jobs=jobs)
    if dry_run:
        print(plan.describe())
        return 0
    if print_env:
        if not gpu:
            log("--print-env lists the GPU toolchain: use it with --gpu")
            return 2
        tool = gpu_toolchain(plan.cache_root)
        tool.make_links()
        for note in tool.notes:
            log(note)
        print(tool.export_lines())
        return 0
    if not (plan.torch or plan.tensorflow):
        log(
            "neither torch nor tensorflow is installed here; install one first "
            "(pip install torch  /  pip install tensorflow tf-keras)"
        )
        return 1
    wheel = None if rebuild else plan.cached_wheel()
    if wheel:
        log(f"cached wheel for {plan.key}")
    else:
        try:
            wheel = build_wheel(plan)
        except RuntimeError as exc:
            log(str(exc))
            return 1
    try:
        install(plan, wheel, force=rebuild)
    except RuntimeError as exc:
        log(str(exc))
        return 1
    log(f"Horovod {plan.horovod} installed into {sys.prefix}")
    return 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--gpu", action="store_true", help="build NCCL GPU operations (HOROVOD_GPU_OPERATIONS=NCCL)")
    ap.add_argument(
        "--wheel-dir",
        metavar="DIR",
        help="cache root for built wheels "
        "(default $HVD_COMPRESS_CACHE or ~/.cache/hvd_compress); the wheel goes to DIR/<key>/",
    )
    ap.add_argument("--jobs", type=int, help="parallel compile jobs (default $HVD_BUILD_JOBS or 2)")
    ap.add_argument("--rebuild", action="store_true", help="build even if a cached wheel exists")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the cache key; build nothing")
    ap.add_argument(
        "--print-env",
        action="store_true",
        help="with --gpu: find NCCL and nvcc, make the library links, print `export` lines; build nothing",
    )


def run_from_args(args: argparse.Namespace) -> int:
    return build_horovod(
        gpu=args.gpu,
        wheel_dir=args.wheel_dir,
        jobs=args.jobs,
        rebuild=args.rebuild,
        dry_run=args.dry_run,
        print_env=args.print_env,
    )


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hvd_compress.horovod_build",
        description="Build and install Horovod with today's fixes (see the module docstring).",
    )
    add_arguments(ap)
    return run_from_args(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
