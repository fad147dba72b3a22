"""Torch glue for the native kernels: tensors in, payload/decoded tensors out.

A codec calls them where its plan (:mod:`hvd_compress.torch.kernels.backend`) says ``"native"``.
Each returns ``None`` when its kernel does not take the input (no library, a CUDA tensor, unusual
``noise``), so a codec writes::

    out = ops.qsgd_encode(x, self.bits, self.bucket_size, self.norm, generator, noise) if path == "native" else None
    if out is not None:
        return out
    ... plain torch path ...

Inputs are flattened and converted to contiguous fp32 (what the exchange hands the codecs anyway).
Stochastic encoders without ``noise`` draw one 63-bit seed from ``generator`` (``torch.randint``;
the global generator when ``None``), so the exchange's per-call seeding keeps runs deterministic
and checkpoint/restore exact; with ``noise`` they use those uniforms and give exactly the plain
path's bytes.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from hvd_compress import _native
from hvd_compress.common import base3_nbytes, packed_nbytes

_SEED_HIGH = 1 << 63


def lib_for(*tensors) -> Optional[object]:
    """The library if it loads and these tensors are all on the CPU, else ``None``. Whether the
    native path is wanted at all (``HVD_COMPRESS_NATIVE``, ``HVD_COMPRESS_BACKEND``) is the
    codec's plan's decision (:mod:`hvd_compress.torch.kernels.backend`), made when it was built."""
    for t in tensors:
        if t is not None and t.device.type != "cpu":
            return None
    return _native.load()


_forked = False


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def threads() -> int:
    """Threads for the kernels: ``HVD_COMPRESS_THREADS``, else ``torch.get_num_threads()``; one in
    a forked child (GNU OpenMP's thread pool does not survive ``fork``: a parallel region there
    can hang, as torch's own parallel ops do)."""
    if _forked:
        return 1
    env = os.environ.get("HVD_COMPRESS_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"HVD_COMPRESS_THREADS must be a positive integer, got {env!r}") from None
    return max(1, torch.get_num_threads())


def flat_f32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a contiguous 1-D fp32 tensor (no copy when it already is one)."""
    x = x.detach().reshape(-1)
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    return x.contiguous()


def draw_seed(generator: Optional[torch.Generator]) -> int:
    """The one 63-bit seed a stochastic kernel draws from the codec's generator."""
    return int(torch.randint(0, _SEED_HIGH - 1, (1,), generator=generator, dtype=torch.int64))


def _noise(noise: Optional[torch.Tensor], n: int):
    """Pointer to explicit uniforms, or False when they cannot be used natively."""
    if noise is None:
        return None
    if noise.dtype != torch.float32 or noise.device.type != "cpu" or noise.numel() != n:
        return False
    return noise.reshape(-1).contiguous()


def _check(rc: int, what: str) -> int:
    if rc == -3:
        raise ValueError(f"hvd_compress: corrupt {what} payload (a base-3 byte above 242)")
    if rc < 0:
        raise RuntimeError(f"hvd_compress native {what} kernel failed (code {rc})")
    return rc


def _payload(payload: torch.Tensor, need: int, what: str) -> torch.Tensor:
    if payload.dtype != torch.uint8:
        raise TypeError(f"hvd_compress: {what} payloads are uint8 tensors, got {payload.dtype}")
    payload = payload.reshape(-1)
    if payload.numel() < need:
        raise ValueError(
            f"hvd_compress: {what} payload has {payload.numel()} bytes, " f"{need} needed for this many values"
        )
    return payload.contiguous()


# ------------------------------------------------------------------------------------- QSGD
def qsgd_encode(x, bits, bucket, norm, generator=None, noise=None):
    lib = lib_for(x, noise)
    if lib is None or bits not in (2, 4, 8):
        return None
    x = flat_f32(x)
    n = x.numel()
    u = _noise(noise, n)
    if u is False:
        return None
    out = torch.empty(packed_nbytes(n, bits) + 4 * (-(-n // bucket)), dtype=torch.uint8)
    if n == 0:
        return out
    seed = 0 if u is not None else draw_seed(generator)
    _check(
        lib.hvdc_qsgd_encode(
            x.data_ptr(),
            n,
            bits,
            bucket,
            int(norm == "l2"),
            seed,
            None if u is None else u.data_ptr(),
            out.data_ptr(),
            threads(),
        ),
        "qsgd",
    )
    return out


def qsgd_decode_into(lib, payload, numel, bits, bucket, out, mode=0, div=1.0):
    need = packed_nbytes(numel, bits) + 4 * (-(-numel // bucket))
    payload = _payload(payload, need, "qsgd")
    _check(
        lib.hvdc_qsgd_decode(payload.data_ptr(), numel, bits, bucket, out.data_ptr(), mode, float(div), threads()),
        "qsgd",
    )


# --------------------------------------------------------------------------------- TernGrad
def terngrad_scale(x, clip):
    lib = lib_for(x)
    if lib is None:
        return None
    x = flat_f32(x)
    s = lib.hvdc_terngrad_scale(x.data_ptr(), x.numel(), float(clip or 0.0), threads())
    return torch.tensor([s], dtype=torch.float32)


def terngrad_encode(x, scale, base3, generator=None, noise=None):
    """``scale``: the shared fp32 scale (a tensor), already agreed."""
    lib = lib_for(x, noise)
    if lib is None:
        return None
    x = flat_f32(x)
    n = x.numel()
    u = _noise(noise, n)
    if u is False:
        return None
    ncode = base3_nbytes(n) if base3 else packed_nbytes(n, 2)
    out = torch.empty(ncode + 4, dtype=torch.uint8)
    bits = int(scale.reshape(1).to(torch.float32).view(torch.int32).item()) & 0xFFFFFFFF
    seed = 0 if (u is not None or n == 0) else draw_seed(generator)
    _check(
        lib.hvdc_terngrad_encode(
            x.data_ptr(), n, bits, int(base3), seed, None if u is None else u.data_ptr(), out.data_ptr(), threads()
        ),
        "terngrad",
    )
    return out


def terngrad_decode_into(lib, payload, numel, base3, out, mode=0, div=1.0):
    need = (base3_nbytes(numel) if base3 else packed_nbytes(numel, 2)) + 4
    payload = _payload(payload, need, "terngrad")
    _check(
        lib.hvdc_terngrad_decode(payload.data_ptr(), numel, int(base3), out.data_ptr(), mode, float(div), threads()),
        "terngrad",
    )


# ----------------------------------------------------------------------------------- OneBit
def onebit_encode(x, bucket, residual=None, new_residual=None):
    """Payload of ``x`` (+ ``residual``); with ``new_residual``, also writes
    ``(x + residual) - decode(payload)`` there (it may be ``residual`` itself). Returns
    ``(payload, residual_nonfinite)``."""
    lib = lib_for(x)
    if lib is None:
        return None
    x = flat_f32(x)
    n = x.numel()
    out = torch.empty(packed_nbytes(n, 1) + 8 * (-(-n // bucket)), dtype=torch.uint8)
    rc = _check(
        lib.hvdc_onebit_encode(
            x.data_ptr(),
            None if residual is None else residual.data_ptr(),
            None if new_residual is None else new_residual.data_ptr(),
            n,
            bucket,
            out.data_ptr(),
            threads(),
        ),
        "onebit",
    )
    return out, bool(rc)


def onebit_decode_into(lib, payload, numel, bucket, out, mode=0, div=1.0):
    need = packed_nbytes(numel, 1) + 8 * (-(-numel // bucket))
    payload = _payload(payload, need, "onebit")
    _check(
        lib.hvdc_onebit_decode(payload.data_ptr(), numel, bucket, out.data_ptr(), mode, float(div), threads()), "onebit"
    )


# ------------------------------------------------------------------------------- ScaledSign
def sign_encode(x, residual=None, new_residual=None):
    """As :func:`onebit_encode`, for the scaled sign (one mean |x| per chunk)."""
    lib = lib_for(x)
    if lib is None:
        return None
    x = flat_f32(x)
    n = x.numel()
    out = torch.empty(packed_nbytes(n, 1) + 4, dtype=torch.uint8)
    rc = _check(
        lib.hvdc_sign_encode(
            x.data_ptr(),
            None if residual is None else residual.data_ptr(),
            None if new_residual is None else new_residual.data_ptr(),
            n,
            out.data_ptr(),
            threads(),
        ),
        "scaled_sign",
    )
    return out, bool(rc)


def sign_decode_into(lib, payload, numel, out, mode=0, div=1.0):
    payload = _payload(payload, packed_nbytes(numel, 1) + 4, "scaled_sign")
    _check(lib.hvdc_sign_decode(payload.data_ptr(), numel, out.data_ptr(), mode, float(div), threads()), "scaled_sign")


# ------------------------------------------------------------------------------------- TopK
def topk_encode(x, k):
    """The canonical top-k payload of ``x`` (``k`` int32 indices, then ``k`` fp32 values), the
    selection by a sampled threshold and a radix select over the candidates: the bytes
    ``torch.topk`` gives, without its O(n log k) work."""
    lib = lib_for(x)
    if lib is None:
        return None
    x = flat_f32(x)
    n = x.numel()
    out = torch.empty(2 * k, dtype=torch.int32).view(torch.uint8)  # 4-byte aligned int32/fp32 slots
    if k:
        _check(lib.hvdc_topk_encode(x.data_ptr(), n, k, out.data_ptr(), threads()), "topk")
    return out


# ------------------------------------------------------------------------ signSGD's vote
def signsgd_vote(payloads: Sequence[torch.Tensor], numel: int):
    """signSGD's majority vote of ``payloads`` (see ``SignSGD.aggregate``) in one pass over the
    sign bits; the mean scale is computed here with the plain path's fp32 operations."""
    lib = lib_for(*payloads)
    if lib is None or not payloads:
        return None
    nb = packed_nbytes(numel, 1)
    payloads = [_payload(p, nb + 4, "signsgd") for p in payloads]
    scale = torch.zeros(1)
    for p in payloads:
        scale += p[nb : nb + 4].clone().view(torch.float32)
    mean = scale / len(payloads)  # the plain path's fp32 division
    out = torch.empty(numel, dtype=torch.float32)
    if numel:
        import ctypes

        ptrs = (ctypes.c_void_p * len(payloads))(*[p.data_ptr() for p in payloads])
        _check(
            lib.hvdc_signsgd_vote(ptrs, len(payloads), numel, float(mean), out.data_ptr(), threads()), "signsgd vote"
        )
    return out


# ------------------------------------------------------------------------------ shared glue
def decode(decode_into, payload: torch.Tensor, numel: int, *args):
    """A fresh fp32 tensor holding ``payload`` decoded (``None`` if the native path is off)."""
    lib = lib_for(payload)
    if lib is None:
        return None
    out = torch.empty(numel, dtype=torch.float32)
    if numel:
        decode_into(lib, payload, numel, *args, out)
    return out


def decode_to(decode_into, payload: torch.Tensor, out: torch.Tensor, *args) -> bool:
    """Decode straight into ``out`` (contiguous fp32 CPU); ``False`` if the native path is off."""
    lib = lib_for(payload, out)
    if lib is None or out.dtype != torch.float32 or not out.is_contiguous():
        return False
    if out.numel():
        decode_into(lib, payload, out.numel(), *args, out)
    return True


def aggregate(decode_into, payloads: Sequence[torch.Tensor], numel: int, *args):
    """Mean of the decoded payloads with the plain path's float operations (``d0 + d1 + ...``,
    then ``/ k``) fused into the decoding: no decoded temporaries."""
    lib = lib_for(*payloads)
    if lib is None or not payloads:
        return None
    out = torch.empty(numel, dtype=torch.float32)
    if numel == 0:
        return out
    k = len(payloads)
    for i, p in enumerate(payloads):
        mode = 0 if i == 0 else (2 if i == k - 1 else 1)
        decode_into(lib, p, numel, *args, out, mode, float(k))
    return out


def residual_buffer(residual: Optional[torch.Tensor], n: int):
    """``(e_in, e_out)`` for a fused error-feedback step: the stored residual updated in
    place when it is a contiguous fp32 CPU tensor of ``n`` values; a fresh one when there is none
    (or it has another size: a new shape starts from zero, as in the plain path); ``None`` when it
    exists in a form the kernels do not take (the caller falls back to the plain path)."""
    if residual is None or residual.numel() != n:
        return None, torch.empty(n, dtype=torch.float32)
    if residual.dtype != torch.float32 or residual.device.type != "cpu" or not residual.is_contiguous():
        return None
    return residual, residual


def noise_for_test(seed: int, start: int, length: int) -> torch.Tensor:
    """The uniforms the kernels draw for values ``[start, start + length)`` under ``seed``."""
    lib = _native.load()
    out = torch.empty(length, dtype=torch.float32)
    lib.hvdc_noise(seed, start, length, out.data_ptr())
    return out


def fused_feedback(encode, x: torch.Tensor, residual: Optional[torch.Tensor], bounds, *args):
    """One error-feedback step through a fused kernel (``onebit_encode`` / ``sign_encode``):
    per chunk ``(a, b)`` of ``bounds``, ``p = x + residual``, the payload of ``p`` and
    ``residual = p - decode(payload)`` in place; a residual holding a non-finite value is zeroed
    (as the plain :class:`ErrorFeedback` does). Returns ``(payloads, residual)`` or ``None``."""
    if lib_for(x, residual) is None or x.dtype != torch.float32 or not x.is_contiguous():
        return None
    x = x.reshape(-1)
    n = x.numel()
    bufs = residual_buffer(residual, n)
    if bufs is None:
        return None
    e_in, e_out = bufs
    payloads, bad = [], False
    for a, b in bounds:
        payload, nonfinite = encode(x[a:b], *args, None if e_in is None else e_in[a:b], e_out[a:b])
        payloads.append(payload)
        bad |= nonfinite
    if bad:
        e_out.zero_()
    return payloads, e_out


# Codec names (of the quantizer under any wrappers) whose encode/decode run natively on CPU.
NATIVE_CODECS = ("qsgd", "terngrad", "onebit_quantizer", "scaled_sign", "signsgd", "topk_sparsifier")
