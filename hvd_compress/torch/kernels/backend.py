"""The one place that picks how a torch codec runs: Triton kernels, native C kernels or plain torch.

Each codec holds a :class:`Plan`, made when the codec is built (and again when it is unpickled in
another process): the backend asked for (``HVD_COMPRESS_BACKEND``, read then) and, per device type,
the path its tensors take, resolved once, on the codec's first tensor of that type (so a CPU-only
job never imports Triton, and the native library is compiled only when a CPU tensor needs it).
The codec's methods ask ``self.plan.path(x)`` and run that path: no environment is read and no
availability is checked in the step.

``HVD_COMPRESS_BACKEND`` (read when a codec is built):

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

``HVD_COMPRESS_NATIVE=0`` (also read when a codec is built) keeps the C kernels off.

How to tune: leave it unset. Force ``plain`` to bisect a suspected kernel bug (same bytes given
the same uniforms, see ``docs/gpu.md``); force ``triton`` with ``TRITON_INTERPRET=1`` to run the
GPU kernels on a laptop. Within a :func:`forced` block (and ``hvd_compress._native.forced``) every
codec's plan is overridden: that is how tests run one codec object down each path and compare the
bytes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Dict, Optional, Tuple

from hvd_compress import _native

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
    """``"triton"``, ``"native"`` or ``"plain"`` for tensors on ``device`` (a ``torch.device`` or
    its type), with the backend asked for now."""
    return _choose(getattr(device, "type", device), requested())


def _choose(kind: str, name: str) -> str:
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


class Plan:
    """How one codec's tensors run, per device type: ``"triton"``, ``"native"`` or ``"plain"``.

    Made by the codec's constructor (:func:`plan`); the backend asked for is fixed then, and each
    device type's path is resolved once, on the first tensor of that type. A forced backend (a
    :func:`forced` block, or ``hvd_compress._native.forced``) overrides the plan while it lasts."""

    __slots__ = ("requested", "native_wanted", "_paths")

    def __init__(self, requested_backend: str, native_wanted: bool):
        self.requested = requested_backend
        self.native_wanted = native_wanted
        self._paths: Dict[str, Tuple[str, Optional[str]]] = {}

    def path(self, *tensors) -> str:
        """The path for these tensors (the first one's device decides; ``"plain"`` for none)."""
        device = next((t.device for t in tensors if t is not None), None)
        return "plain" if device is None else self.for_device(device)

    def for_device(self, device) -> str:
        """The path for tensors on ``device`` (a ``torch.device`` or its type)."""
        kind = getattr(device, "type", device)
        if _override is not None or _native.is_forced():
            return _checked(_resolve(kind, requested(), _native.wanted()))
        resolved = self._paths.get(kind)
        if resolved is None:
            resolved = self._paths[kind] = _resolve(kind, self.requested, self.native_wanted)
        return _checked(resolved)

    def __repr__(self) -> str:
        paths = ", ".join(f"{kind}: {path}" for kind, (path, _) in sorted(self._paths.items()))
        return f"Plan(requested={self.requested!r}; {paths or 'no tensor yet'})"


def plan() -> Plan:
    """A codec's plan: ``HVD_COMPRESS_BACKEND`` and ``HVD_COMPRESS_NATIVE`` as they are now
    (whether the C kernels load is found out on the first CPU tensor)."""
    return Plan(requested(), _native.wanted())


def _resolve(kind: str, name: str, native_wanted: bool) -> Tuple[str, Optional[str]]:
    """``(path, error)`` for tensors of device type ``kind``; an error (a forced backend that
    cannot run here) is raised on every call that would use it, never replaced by another path."""
    try:
        path = _choose(kind, name)
    except RuntimeError as exc:
        return "error", str(exc)
    if path == "native":
        if kind != "cpu" or not native_wanted or _native.load() is None:
            path = "plain"
    return path, None


def _checked(resolved: Tuple[str, Optional[str]]) -> str:
    path, error = resolved
    if error is not None:
        raise RuntimeError(error)
    return path
