"""The one place that picks how a torch codec runs: Triton kernels, native C kernels or plain torch.

``HVD_COMPRESS_BACKEND`` (read at every call, so tests and jobs can switch it):

* unset or ``auto`` (default): ``triton`` for CUDA tensors when Triton imports, ``native`` (the C
  kernels of :mod:`hvd_compress._native`, which fall back to plain by themselves without a
  compiler or with ``HVD_COMPRESS_NATIVE=0``) for CPU tensors, ``plain`` torch ops otherwise;
* ``triton``: the Triton kernels for every tensor. On CPU tensors they run under Triton's
  interpreter, which needs ``TRITON_INTERPRET=1`` in the environment *before* the kernels are
  first used (Triton reads it when a kernel is decorated; the kernel modules are imported lazily,
  on first use). Slow (about 1 s per 131k values): for tests and debugging only.
  Without Triton installed this is a clear ``RuntimeError``, never a silent fall-back;
* ``native``: the C kernels (CPU tensors only; CUDA tensors take the plain path);
* ``plain``: the plain torch path everywhere (the wire format's definition).

How to tune: leave it unset. Force ``plain`` to bisect a suspected kernel bug (same bytes given
the same uniforms, see ``docs/gpu.md``); force ``triton`` with ``TRITON_INTERPRET=1`` to run the
GPU kernels on a laptop.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Optional

BACKENDS = ("triton", "native", "plain")
_override: Optional[str] = None
_triton_error: Optional[str] = None
_triton_checked = False


def requested() -> str:
    """The forced backend (``forced()`` first, then ``HVD_COMPRESS_BACKEND``), or ``"auto"``."""
    if _override is not None:
        return _override
    name = os.environ.get("HVD_COMPRESS_BACKEND", "").strip().lower() or "auto"
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"HVD_COMPRESS_BACKEND must be one of auto, {', '.join(BACKENDS)}; got {name!r}")
    return name


def triton_unavailable() -> Optional[str]:
    """Why Triton cannot be used (``None`` when it imports)."""
    global _triton_checked, _triton_error
    if not _triton_checked:
        if "triton" not in sys.modules and "tensorflow" in sys.modules:
            # Both bundle LLVM: Triton imported after TensorFlow aborts the whole process ("LLVM
            # ERROR: ... registered more than once"); imported before it, both load.
            _triton_error = (
                "TensorFlow was imported before Triton, and Triton would abort the process "
                "(both bundle LLVM); import triton before tensorflow to use both"
            )
            _triton_checked = True
            return _triton_error
        try:
            import triton
            import triton.language  # noqa: F401
        except Exception as exc:  # ImportError, or a broken install
            _triton_error = f"{type(exc).__name__}: {exc}"
        _triton_checked = True
    return _triton_error


def interpreting() -> bool:
    """True when Triton kernels run under its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def choose(device) -> str:
    """``"triton"``, ``"native"`` or ``"plain"`` for tensors on ``device`` (a ``torch.device``)."""
    name = requested()
    kind = getattr(device, "type", device)
    if name == "auto":
        if kind == "cuda" and triton_unavailable() is None:
            return "triton"
        return "native" if kind == "cpu" else "plain"
    if name == "triton":
        reason = triton_unavailable()
        if reason is not None:
            raise RuntimeError(
                f"hvd_compress: HVD_COMPRESS_BACKEND=triton but Triton does not import "
                f"({reason}); pip install triton, or unset HVD_COMPRESS_BACKEND"
            )
        if kind == "cpu" and not interpreting():
            raise RuntimeError(
                "hvd_compress: HVD_COMPRESS_BACKEND=triton on CPU tensors needs Triton's "
                "interpreter: set TRITON_INTERPRET=1 before the first codec call"
            )
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(
                f"hvd_compress: the Triton kernels run on CUDA tensors (or CPU ones "
                f"under TRITON_INTERPRET=1), not on {kind!r} tensors"
            )
    return name


def use_triton(*tensors) -> bool:
    """Whether the codecs should run these tensors (the first one's device decides) on Triton."""
    for t in tensors:
        if t is not None:
            return choose(t.device) == "triton"
    return False


def native_allowed() -> bool:
    """False when a backend other than ``native`` is forced (the C kernels then stand aside)."""
    name = requested()
    return name in ("auto", "native")


@contextlib.contextmanager
def forced(name: Optional[str]):
    """Force a backend within a block (tests, benchmarks); ``None`` restores the environment's."""
    global _override
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    saved, _override = _override, name
    try:
        yield
    finally:
        _override = saved
