"""The ``hvd-compress`` command (a console script; also ``python -m hvd_compress.cli``).

Subcommands::

    hvd-compress doctor                        # what is installed, and how to fix what is missing
    hvd-compress build-horovod [--gpu] [--wheel-dir DIR] [--jobs N] [--rebuild] [--dry-run]
    hvd-compress codecs [--update-readme]       # the built-in codecs' table, from the registry

``build-horovod`` builds Horovod 0.28.1 with the fixes today's torch / TF need into the current
environment (see :mod:`hvd_compress.horovod_build`). ``doctor`` checks, section by section, torch,
TensorFlow, Horovod (version, frameworks, Gloo / MPI / NCCL built in), the native codec kernels,
Triton, NCCL and MPI, and prints for every missing piece the command that fixes it. It exits 0
even when something optional is missing; it imports torch and Horovod, so it takes a few seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, List, Optional

from hvd_compress import horovod_build


@dataclass
class Section:
    """One ``doctor`` section: what was found (``lines``), and the commands that fix the gaps."""

    name: str
    ok: bool = True
    lines: List[str] = field(default_factory=list)
    fixes: List[str] = field(default_factory=list)

    def missing(self, what: str, fix: str) -> None:
        self.ok = False
        self.lines.append(f"missing: {what}")
        self.fixes.append(fix)

    def render(self) -> str:
        head = f"== {self.name} {'[ok]' if self.ok else '[missing]'}"
        body = [f"  {line}" for line in self.lines] + [f"  fix: {fix}" for fix in self.fixes]
        return "\n".join([head, *body])


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_python() -> Section:
    s = Section("python")
    s.lines.append(f"{sys.version.split()[0]} at {sys.executable}")
    return s


def check_torch() -> Section:
    s = Section("torch")
    try:
        import torch
    except ImportError as exc:
        s.missing(f"torch ({exc})", "pip install torch")
        return s
    cuda = torch.cuda.is_available()
    s.lines.append(
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'not built'}, "
        f"GPU {'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available'})"
    )
    gpus = nvidia_smi_gpus()
    if gpus and not cuda:
        what = "a CPU-only build" if not torch.version.cuda else "its CUDA does not match the driver"
        s.missing(
            f"CUDA torch: nvidia-smi lists {gpus[0]!r} but torch cannot use it ({what})",
            f"bash ci/setup.sh   (on a GPU machine it installs the CUDA build), or: "
            f"pip install 'torch==={torch.__version__.split('+')[0]}'",
        )
    return s


def nvidia_smi_gpus() -> List[str]:
    """The GPUs ``nvidia-smi -L`` lists (empty without the driver's tools)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.startswith("GPU ")]


def check_tensorflow() -> Section:
    # Versions only: importing TF costs seconds and its log noise; Horovod's TF extension is
    # checked by file below.
    s = Section("tensorflow")
    tf = _version("tensorflow") or _version("tensorflow-cpu")
    if tf is None:
        s.missing("tensorflow", "pip install tensorflow tf-keras   (tensorflow[and-cuda] for GPU)")
        return s
    s.lines.append(f"tensorflow {tf}")
    keras = _version("tf-keras")
    if keras:
        s.lines.append(f"tf-keras {keras} (hvd_compress.tensorflow.frontends.keras uses Keras 2)")
    else:
        s.missing("tf-keras (Keras 2, for hvd_compress.tensorflow.frontends.keras)", f"pip install tf-keras=={tf}")
    return s


def _horovod_extension(framework: str) -> bool:
    import horovod

    folder = Path(horovod.__file__).parent / framework
    return any(folder.glob("mpi_lib*.so"))


def check_horovod() -> Section:
    s = Section("horovod")
    gpu_hint = " --gpu" if _torch_cuda() else ""
    rebuild = f"hvd-compress build-horovod{gpu_hint}"
    try:
        import horovod
    except ImportError:
        s.missing("horovod", rebuild)
        return s
    s.lines.append(f"horovod {horovod.__version__} at {Path(horovod.__file__).parent}")
    built = [fw for fw in ("torch", "tensorflow") if _horovod_extension(fw)]
    s.lines.append("frameworks built in: " + (", ".join(built) or "none"))
    for fw, dist in (("torch", "torch"), ("tensorflow", "tensorflow-cpu")):
        if fw not in built and (_version(dist) or (fw == "tensorflow" and _version("tensorflow"))):
            s.missing(f"Horovod was built without {fw} (installed here)", rebuild + " --rebuild")
    if "torch" in built:
        try:
            import horovod.torch as hvd

            flags = {
                name: bool(getattr(hvd, f"{name}_built")())
                for name in ("gloo", "mpi", "nccl", "cuda", "rocm", "ddl", "ccl")
            }
        except Exception as exc:  # an extension compiled against another torch fails here
            s.missing(f"horovod.torch does not load ({type(exc).__name__}: {exc})", rebuild + " --rebuild")
            return s
        s.lines.append(
            "built with (horovod.torch.*_built()): "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
        )
        if not flags["gloo"]:
            s.missing("Gloo (horovodrun --gloo)", rebuild + " --rebuild")
        if _torch_cuda() and not flags["nccl"]:
            s.missing(
                "NCCL GPU operations (a GPU is available)",
                "hvd-compress build-horovod --gpu --rebuild   (finds NCCL and nvcc from pip's nvidia "
                "packages; or set HOROVOD_NCCL_HOME and HOROVOD_CUDA_HOME; see the nccl section)",
            )
    return s


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def check_native() -> Section:
    s = Section("native kernels (hvd_compress._native, CPU codecs)")
    from hvd_compress import _native

    if _native.load() is None:
        s.missing(
            f"native kernels ({_native.unavailable_reason()})",
            "apt-get install gcc   then: python -m hvd_compress._native --build",
        )
    else:
        s.lines.append(f"loaded from {_native.build()}")
    return s


def check_triton() -> Section:
    s = Section("triton (GPU codec kernels)")
    version = _version("triton")
    if version is None:
        if _torch_cuda():
            s.missing("triton (a GPU is available)", "pip install triton")
        else:
            s.lines.append("not installed (only used on CUDA; no GPU here)")
        return s
    s.lines.append(f"triton {version}" + ("" if _torch_cuda() else " (unused: no GPU here)"))
    return s


def check_nccl() -> Section:
    """NCCL for torch.distributed (torch's own) and what building Horovod with NCCL needs: NCCL's
    header and library, and nvcc (found as ``hvd-compress build-horovod --gpu`` finds them)."""
    s = Section("nccl")
    if not _torch_cuda():
        s.lines.append("not applicable: no CUDA GPU visible to torch")
        return s
    import torch

    try:
        v = torch.cuda.nccl.version()
        s.lines.append(
            f"torch's NCCL {'.'.join(map(str, v)) if isinstance(v, tuple) else v} "
            f"(torch.distributed backend 'nccl'), {torch.cuda.device_count()} GPU(s)"
        )
    except Exception as exc:
        s.missing(f"NCCL in torch ({exc})", "pip install torch (a CUDA wheel ships NCCL)")
    tool = horovod_build.gpu_toolchain(horovod_build.default_cache_root())
    for name in ("HOROVOD_NCCL_HOME", "HOROVOD_NCCL_INCLUDE", "HOROVOD_NCCL_LIB", "HOROVOD_CUDA_HOME"):
        value = tool.env.get(name) or os.environ.get(name)
        if value:
            s.lines.append(f"for Horovod's NCCL build: {name}={value}")
    major = (torch.version.cuda or "12").split(".")[0]
    for note in tool.notes:
        fix = (
            f"pip install nvidia-nccl-cu{major}"
            if note.startswith("NCCL")
            else 'pip install "cuda-toolkit[nvcc,cccl]==V" (V: torch\'s cuda-toolkit requirement, '
            "`pip show torch`), or install the CUDA toolkit"
        )
        s.missing(f"{note} (only needed to build Horovod with NCCL)", fix)
    return s


def check_mpi() -> Section:
    s = Section("mpi")
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        s.missing(
            "mpirun (optional: horovodrun --gloo works without MPI)",
            "apt-get install libopenmpi-dev openmpi-bin   then: hvd-compress build-horovod --rebuild",
        )
        return s
    # Paths only: running mpirun (even --version) counts as starting a launcher in the test suite.
    s.lines.append(f"mpirun at {mpirun}")
    mpicxx = shutil.which("mpicxx")
    if mpicxx is None:
        s.missing("mpicxx (MPI headers, needed to build Horovod with MPI)", "apt-get install libopenmpi-dev")
    else:
        s.lines.append(f"mpicxx at {mpicxx} (Horovod builds with MPI)")
    return s


CHECKS: List[Callable[[], Section]] = [
    check_python,
    check_torch,
    check_tensorflow,
    check_horovod,
    check_native,
    check_triton,
    check_nccl,
    check_mpi,
]


def doctor(out=None) -> List[Section]:
    """Run every check, print the report to ``out`` (stdout), return the sections."""
    out = out or sys.stdout
    sections = []
    for check in CHECKS:
        try:
            section = check()
        except Exception as exc:  # a broken install must not hide the rest of the report
            section = Section(check.__name__.replace("check_", ""))
            section.missing(f"check failed: {type(exc).__name__}: {exc}", "see the error above")
        sections.append(section)
        print(section.render(), file=out, flush=True)
    missing = [s.name for s in sections if not s.ok]
    print("\nall present" if not missing else f"\nmissing or incomplete: {', '.join(missing)}", file=out)
    return sections


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="hvd-compress", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report what is installed and how to fix what is missing")
    build = sub.add_parser("build-horovod", help="build and install Horovod 0.28.1 with today's fixes")
    horovod_build.add_arguments(build)
    table = sub.add_parser("codecs", help="print the built-in codecs' table (Markdown), from the registry")
    table.add_argument("--update-readme", action="store_true", help="rewrite README.md's codec table with it")
    args = ap.parse_args(argv)
    if args.command == "doctor":
        doctor()
        return 0
    if args.command == "codecs":
        from hvd_compress import codec_table

        if args.update_readme:
            changed = codec_table.update_readme()
            print(f"{codec_table.README}: {'updated' if changed else 'already up to date'}")
        else:
            print(codec_table.markdown())
        return 0
    return horovod_build.run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
