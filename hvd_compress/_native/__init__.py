"""Native fused kernels for the CPU codecs (QSGD, TernGrad, OneBit, ScaledSign/EFSign).

``kernels.c`` (plain C99 + OpenMP, no torch headers) is compiled on first use with the system C
compiler into ``$HVD_COMPRESS_CACHE/native/<hash>/`` (default ``~/.cache/hvd_compress``; the hash
covers the source, the flags and the compiler's version) and loaded with ``ctypes``, which releases
the GIL during the calls. Several processes starting at once (Horovod ranks) build it once: the
build runs under a file lock and the library is renamed into place atomically. To build ahead of
time (CI, images)::

    python -m hvd_compress._native --build      # prints where the library is

What the kernels do, and what they promise: one pass over memory per codec where the math allows,
parallel over fixed tiles; payloads byte-identical to the plain torch path for the same input and
the same uniforms (sums are accumulated in double and may differ from torch's fp32 summation order
in the last bits); results independent of the thread count. See ``docs/native.md``.

Knobs (environment):

* ``HVD_COMPRESS_NATIVE=0``: use the plain torch codecs (read when a codec is built, into its plan:
  :mod:`hvd_compress.torch.kernels.backend`).
* ``HVD_COMPRESS_THREADS=N``: threads for the kernels (default: ``torch.get_num_threads()``).
* ``HVD_COMPRESS_THP=0``: do not advise transparent huge pages for fresh multi-MiB outputs.
* ``CC``: the compiler (default ``cc``); ``HVD_COMPRESS_CACHE``: the cache root.
* ``HVD_COMPRESS_SANITIZE=1``: build (and cache separately) with AddressSanitizer and
  UndefinedBehaviorSanitizer, for tests only. The process must preload the ASan runtime:
  ``LD_PRELOAD=$(cc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0`` (Python itself
  "leaks" at exit); ``tests/test_native_sanitizers.py`` shows the whole recipe.

If there is no compiler or the build fails, a ``RuntimeWarning`` says so once and the codecs use
the plain torch path. CUDA tensors always take the torch path.

This module imports no torch (the ``--build`` entry point must be cheap); the tensor glue is
:mod:`hvd_compress._native.ops`.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

SOURCE = Path(__file__).with_name("kernels.c")
LIBNAME = "libhvdc_native.so"
ABI_VERSION = 2
# No -march=native: the cached library must run on any x86-64 host (the AVX2 clones inside are
# dispatched at run time). -ffp-contract=off: no FMA contraction, so the float math is the plain
# path's, operation for operation. Never -ffast-math.
CFLAGS = [
    "-O3",
    "-std=gnu99",
    "-fopenmp",
    "-shared",
    "-fPIC",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fvisibility=hidden",
]
# HVD_COMPRESS_SANITIZE=1: any out-of-bounds access or undefined behaviour aborts the process with
# a report (-fno-sanitize-recover), so a test replaying bad payloads cannot pass over one.
SANITIZE_FLAGS = [
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
]

_lock = threading.Lock()
_lib = None  # the loaded library, False after a failed build
_reason = ""  # why it is not available
_override: Optional[bool] = None


def cache_root() -> Path:
    return Path(os.environ.get("HVD_COMPRESS_CACHE") or "~/.cache/hvd_compress").expanduser() / "native"


def sanitized() -> bool:
    """Whether builds use the sanitizers (``HVD_COMPRESS_SANITIZE=1``)."""
    return os.environ.get("HVD_COMPRESS_SANITIZE", "0").strip().lower() in ("1", "true", "yes", "on")


def cflags() -> list:
    """The compiler flags of this process's build (the later -O1 wins over -O3 when sanitizing)."""
    return CFLAGS + (SANITIZE_FLAGS if sanitized() else [])


def _compiler() -> list:
    return shlex.split(os.environ.get("CC") or "cc")


def _compiler_version(cc: list) -> str:
    out = subprocess.run(cc + ["--version"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise OSError(f"{' '.join(cc)} --version failed: {out.stderr.strip()[:200]}")
    return out.stdout


def build_key(cc: list, version: str) -> str:
    h = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(cc).encode(),
        " ".join(cflags()).encode(),
        version.encode(),
        sys.platform.encode(),
    ):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _flock(path: Path):
    import fcntl

    f = open(path, "a+")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def build(force: bool = False) -> Path:
    """Compile ``kernels.c`` into the cache (if not already there) and return the library's path.
    Raises ``OSError``/``RuntimeError`` with the compiler's message on failure."""
    cc = _compiler()
    try:
        version = _compiler_version(cc)
    except (OSError, subprocess.SubprocessError) as exc:
        raise OSError(f"no usable C compiler ({' '.join(cc)}): {exc}") from None
    if not SOURCE.is_file():
        raise OSError(f"{SOURCE} is missing (an install without the package's C source)")
    key = build_key(cc, version)
    folder = cache_root() / key
    lib = folder / LIBNAME
    if lib.exists() and not force:
        return lib
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home (containers): a per-user temp folder instead
        folder = Path(tempfile.gettempdir()) / f"hvd_compress-{os.getuid()}" / "native" / key
        lib = folder / LIBNAME
        if lib.exists() and not force:
            return lib
        folder.mkdir(parents=True, exist_ok=True)
    with _flock(folder / ".lock"):
        if lib.exists() and not force:  # another process built it while we waited
            return lib
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=str(folder))
        os.close(fd)
        try:
            cmd = cc + cflags() + ["-o", tmp, str(SOURCE), "-lm"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{(out.stderr or out.stdout).strip()[-2000:]}")
            os.chmod(tmp, 0o755)
            os.replace(tmp, lib)  # atomic: a reader sees no library or a whole one
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return lib


def _declare(lib) -> None:
    c = ctypes
    i64, u64, ptr, f32, i32, u32 = c.c_int64, c.c_uint64, c.c_void_p, c.c_float, c.c_int, c.c_uint32
    sigs = {
        "hvdc_abi_version": ([], i32),
        "hvdc_max_threads": ([], i32),
        "hvdc_set_thp": ([i32], None),
        "hvdc_set_simd": ([i32], i32),
        "hvdc_noise": ([u64, i64, i64, ptr], None),
        "hvdc_qsgd_encode": ([ptr, i64, i32, i64, i32, u64, ptr, ptr, i32], i32),
        "hvdc_qsgd_decode": ([ptr, i64, i32, i64, ptr, i32, f32, i32], i32),
        "hvdc_terngrad_scale": ([ptr, i64, f32, i32], f32),
        "hvdc_terngrad_encode": ([ptr, i64, u32, i32, u64, ptr, ptr, i32], i32),
        "hvdc_terngrad_decode": ([ptr, i64, i32, ptr, i32, f32, i32], i32),
        "hvdc_onebit_encode": ([ptr, ptr, ptr, i64, i64, ptr, i32], i32),
        "hvdc_onebit_decode": ([ptr, i64, i64, ptr, i32, f32, i32], i32),
        "hvdc_sign_encode": ([ptr, ptr, ptr, i64, ptr, i32], i32),
        "hvdc_sign_decode": ([ptr, i64, ptr, i32, f32, i32], i32),
        "hvdc_tf_uniform": ([u64, u64, i64, ptr, i32], None),
        "hvdc_topk_encode": ([ptr, i64, i64, ptr, i32], i32),
        "hvdc_signsgd_vote": ([ptr, i32, i64, f32, ptr, i32], i32),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res


def load():
    """The loaded library (a ``ctypes.CDLL``), or ``None`` if it cannot be built (warned once)."""
    global _lib, _reason
    if _lib is not None:
        return _lib or None
    with _lock:
        if _lib is not None:
            return _lib or None
        try:
            path = build()
            lib = ctypes.CDLL(str(path))
            _declare(lib)
            if lib.hvdc_abi_version() != ABI_VERSION:
                raise RuntimeError(f"{path}: ABI {lib.hvdc_abi_version()}, expected {ABI_VERSION}")
            lib.hvdc_set_thp(0 if os.environ.get("HVD_COMPRESS_THP", "1") == "0" else 1)
            _lib = lib
        except Exception as exc:  # no compiler, failed build, unloadable library
            _lib, _reason = False, f"{type(exc).__name__}: {exc}"
            warnings.warn(
                "hvd_compress: the native codec kernels are unavailable, so QSGD/TernGrad/OneBit/"
                "EFSign use the plain torch path (several times slower on CPU). Reason: "
                f"{_reason}\nInstall a C compiler with OpenMP (e.g. gcc) or build ahead of time "
                "with `python -m hvd_compress._native --build`; set HVD_COMPRESS_NATIVE=0 to "
                "choose the plain path explicitly.",
                RuntimeWarning,
                stacklevel=3,
            )
        return _lib or None


def wanted() -> bool:
    """Whether the native kernels are asked for: :func:`forced`'s setting inside its block, else
    ``HVD_COMPRESS_NATIVE`` (not whether the library loads)."""
    if _override is not None:
        return _override
    return os.environ.get("HVD_COMPRESS_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def is_forced() -> bool:
    """True inside a :func:`forced` block."""
    return _override is not None


def enabled() -> bool:
    """Whether the codecs should use the native kernels (for CPU tensors): not switched off by
    ``HVD_COMPRESS_NATIVE=0`` or :func:`forced`, and the library loads."""
    return wanted() and load() is not None


def unavailable_reason() -> str:
    load()
    return _reason


@contextlib.contextmanager
def forced(on: bool):
    """Within the block, use (``True``) or avoid (``False``) the native kernels regardless of
    ``HVD_COMPRESS_NATIVE`` (benchmarks time both paths in one process). Not thread-safe."""
    global _override
    before, _override = _override, bool(on)
    try:
        yield
    finally:
        _override = before
